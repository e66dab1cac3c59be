"""``driftloop demo``: the whole loop on this machine, from nothing, with a timeline at the end.

1. The embedded stack (:class:`driftloop.stack.supervisor.LocalStack`) under ``<home>/demo``,
   fresh for every run, with a fast monitor (a check every 2 s over 500-row windows, drift
   declared after 2 drifted windows); its bootstrap lands a first batch through its branch and
   trains the first model, which the inference service serves.
2. A corrupted batch is rejected and main does not move.
3. In-distribution traffic with delayed labels: the monitor judges each window before its labels
   come and shows the ROC AUC it estimates from the model's calibrated scores, with its band;
   then the labels come (at once, or trickling in over ``--label-delay`` seconds) and the
   realized ROC AUC fills in beside it. No drift, nothing else happens.
4. Concept drift: the same features, a different fraud pattern, with labels. The monitor
   declares drift, sends ``driftloop.drift.detected``; Prefect's automation runs the retrain
   deployment on the worker; the gate promotes the retrained model; the service swaps to it.
5. The timeline (drift onset, event, retrain start, new version serving) and F1 before and after
   on fresh drifted data. The demo fails unless a new version serves and its F1 is higher.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from sklearn.metrics import f1_score

from driftloop.datasets.transactions import generate_transactions
from driftloop.ingestion import BatchRejected
from driftloop.lakefs_client import LakeFSClient
from driftloop.prefect_api import PrefectAccess
from driftloop.project import example_project
from driftloop.serving import frame_records, load_version
from driftloop.settings import Settings, fast_monitor_env, settings_from_env
from driftloop.stack.deploy import DeployError, code_dir
from driftloop.stack.errors import StackError, Stop
from driftloop.stack.processes import pid_alive
from driftloop.stack.servers import driftloop_executable
from driftloop.stack.state import down, read_state
from driftloop.stack.supervisor import LocalStack
from flows.common import in_process
from flows.ingest import RunFailed, ingest_batch

# The monitor's cadence for the demo: a check every 2 s, 2 drifted windows (a demo should finish
# in minutes), on the example project `transactions` with a first model trained at start.
DEMO_EXAMPLE = "transactions"
DEMO_ENV = {
    **fast_monitor_env(interval_seconds=2),
    "DRIFTLOOP_STACK__BOOTSTRAP": "true",
}
LOOP_TIMEOUT_SECONDS = 480


class DemoFailed(RuntimeError):
    """A step of the demo failed; the message says which and where to look."""


@dataclass
class Timeline:
    drift_onset: datetime | None = None
    drift_event: datetime | None = None
    retrain_started: datetime | None = None
    new_version_serving: datetime | None = None

    def lines(self) -> list[tuple[str, datetime | None]]:
        return [
            ("drift onset (first drifted request)", self.drift_onset),
            ("driftloop.drift.detected in Prefect", self.drift_event),
            ("retrain flow run started", self.retrain_started),
            ("new model version serving", self.new_version_serving),
        ]


def run_demo(
    settings: Settings, console: Console, *, keep_running: bool = False, label_delay: float = 0.0
) -> None:
    """Run the demo under ``<settings.home>/demo``; raise DemoFailed unless the loop closed."""

    def say(message: str) -> None:
        console.print(message, highlight=False, soft_wrap=True)

    home = settings.home.resolve() / "demo"
    if home.exists():
        state = read_state(settings.model_copy(update={"home": home}))
        if state is not None and pid_alive(int(state["supervisor"])):
            raise DemoFailed(
                f"a demo stack runs under {home} (supervisor pid {state['supervisor']}); stop "
                f"it with `DRIFTLOOP_HOME={home} driftloop down`"
            )
        if state is not None:  # left behind by a demo that was killed: stop what remains
            down(settings.model_copy(update={"home": home}), say)
        shutil.rmtree(home)
    lakefs = settings.lakefs
    env = {
        **DEMO_ENV,
        "DRIFTLOOP_PROJECT": str(example_project(DEMO_EXAMPLE).file),
        "DRIFTLOOP_HOME": str(home),
        # Always the embedded lakeFS-compatible server: demo data never goes to a real lakeFS.
        "DRIFTLOOP_LAKEFS__ENDPOINT": f"http://{lakefs.embedded_host}:{lakefs.embedded_port}",
    }
    demo_settings = settings_from_env(env)

    console.rule("[bold]driftloop demo[/]: the stack")
    say(f"fresh state under {home}; every component's log under {home / 'logs'}")
    closed = False
    try:
        stack = LocalStack(demo_settings, code=code_dir(), say=say, extra_env=env)
        with stack.running_stack():
            Demo(stack, console, label_delay=label_delay).run()
            closed = True
            if keep_running:
                say("the stack keeps running for you to look around; Ctrl-C stops it")
                stack.supervise()
    except Stop:
        say("stopped every component")
        if not closed:
            raise DemoFailed("interrupted before the loop closed") from None
    except (StackError, DeployError) as error:
        raise DemoFailed(str(error)) from None


class Demo:
    """The demo's steps against a running stack."""

    def __init__(self, stack: LocalStack, console: Console, label_delay: float = 0.0) -> None:
        self.stack = stack
        self.label_delay = label_delay
        self.console = console
        self.settings = stack.settings
        self.model = example_project(DEMO_EXAMPLE).model()
        self.spec = self.model.spec
        self.prefect = PrefectAccess.of(self.settings.prefect)
        self.ui = self.prefect.url.removesuffix("/api")
        self.inference = f"http://{self.settings.serving.host}:{self.settings.serving.port}"
        self.monitor = f"http://{self.settings.monitor.host}:{self.settings.monitor.port}"
        self.started = datetime.now(UTC)

    def say(self, message: str) -> None:
        self.console.print(message, highlight=False, soft_wrap=True)

    def run(self) -> None:
        self.rejected_batch()
        old_version = self.serving_version()
        self.say(f"[green]✓[/] the inference service serves {self.model.name}:{old_version}")
        self.in_distribution()
        timeline, new_version = self.concept_drift(old_version)
        self.conclude(timeline, old_version, new_version)

    def rejected_batch(self) -> None:
        self.console.rule("write, audit, publish: a corrupted batch")
        client = LakeFSClient.from_settings(self.settings.lakefs)
        main = self.settings.lakefs.default_branch
        before = client.branch_head(main)
        corrupted = generate_transactions(2000, seed=2)
        corrupted.loc[:99, "amount"] = -corrupted.loc[:99, "amount"]
        corrupted.loc[100:109, "merchant_category"] = "casino"
        path = self.stack.home / "corrupted-batch.csv"
        corrupted.to_csv(path, index=False)
        try:
            self.in_prefect(lambda: ingest_batch(self.model.name, str(path), "corrupted"))
        except RunFailed as failed:
            rejected = failed.cause
            if not isinstance(rejected, BatchRejected):
                raise DemoFailed(f"the corrupted batch failed otherwise: {rejected}") from None
            self.say(
                f"[green]✓[/] batch 'corrupted' rejected, main unchanged; branch "
                f"{rejected.branch} kept for inspection:\n{rejected.report.summary()}"
            )
        else:
            raise DemoFailed("the corrupted batch was not rejected")
        if client.branch_head(main) != before:
            raise DemoFailed(f"main moved from {before} although the batch was rejected")

    def in_distribution(self) -> None:
        self.console.rule("traffic like the training data, with delayed labels")
        judged = self.monitor_status()["windows_judged"]
        for seed in (31, 32, 33):
            labels = self.traffic("baseline", seed, labels=False)
            status = self.wait_for(
                "the monitor to judge a window", partial(self.judged_after, judged), timeout=60
            )
            judged = status["windows_judged"]
            self.say(f"  window {judged}: {status['state']}, drift share {drift_share(status):.2f}")
            estimate = (status.get("estimated") or {}).get("roc_auc")
            if estimate:
                self.say(
                    f"    before its labels (coverage {status.get('label_coverage') or 0:.0%}): "
                    f"estimated ROC AUC {estimate['value']:.3f} "
                    f"[{estimate['lower']:.3f}, {estimate['upper']:.3f}]"
                )
            self.send_labels(labels)
            status = self.wait_for(
                "the window's labels to reach the monitor", self.labelled_window, timeout=60
            )
            realized = status["result"]["performance"]["metrics"].get("roc_auc")
            if estimate and realized is not None:
                inside = estimate["lower"] <= realized <= estimate["upper"]
                self.say(
                    f"    labels in: realized ROC AUC {realized:.3f} "
                    f"({'inside' if inside else 'outside'} the estimate's band)"
                )
        if self.monitor_status()["drift_declared"]:
            raise DemoFailed("the monitor declared drift on in-distribution traffic")
        self.say("[green]✓[/] in distribution: no drift declared, no retrain")

    def concept_drift(self, old_version: str) -> tuple[Timeline, str]:
        self.console.rule("concept drift: the fraud pattern changes")
        timeline = Timeline(drift_onset=datetime.now(UTC))
        seed, deadline = 40, time.monotonic() + LOOP_TIMEOUT_SECONDS
        seen: set[str] = set()
        while time.monotonic() < deadline:
            seed += 1
            self.traffic("concept_drift", seed)
            status = self.monitor_status()
            if "declared" not in seen and status["drift_declared"]:
                seen.add("declared")
                self.say(
                    f"  the monitor declared drift (drift share {drift_share(status):.2f}); "
                    f"report: {status.get('last_report') or 'being written'}"
                )
            if timeline.drift_event is None:
                timeline.drift_event = first_event(self.prefect, "driftloop.drift.detected")
                if timeline.drift_event:
                    self.say("  Prefect received driftloop.drift.detected")
            run = newest_run(self.prefect, "retrain", self.started)
            if run is not None:
                state = run["state_name"]
                if state not in seen:
                    seen.add(state)
                    self.say(
                        f"  retrain run {run['name']}: {state} "
                        f"({self.ui}/runs/flow-run/{run['id']})"
                    )
                if run.get("start_time") and timeline.retrain_started is None:
                    timeline.retrain_started = datetime.fromisoformat(run["start_time"])
                if run["state_type"] in ("FAILED", "CRASHED", "CANCELLED"):
                    raise DemoFailed(
                        f"the retrain run ended {state}; its log is in the Prefect UI at "
                        f"{self.ui}/runs/flow-run/{run['id']} and in {self.stack.logs}/worker.log"
                    )
            version = self.serving_version()
            if version != old_version:
                timeline.new_version_serving = datetime.now(UTC)
                self.say(f"[green]✓[/] the service swapped to {self.model.name}:{version}")
                return timeline, version
        raise DemoFailed(
            f"no new version served within {LOOP_TIMEOUT_SECONDS} s of drift; see the monitor "
            f"({self.monitor}/status, {self.stack.logs}/monitor.log) and the retrain runs "
            f"({self.ui}/runs)"
        )

    def conclude(self, timeline: Timeline, old_version: str, new_version: str) -> None:
        probe = generate_transactions(2000, seed=99, scenario="concept_drift")
        records = frame_records(probe, self.spec.feature_names)
        truth = probe[self.spec.target].astype(int)
        f1 = {}
        for version in (old_version, new_version):
            model = load_version(f"{self.model.name}:{version}")
            f1[version] = float(f1_score(truth, model.score(records) >= model.threshold))
        self.console.rule("timeline")
        onset = timeline.drift_onset
        for label, at in timeline.lines():
            offset = f"+{(at - onset).total_seconds():6.1f} s" if at and onset else "   (none)"
            clock = at.strftime("%H:%M:%S") if at else ""
            self.say(f"  {label:38} {clock:>8}  {offset}")
        self.say(
            f"  F1 on 2,000 fresh drifted transactions: {old_version} {f1[old_version]:.3f} -> "
            f"{new_version} {f1[new_version]:.3f}"
        )
        report = self.save_report()
        self.console.rule("where to look")
        for line in (
            f"Prefect UI: {self.ui} (deployments: {self.ui}/deployments, automations: "
            f"{self.ui}/automations, flow runs and their artifacts: {self.ui}/runs)",
            f"inference: {self.inference}/predict, {self.inference}/model, "
            f"{self.inference}/metrics",
            f"monitor: {self.monitor}/status, {self.monitor}/metrics",
            f"the Evidently drift report: {report}",
            f"model history: DRIFTLOOP_HOME={self.stack.home} {command()} model history",
        ):
            self.say(f"  {line}")
        if f1[new_version] <= f1[old_version]:
            raise DemoFailed(
                f"the new version's F1 ({f1[new_version]:.3f}) is not above the old one's "
                f"({f1[old_version]:.3f}) on drifted data"
            )
        self.say("[bold green]the loop closed[/]: drift → event → retrain → a better model serving")

    # -- helpers -----------------------------------------------------------------------------

    def traffic(
        self, scenario: str, seed: int, rows: int = 500, labels: bool = True
    ) -> list[dict[str, Any]]:
        """``rows`` transactions in requests of 50, then each one's true label as feedback; with
        ``labels`` False, the feedback is returned to send later instead."""
        frame = generate_transactions(rows, seed=seed, scenario=scenario)  # type: ignore[arg-type]
        records = frame_records(frame, self.spec.feature_names)
        truth = frame[self.spec.target].astype(int).tolist()
        with httpx.Client(base_url=self.inference, timeout=30) as client:
            answers: list[dict[str, Any]] = []
            for start in range(0, rows, 50):
                response = client.post("/predict", json=records[start : start + 50])
                response.raise_for_status()
                answers += response.json()
        feedback = [
            {"prediction_id": answer["prediction_id"], "label": label}
            for answer, label in zip(answers, truth, strict=True)
        ]
        if labels:
            self.send_labels(feedback, over_seconds=0.0)
            return []
        return feedback

    def send_labels(
        self, feedback: list[dict[str, Any]], over_seconds: float | None = None
    ) -> None:
        """Send ``feedback``, trickling in 10 parts over ``over_seconds`` (default: the
        demo's label delay)."""
        spread = self.label_delay if over_seconds is None else over_seconds
        parts = 10 if spread > 0 else 1
        size = -(-len(feedback) // parts)
        with httpx.Client(base_url=self.inference, timeout=30) as client:
            for part in range(parts):
                if part:
                    time.sleep(spread / parts)
                for given in feedback[part * size : (part + 1) * size]:
                    client.post("/feedback", json=given).raise_for_status()

    def labelled_window(self) -> dict[str, Any] | None:
        """The monitor's status once every row of its window has its label."""
        status = self.monitor_status()
        return status if status.get("label_coverage") == 1.0 and status.get("result") else None

    def serving_version(self) -> str:
        return str(httpx.get(f"{self.inference}/model", timeout=10).json()["version"])

    def monitor_status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.monitor}/status", timeout=10).json())

    def judged_after(self, judged: int) -> dict[str, Any] | None:
        """The monitor's status once it has judged more than ``judged`` windows."""
        status = self.monitor_status()
        return status if status["windows_judged"] > judged else None

    def save_report(self) -> str:
        """Copy the newest drift report from lakeFS to the demo's folder; where it is."""
        client = LakeFSClient.from_settings(self.settings.lakefs)
        main = self.settings.lakefs.default_branch
        reports = sorted(
            found.path
            for found in client.list_objects(main, f"reports/drift/{self.model.name}/")
            if found.path.endswith(".html")
        )
        if not reports:
            return "none written (see the monitor's log)"
        target = self.stack.home / "drift-report.html"
        target.write_bytes(client.download(main, reports[-1]))
        return f"{target} (in lakeFS: {main}/{reports[-1]})"

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := check():
                return found
            time.sleep(0.5)
        raise DemoFailed(f"timed out waiting for {what} ({timeout:.0f} s)")

    def in_prefect(self, work: Callable[[], Any]) -> Any:
        """Run an in-process flow against the stack's Prefect server."""
        with in_process(self.settings):
            return work()


def first_event(prefect: PrefectAccess, name: str) -> datetime | None:
    """When the first event called ``name`` occurred, as Prefect recorded it."""
    found = prefect.post(
        "/events/filter", {"filter": {"event": {"name": [name]}}, "limit": 10}
    ).json()["events"]
    times = [datetime.fromisoformat(event["occurred"]) for event in found]
    return min(times) if times else None


def newest_run(prefect: PrefectAccess, deployment: str, since: datetime) -> dict[str, Any] | None:
    """The newest run of the deployment named ``deployment`` created after ``since``."""
    deployments = prefect.post("/deployments/filter", {}).json()
    ids = [d["id"] for d in deployments if d["name"] == deployment]
    runs = prefect.post(
        "/flow_runs/filter",
        {"flow_runs": {"deployment_id": {"any_": ids}}, "sort": "EXPECTED_START_TIME_DESC"},
    ).json()
    fresh = [run for run in runs if datetime.fromisoformat(run["created"]) >= since]
    return max(fresh, key=lambda run: run["created"]) if fresh else None


def command() -> str:
    """How to type ``driftloop`` here: relative to the working folder when it is below it."""
    executable = Path(driftloop_executable())
    return (
        str(executable.relative_to(Path.cwd()))
        if executable.is_relative_to(Path.cwd())
        else (str(executable))
    )


def drift_share(status: dict[str, Any]) -> float:
    """The drifted share of features in the monitor's latest judged window (0 before one)."""
    return float((status.get("result") or {}).get("drifted_share", 0.0))
