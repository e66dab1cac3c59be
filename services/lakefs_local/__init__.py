"""A lakeFS-compatible server for one machine: the embedded default and the test server.

Production points the same client code at real lakeFS; this server implements the part of the
lakeFS API v1 that driftloop and the `lakefs` Python package use (see README.md, "lakeFS API
coverage"), with content-addressed blobs and SQLite underneath (see ``store.py``).
"""
