"""``driftloop demo``: run what the loop has so far on this machine, and show what happened.

Today that is: a Prefect server, the embedded lakeFS-compatible server, one valid batch landed on
main through its isolated branch, and one corrupted batch rejected with main unchanged. The stages
not in the demo yet are named at the end.
"""

from __future__ import annotations

import os
import secrets
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Console

from driftloop.processes import Component, ComponentFailed, port_in_use
from driftloop.settings import Settings
from driftloop.stack import (
    drain_prefect_client,
    ensure_process_pool,
    start_lakefs_server,
    start_prefect_server,
)

# Built and tested on real processes (tests/integration/test_loop.py, bench/loop.py); the demo
# runs them once `driftloop up` exists (issue #8).
NOT_IN_DEMO_YET = (
    ("serve with BentoML and log predictions", "#8"),
    ("monitor drift and retrain automatically", "#8"),
)


class DemoFailed(RuntimeError):
    """A step of the demo failed; the message says which and where to look."""


def run_demo(settings: Settings, console: Console) -> None:
    """Start the stack, land a good batch, reject a bad one, and stop everything again."""
    home = settings.home.resolve()
    logs = home / "logs"
    prefect_url = settings.prefect.api_url
    prefect_host, prefect_port = prefect_url.host or "127.0.0.1", prefect_url.port or 4200
    lakefs_host, lakefs_port = settings.lakefs.embedded_host, settings.lakefs.embedded_port
    for name, host, port, variable in (
        ("Prefect server", prefect_host, prefect_port, "DRIFTLOOP_PREFECT__API_URL"),
        ("lakeFS-compatible server", lakefs_host, lakefs_port, "DRIFTLOOP_LAKEFS__EMBEDDED_PORT"),
    ):
        if port_in_use(host, port):
            raise DemoFailed(
                f"port {port} on {host} is taken, so the {name} cannot start; stop what listens "
                f"there or set {variable}"
            )
    console.print(f"[bold]driftloop demo[/] — state under {home}, logs under {logs}")
    key, secret = _credentials(settings)
    api_url = str(prefect_url).rstrip("/")
    with ExitStack() as running:
        _start(
            running,
            console,
            start_prefect_server(
                host=prefect_host,
                port=prefect_port,
                prefect_home=home / "prefect",
                log_path=logs / "prefect-server.log",
            ),
            timeout=120,
        )
        _start(
            running,
            console,
            start_lakefs_server(
                home=home,
                host=lakefs_host,
                port=lakefs_port,
                log_path=logs / "lakefs.log",
                access_key_id=key,
                secret_access_key=secret,
            ),
            timeout=60,
        )
        ensure_process_pool(api_url, settings.prefect.work_pool)
        console.print(f"[green]✓[/] Prefect UI at {api_url.removesuffix('/api')}")
        lakefs_endpoint = f"http://{lakefs_host}:{lakefs_port}"
        os.environ.update(
            {
                "DRIFTLOOP_LAKEFS__ENDPOINT": lakefs_endpoint,
                "DRIFTLOOP_LAKEFS__ACCESS_KEY_ID": key,
                "DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY": secret,
            }
        )
        try:
            _ingest_two_batches(api_url, home, console)
            _train_and_package(api_url, console)
        finally:
            drain_prefect_client()
    for stage, issue in NOT_IN_DEMO_YET:
        console.print(
            f"[yellow]–[/] not in the demo yet: {stage} (built; bench/loop.py runs it; "
            f"the demo gets it with issue {issue})"
        )


def _credentials(settings: Settings) -> tuple[str, str]:
    """The configured lakeFS keys, or a pair made for this run (never printed or written out)."""
    lakefs = settings.lakefs
    if lakefs.access_key_id and lakefs.secret_access_key:
        return lakefs.access_key_id.get_secret_value(), lakefs.secret_access_key.get_secret_value()
    return "AKIADEMO" + secrets.token_hex(6).upper(), secrets.token_urlsafe(30)


def _start(running: ExitStack, console: Console, component: Component, timeout: float) -> Component:
    running.callback(component.stop)
    console.print(f"starting {component.name} (log: {component.log_path})")
    try:
        component.wait_healthy(timeout=timeout)
    except ComponentFailed as error:
        raise DemoFailed(str(error)) from None
    console.print(f"[green]✓[/] {component.name} healthy")
    return component


def _ingest_two_batches(api_url: str, home: Path, console: Console) -> None:
    from prefect.settings import temporary_settings

    from driftloop.datasets.transactions import generate_transactions
    from driftloop.ingestion import BatchRejected
    from flows.ingest import ingest_batch

    with temporary_settings(updates={"api.url": api_url, "server.ephemeral.enabled": False}):
        console.rule("write, audit, publish: a valid batch")
        outcome = ingest_batch("transactions", "builtin:?rows=5000&seed=1", "demo-day-1").outcome
        verb = "landed on main" if outcome["status"] == "merged" else "was already on main"
        console.print(
            f"[green]✓[/] batch demo-day-1 ({outcome['rows']} rows) {verb} at commit "
            f"{outcome['commit_id']}"
        )
        console.rule("a corrupted batch")
        corrupted = generate_transactions(2000, seed=2)
        corrupted.loc[:99, "amount"] = -corrupted.loc[:99, "amount"]
        corrupted.loc[100:109, "merchant_category"] = "casino"
        path = home / "demo-corrupted-batch.csv"
        corrupted.to_csv(path, index=False)
        try:
            ingest_batch("transactions", str(path), "demo-day-2-corrupted")
        except BatchRejected as rejected:
            console.print(
                f"[green]✓[/] batch demo-day-2-corrupted rejected, main unchanged; branch "
                f"{rejected.branch} kept for inspection:\n{rejected.report.summary()}",
                highlight=False,
            )
        else:
            raise DemoFailed("the corrupted batch was not rejected")


def _train_and_package(api_url: str, console: Console) -> None:
    from prefect.settings import temporary_settings

    from flows.ingest import ingest_batch
    from flows.package import package
    from flows.train import train

    with temporary_settings(updates={"api.url": api_url, "server.ephemeral.enabled": False}):
        console.rule("train on the pinned commit, gate, register")
        first: dict[str, Any] = train()
        console.print(
            f"[green]✓[/] {first['model']}:{first['version']} trained on commit "
            f"{first['data_commit']}: roc_auc {first['metrics']['roc_auc']:.3f}, "
            f"stage {first['stage']} ({'; '.join(first['reasons'])})",
            highlight=False,
        )
        ingest_batch("transactions", "builtin:?rows=5000&seed=3", "demo-day-3")
        challenger: dict[str, Any] = train(estimator="logistic_regression", holdout="newest_batch")
        console.print(
            f"[green]✓[/] challenger {challenger['version']} ({challenger['stage']}): "
            f"{'; '.join(challenger['reasons'])}",
            highlight=False,
        )
        console.rule("package the production model")
        built = package()
        console.print(f"[green]✓[/] Bento {built['bento']} with {built['model']}", highlight=False)
