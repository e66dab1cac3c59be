"""Prometheus and Alertmanager configured for a running stack, from the files in infra/.

infra/prometheus and infra/alertmanager hold the configuration for the default local ports. A
stack on other ports (tests, several stacks on one machine) or with shorter intervals (tests)
gets the same configuration with its own targets written into a folder of its own:
:func:`write_prometheus_config` and :func:`write_alertmanager_config`. The rules are the same
rules; only ``for`` may be shortened, for tests that cannot wait five minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
PROMETHEUS_DIR = INFRA / "prometheus"
ALERTMANAGER_FILE = INFRA / "alertmanager" / "alertmanager.yml"


@dataclass(frozen=True)
class Targets:
    """host:port of everything Prometheus scrapes or talks to."""

    inference: str
    monitor: str
    prefect: str | None
    alertmanager: str
    prefect_auth_string: str | None = None


def write_prometheus_config(
    folder: Path,
    targets: Targets,
    *,
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
    rule_for: str | None = None,
    keep_for: frozenset[str] = frozenset(),
) -> Path:
    """prometheus.yml (and its rules) for ``targets`` in ``folder``; the config's path.

    With ``targets.prefect_auth_string``, Prometheus signs its scrape of Prefect's
    ``/api/metrics`` with it, read from a file only its owner can read (the one secret Prometheus
    gets).

    ``rule_for`` replaces every alert's ``for`` (tests shorten it), except the alerts named in
    ``keep_for``, which keep the shipped one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = scrape_interval
    config["global"]["evaluation_interval"] = evaluation_interval
    config["alerting"]["alertmanagers"] = [
        {"static_configs": [{"targets": [targets.alertmanager]}]}
    ]
    by_job = {
        "driftloop-inference": targets.inference,
        "driftloop-monitor": targets.monitor,
        "prefect": targets.prefect,
    }
    jobs = []
    for job in config["scrape_configs"]:
        target = by_job.get(job["job_name"])
        if target is None:
            continue
        jobs.append({**job, "static_configs": [{"targets": [target]}]})
        if job["job_name"] == "prefect" and targets.prefect_auth_string:
            user, password = targets.prefect_auth_string.split(":", 1)
            jobs[-1]["basic_auth"] = {
                "username": user,
                "password_file": str(_password_file(folder, password)),
            }
    config["scrape_configs"] = jobs
    rules = folder / "rules"
    rules.mkdir(exist_ok=True)
    for source in sorted((PROMETHEUS_DIR / "rules").glob("*.yml")):
        groups = yaml.safe_load(source.read_text())
        if rule_for is not None:
            for group in groups["groups"]:
                for rule in group["rules"]:
                    if "for" in rule and rule.get("alert") not in keep_for:
                        rule["for"] = rule_for
        (rules / source.name).write_text(yaml.safe_dump(groups, sort_keys=False))
    config["rule_files"] = ["rules/*.yml"]
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_alertmanager_config(
    folder: Path,
    *,
    monitor_url: str,
    token: str,
    group_wait: str | None = None,
    group_interval: str | None = None,
) -> Path:
    """alertmanager.yml sending to ``monitor_url``/alerts, its token file beside it (0600)."""
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_FILE.read_text())
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = f"{monitor_url.rstrip('/')}/alerts"
    for route in [config["route"], *config["route"].get("routes", [])]:
        if group_wait is not None:
            route["group_wait"] = group_wait
        if group_interval is not None:
            route["group_interval"] = group_interval
    token_file = folder / "alert-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    path = folder / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _password_file(folder: Path, password: str) -> Path:
    """``prefect-password`` in ``folder``, readable by its owner only."""
    path = folder / "prefect-password"
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(password)
    return path
