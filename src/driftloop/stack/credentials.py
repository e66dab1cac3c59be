"""The embedded stack's secrets: the configured ones, or new ones made once and kept in .env."""

from __future__ import annotations

import secrets
from pathlib import Path

from driftloop.settings import Settings
from driftloop.stack.errors import StackError


def local_secrets(settings: Settings, dotenv: Path | None, *, embedded: bool) -> dict[str, str]:
    """lakeFS keys for the embedded server, the Prefect server's basic auth and the
    Alertmanager webhook token.

    The configured values when there are any; otherwise new random ones, appended to ``dotenv``
    (created 0600) when given, so later commands (``driftloop ingest``, ``train``) reach the same
    server. Never printed. A lakeFS that is not the embedded one needs its keys configured.
    """
    lakefs, monitor, prefect = settings.lakefs, settings.monitor, settings.prefect
    values: dict[str, str] = {}
    if (lakefs.access_key_id is None) != (lakefs.secret_access_key is None):
        raise StackError(
            "set both DRIFTLOOP_LAKEFS__ACCESS_KEY_ID and DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY, "
            "or neither (then `driftloop up` makes a pair for the embedded server)"
        )
    if lakefs.access_key_id and lakefs.secret_access_key:
        values["DRIFTLOOP_LAKEFS__ACCESS_KEY_ID"] = lakefs.access_key_id.get_secret_value()
        values["DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY"] = lakefs.secret_access_key.get_secret_value()
    elif not embedded:
        raise StackError(
            f"lakeFS at {lakefs.endpoint} (DRIFTLOOP_LAKEFS__ENDPOINT) is not the embedded "
            "server: set DRIFTLOOP_LAKEFS__ACCESS_KEY_ID and DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY"
        )
    if monitor.alert_token:
        values["DRIFTLOOP_MONITOR__ALERT_TOKEN"] = monitor.alert_token.get_secret_value()
    if prefect.auth_string:
        values["DRIFTLOOP_PREFECT__AUTH_STRING"] = prefect.auth_string.get_secret_value()
    created = {
        "DRIFTLOOP_LAKEFS__ACCESS_KEY_ID": "AKIALOCAL" + secrets.token_hex(6).upper(),
        "DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        "DRIFTLOOP_MONITOR__ALERT_TOKEN": secrets.token_urlsafe(24),
        "DRIFTLOOP_PREFECT__AUTH_STRING": "driftloop:" + secrets.token_urlsafe(24),
    }
    new = {name: value for name, value in created.items() if name not in values}
    if new and dotenv is not None:
        existed = dotenv.exists()
        with dotenv.open("a") as file:
            if existed and dotenv.read_text()[-1:] not in ("", "\n"):
                file.write("\n")
            file.write("# written by `driftloop up` for the embedded stack\n")
            file.writelines(f"{name}={value}\n" for name, value in new.items())
        dotenv.chmod(0o600)
    return {**values, **new}
