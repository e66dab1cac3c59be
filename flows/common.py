"""What every flow needs: settings, the lakeFS client, and sending events to its Prefect server."""

from __future__ import annotations

from prefect.runtime import flow_run
from prefect.settings import get_current_settings

from driftloop.events import Event, send_event
from driftloop.lakefs_client import LakeFSClient
from driftloop.settings import Settings, get_settings


def settings() -> Settings:
    return get_settings()


def lakefs(config: Settings) -> LakeFSClient:
    return LakeFSClient.from_settings(config.lakefs)


def run_url() -> str | None:
    """The Prefect UI address of the running flow run, when there is one."""
    url = flow_run.ui_url
    return str(url) if url else None


def emit(event: Event, config: Settings) -> None:
    """Send ``event`` to the Prefect server this flow reports to, checking that it arrived."""
    api_url = get_current_settings().api.url or str(config.prefect.api_url)
    api_key = config.prefect.api_key.get_secret_value() if config.prefect.api_key else None
    send_event(api_url, event, api_key=api_key)
