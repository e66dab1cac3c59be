"""Prometheus and Alertmanager configuration, checked by their own tools (Debian's prometheus
and prometheus-alertmanager packages; .ci/run installs them): the config and rules load, every
alert goes pending → firing → resolved in `promtool test rules`, and Alertmanager routes drift
and performance alerts to the monitor and service alerts elsewhere."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

INFRA = Path(__file__).resolve().parents[2] / "infra"
PROMETHEUS = INFRA / "prometheus"
ALERTMANAGER = INFRA / "alertmanager" / "alertmanager.yml"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not on PATH: install Debian's prometheus and prometheus-alertmanager "
            "(.ci/run does)"
        )
    return found


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_prometheus_config_and_rules_load() -> None:
    checked = run(tool("promtool"), "check", "config", str(PROMETHEUS / "prometheus.yml"))

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout + checked.stderr


def test_every_alert_goes_pending_firing_resolved() -> None:
    tested = run(
        tool("promtool"), "test", "rules", str(PROMETHEUS / "tests" / "driftloop_test.yml")
    )

    assert tested.returncode == 0, tested.stdout + tested.stderr
    rules = (PROMETHEUS / "rules" / "driftloop.yml").read_text()
    tests = (PROMETHEUS / "tests" / "driftloop_test.yml").read_text()
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines() if "- alert:" in line]
    assert len(alerts) == 10
    for alert in alerts:  # each one is tested not firing, firing, and not firing again
        assert tests.count(f"alertname: {alert}") >= 3, alert
    for part in ("summary:", "description:", "runbook_url:"):
        assert rules.count(part) == 10, part


def test_alertmanager_routes_drift_and_performance_to_the_monitor() -> None:
    amtool = tool("amtool")
    checked = run(amtool, "check-config", str(ALERTMANAGER))

    def receiver(*labels: str) -> str:
        routed = run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
        return routed.stdout.strip()

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert receiver("alertname=DatasetDrift", "kind=drift", "model=fraud") == "driftloop-monitor"
    assert receiver("alertname=ModelPerformanceDrop", "kind=performance") == "driftloop-monitor"
    assert receiver("alertname=EstimatedPerformanceDrop", "kind=performance") == (
        "driftloop-monitor"
    )
    assert receiver("alertname=MonitorDown", "kind=service") == "log-only"
    # A failed retrain is for people: routed to the monitor it would start another retrain.
    assert receiver("alertname=RetrainFailed", "kind=pipeline", "model=fraud") == "log-only"
    assert receiver("alertname=RolloutOverdue", "kind=pipeline", "model=fraud") == "log-only"
    config = ALERTMANAGER.read_text()
    assert "credentials_file: alert-token" in config and "send_resolved: true" in config


def test_the_performance_alerts_use_the_floors_the_monitor_uses() -> None:
    """ModelPerformanceDrop, EstimatedPerformanceDrop and the monitor's own declaration of an
    estimated drop (driftloop.tasks.LIVE_FLOOR) agree on each task's floor."""
    from driftloop.tasks import LIVE_FLOOR

    rules = (PROMETHEUS / "rules" / "driftloop.yml").read_text()
    for task, (metric, floor) in LIVE_FLOOR.items():
        realized = f'driftloop_model_performance{{metric="{metric}"}}) < {floor:g}'
        assert realized in rules, (task, realized)
        if task != "regression":  # not estimated
            estimated = (
                f'driftloop_estimated_performance{{metric="{metric}",bound="upper"}}) < {floor:g}'
            )
            assert estimated in rules, (task, estimated)
