"""Grafana through grafana-client: push the datasource and dashboards, and annotate events.

`driftloop grafana sync --url ... --token ...` creates or updates the Prometheus datasource
(uid ``driftloop-prometheus``), the ``driftloop`` folder and the generated dashboards
(``driftloop.dashboards``). When ``grafana.url`` is configured, model promotions and drift
declarations become Grafana annotations tagged ``driftloop`` (the dashboards show them); an
unreachable Grafana is logged and never stops a flow or the monitor.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from driftloop.dashboards import DATASOURCE, dashboards
from driftloop.settings import Settings

log = logging.getLogger(__name__)

FOLDER_UID = "driftloop"


class Grafana:
    """One Grafana instance, reached with a service-account token."""

    def __init__(self, url: str, token: str | None, timeout: float = 10.0) -> None:
        from grafana_client.api import GrafanaApi

        self.url = url
        self.api = GrafanaApi.from_url(url, credential=token, timeout=timeout)

    def sync(self, prometheus_url: str) -> list[str]:
        """Create or update the datasource, the folder and every dashboard; what was done."""
        from grafana_client.client import GrafanaClientError

        done = []
        datasource = {
            "name": "driftloop Prometheus",
            "uid": DATASOURCE["uid"],
            "type": DATASOURCE["type"],
            "access": "proxy",
            "url": prometheus_url,
            "isDefault": True,
            "jsonData": {"timeInterval": "15s"},
        }
        try:
            self.api.datasource.get_datasource_by_uid(DATASOURCE["uid"])
            self.api.datasource.update_datasource_by_uid(DATASOURCE["uid"], datasource)
            done.append(f"updated datasource {DATASOURCE['uid']} ({prometheus_url})")
        except GrafanaClientError as error:
            if error.status_code != 404:
                raise
            self.api.datasource.create_datasource(datasource)
            done.append(f"created datasource {DATASOURCE['uid']} ({prometheus_url})")
        try:
            self.api.folder.get_folder(FOLDER_UID)
        except GrafanaClientError as error:
            if error.status_code != 404:
                raise
            self.api.folder.create_folder("driftloop", uid=FOLDER_UID)
            done.append(f"created folder {FOLDER_UID}")
        for model in dashboards().values():
            self.api.dashboard.update_dashboard(
                {
                    "dashboard": {**model, "id": None},
                    "folderUid": FOLDER_UID,
                    "overwrite": True,
                    "message": "driftloop grafana sync",
                }
            )
            done.append(f"dashboard {model['uid']} ({model['title']})")
        return done

    def annotate(self, text: str, tags: list[str], at: float | None = None) -> Any:
        """An annotation at ``at`` (seconds; now by default) on every driftloop dashboard."""
        moment = int((at if at is not None else time.time()) * 1000)
        return self.api.annotations.add_annotation(
            time_from=moment, time_to=moment, tags=["driftloop", *tags], text=text
        )


def annotate_if_configured(settings: Settings, text: str, tags: list[str]) -> None:
    """Annotate in the configured Grafana, if there is one; log, never raise, on failure."""
    config = settings.grafana
    if config.url is None:
        return
    token = config.token.get_secret_value() if config.token else None
    try:
        Grafana(str(config.url), token, timeout=5).annotate(text, tags)
    except Exception as error:  # an annotation is never worth failing the work it describes
        log.warning("could not annotate %s in Grafana at %s: %s", tags, config.url, error)
