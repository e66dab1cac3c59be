"""Run the lakeFS-compatible server with uvicorn."""

from __future__ import annotations

from pathlib import Path

import uvicorn

from services.lakefs_local.app import create_app


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
