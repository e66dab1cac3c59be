"""Fresh databases for tests that run on SQLite and on PostgreSQL alike.

PostgreSQL is the server of DRIFTLOOP_TEST_POSTGRES_URL, or the one of
DRIFTLOOP_TEST_DATABASE_URL (CI's), or this machine's loopback server; each test gets a new
database there, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def postgres_server() -> str:
    explicit = os.environ.get("DRIFTLOOP_TEST_POSTGRES_URL")
    if explicit:
        return explicit
    prefect = os.environ.get("DRIFTLOOP_TEST_DATABASE_URL")
    if prefect:
        return str(sa.make_url(prefect).set(drivername="postgresql+psycopg", database="postgres"))
    return LOCAL_POSTGRES


@contextmanager
def fresh_database(kind: str, folder: Path, prefix: str) -> Iterator[str]:
    """The URL of a new, empty database: a SQLite file in ``folder``, or a PostgreSQL database."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / f'{prefix}.sqlite'}"
        return
    server = sa.make_url(postgres_server())
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"driftloop_{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
    except sa.exc.OperationalError as problem:
        pytest.skip(
            f"no PostgreSQL at {server.render_as_string(hide_password=True)} ({problem.orig}); "
            "set DRIFTLOOP_TEST_POSTGRES_URL to a server where the tests may create databases"
        )
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()
