"""Run the lakeFS-compatible server with uvicorn.

    python -m services.lakefs_local.server [--host H] [--port P]   (or: driftloop lakefs serve)

The stack starts it this way: the server's own imports only (about 50 MB), not the CLI's.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from services.lakefs_local.app import create_app

log = logging.getLogger("driftloop.lakefs")


def serve(
    root: Path,
    *,
    host: str,
    port: int,
    access_key_id: str | None,
    secret_access_key: str | None,
    log_level: str = "info",
    crash_at: str = "",
) -> None:
    """Serve the repository state under ``root`` on ``host:port`` until interrupted."""
    root.mkdir(parents=True, exist_ok=True)
    app = create_app(
        root, access_key_id=access_key_id, secret_access_key=secret_access_key, crash_at=crash_at
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


def main(argv: list[str] | None = None) -> None:
    """Serve DRIFTLOOP_HOME/lakefs with the configured credentials (``lakefs.*`` settings)."""
    from driftloop.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="bind address [DRIFTLOOP_LAKEFS__EMBEDDED_HOST]")
    parser.add_argument("--port", type=int, help="port [DRIFTLOOP_LAKEFS__EMBEDDED_PORT]")
    parser.add_argument("--crash-at", default="", help=argparse.SUPPRESS)  # crash tests only
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    lakefs = get_settings().lakefs
    root = (get_settings().home / "lakefs").resolve()
    key = lakefs.access_key_id.get_secret_value() if lakefs.access_key_id else None
    secret = lakefs.secret_access_key.get_secret_value() if lakefs.secret_access_key else None
    host, port = args.host or lakefs.embedded_host, args.port or lakefs.embedded_port
    log.info(
        "lakeFS-compatible server on http://%s:%d (API /api/v1), data in %s%s",
        host,
        port,
        root,
        "" if key else "; no credentials configured: POST /api/v1/setup_lakefs creates them",
    )
    serve(
        root,
        host=host,
        port=port,
        access_key_id=key,
        secret_access_key=secret,
        crash_at=args.crash_at,
    )


if __name__ == "__main__":
    main()
