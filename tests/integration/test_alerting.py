"""Alerting end to end on real processes, with short test intervals: drifted traffic through
`bentoml serve` → the monitor's gauges → Prometheus (scraping every second, the project's rules
with `for` shortened to 1 s) → Alertmanager (the project's routing, group_wait 1 s) → the
monitor's /alerts with the bearer token → driftloop.alert.firing in Prefect → the retrain
trigger creates a retrain run, in under 60 s. The monitor's own drift declaration is switched
off here (consecutive_windows 1000), so the run can only come from the alert."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.settings import temporary_settings

from driftloop.dashboards import queries
from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.observability import Targets, write_alertmanager_config, write_prometheus_config
from driftloop.processes import Component, free_port
from driftloop.serving import frame_records
from driftloop.stack import (
    ensure_process_pool,
    start_alertmanager,
    start_inference_server,
    start_monitor_server,
    start_prometheus,
)
from flows.ingest import ingest
from flows.train import train
from tests.commands import run_driftloop as driftloop
from tests.integration.conftest import LakeFSServer, PrefectServer

SPEC = load_spec("transactions")
PROJECT = Path(__file__).resolve().parents[2]
TOKEN = uuid.uuid4().hex


def root(component: Component) -> str:
    """http://host:port of a component, from its health URL."""
    scheme, _, rest = component.health_url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


@pytest.fixture(scope="module")
def stack(
    prefect_server: PrefectServer,
    lakefs_server: LakeFSServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("alerting-home")
    pool = f"alerting-{uuid.uuid4().hex[:6]}"
    env = {
        **lakefs_server.settings_env(),
        "DRIFTLOOP_LAKEFS__REPOSITORY": f"alerting-{uuid.uuid4().hex[:8]}",
        "DRIFTLOOP_HOME": str(home),
        "DRIFTLOOP_PREFECT__API_URL": prefect_server.api_url,
        "DRIFTLOOP_PREFECT__WORK_POOL": pool,
        "DRIFTLOOP_MONITOR__INTERVAL_SECONDS": "1",
        "DRIFTLOOP_MONITOR__WINDOW_ROWS": "500",
        "DRIFTLOOP_MONITOR__MIN_WINDOW_ROWS": "300",
        "DRIFTLOOP_MONITOR__CONSECUTIVE_WINDOWS": "1000",
        "DRIFTLOOP_MONITOR__ALERT_TOKEN": TOKEN,
        "BENTOML_HOME": os.environ["BENTOML_HOME"],
    }
    patch = pytest.MonkeyPatch()  # the module's processes and in-process flows see ``env``
    for name, value in env.items():
        patch.setenv(name, value)
    components: list[Component] = []
    try:
        with temporary_settings(
            updates={"api.url": prefect_server.api_url, "server.ephemeral.enabled": False}
        ):
            ingest("transactions", "builtin:?rows=4000&seed=1", batch_id="day-1")
            train()
        ensure_process_pool(prefect_server.api_url, pool)
        deployed = driftloop("deploy", cwd=PROJECT, env=env)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        inference = start_inference_server(
            host="127.0.0.1",
            port=free_port(),
            log_path=home / "inference.log",
            env=env,
            cwd=PROJECT,
        )
        monitor = start_monitor_server(
            host="127.0.0.1",
            port=free_port(),
            log_path=home / "monitor.log",
            env=env,
            cwd=PROJECT,
        )
        components += [inference, monitor]
        alertmanager_port = free_port()
        alertmanager = start_alertmanager(
            config=write_alertmanager_config(
                home / "alertmanager",
                monitor_url=root(monitor),
                token=TOKEN,
                group_wait="1s",
                group_interval="5s",
            ),
            host="127.0.0.1",
            port=alertmanager_port,
            data=home / "alertmanager" / "data",
            log_path=home / "alertmanager.log",
        )
        components.append(alertmanager)
        prometheus = start_prometheus(
            config=write_prometheus_config(
                home / "prometheus",
                Targets(
                    inference=root(inference).removeprefix("http://"),
                    monitor=root(monitor).removeprefix("http://"),
                    prefect=None,
                    alertmanager=f"127.0.0.1:{alertmanager_port}",
                ),
                scrape_interval="1s",
                evaluation_interval="1s",
                rule_for="1s",
            ),
            host="127.0.0.1",
            port=free_port(),
            data=home / "prometheus" / "data",
            log_path=home / "prometheus.log",
        )
        components.append(prometheus)
        for component in (inference, monitor, alertmanager, prometheus):
            component.wait_healthy(timeout=120)
        deployments = httpx.post(f"{prefect_server.api_url}/deployments/filter", json={}).json()
        retrain = next(
            d for d in deployments if d["name"] == "retrain" and d["work_pool_name"] == pool
        )
        yield {
            "inference": inference,
            "monitor": monitor,
            "prometheus": prometheus,
            "api_url": prefect_server.api_url,
            "retrain_id": retrain["id"],
            "home": home,
        }
    finally:
        for component in reversed(components):
            component.stop()
        patch.undo()


def retrain_runs(stack: dict[str, Any], since: datetime) -> list[dict[str, Any]]:
    """Runs of the retrain deployment created after ``since`` (other tests share it)."""
    found = httpx.post(
        f"{stack['api_url']}/flow_runs/filter",
        json={"flow_runs": {"deployment_id": {"any_": [stack["retrain_id"]]}}},
    ).json()
    return [run for run in found if datetime.fromisoformat(run["created"]) >= since]


def send(stack: dict[str, Any], scenario: str, seed: int, labels: bool = False) -> None:
    """500 transactions through /predict; with ``labels``, each one's true label as feedback."""
    frame = generate_transactions(500, seed=seed, scenario=scenario)  # type: ignore[arg-type]
    records = frame_records(frame, SPEC.feature_names)
    base = root(stack["inference"])
    with httpx.Client(timeout=30) as client:
        answers: list[dict[str, Any]] = []
        for start in range(0, 500, 50):
            response = client.post(f"{base}/predict", json=records[start : start + 50])
            response.raise_for_status()
            answers += response.json()
        if labels:
            for answer, label in zip(answers, frame[SPEC.target].tolist(), strict=True):
                client.post(
                    f"{base}/feedback",
                    json={"prediction_id": answer["prediction_id"], "label": int(label)},
                ).raise_for_status()


def test_drifted_traffic_fires_the_alert_that_creates_a_retrain_run(stack: dict[str, Any]) -> None:
    since = datetime.now(UTC)
    send(stack, "baseline", 5, labels=True)
    time.sleep(5)
    assert retrain_runs(stack, since) == []

    started = time.monotonic()
    send(stack, "covariate_shift", 6)
    deadline = started + 60
    while not (runs := retrain_runs(stack, since)) and time.monotonic() < deadline:
        time.sleep(1)
    elapsed = time.monotonic() - started

    logs = {name: (stack["home"] / f"{name}.log") for name in ("monitor", "alertmanager")}
    assert runs, f"no retrain run within 60 s; monitor log: {logs['monitor'].read_text()[-2000:]}"
    assert elapsed < 60
    assert runs[0]["parameters"]["reason"] == "driftloop.alert.firing"
    assert runs[0]["parameters"]["alertname"] in ("DatasetDrift", "FeatureDrift")
    assert not httpx.get(f"{root(stack['monitor'])}/status").json()["drift_declared"]
    firing = httpx.get(f"{root(stack['prometheus'])}/api/v1/alerts").json()["data"]["alerts"]
    assert any(a["labels"]["alertname"] == "DatasetDrift" for a in firing)


def test_every_dashboard_panel_query_returns_data(stack: dict[str, Any]) -> None:
    """The dashboards' queries, evaluated by the real Prometheus scraping the real services
    under the traffic above (no Grafana server can run here: its queries are what it shows)."""
    send(stack, "baseline", 7, labels=True)
    time.sleep(3)
    empty = []
    for dashboard, panel, expr in queries():
        answer = httpx.get(
            f"{root(stack['prometheus'])}/api/v1/query", params={"query": expr}
        ).json()
        assert answer["status"] == "success", (panel, expr, answer)
        if not answer["data"]["result"]:
            empty.append(f"{dashboard} / {panel}: {expr}")

    assert empty == []
