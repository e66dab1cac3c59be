"""Long-running services: inference (BentoML), monitor, embedded lakeFS-compatible server."""
