"""Baseline servers for bench/serve.py: the same model behind bare BentoML and bare FastAPI."""
