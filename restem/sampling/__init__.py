"""Sampling: the engines (transformers, vLLM) behind one interface, and sharded stage runs."""
