"""Publishing: importing users' problem and sample files, exporting kept data and models."""
