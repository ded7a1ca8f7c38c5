"""The `restem` command line (typer): one command per stage, plus import, export, sql and audits."""
