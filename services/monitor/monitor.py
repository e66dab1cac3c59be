"""The monitor's check: the production model's latest window against its training data.

:class:`Monitor` is given everything it talks to (where the production model, the window and
the reference come from, where events and reports go), so the same class runs against the
real prediction log, lakeFS and Prefect in the service and against small fakes in unit tests.

One :meth:`Monitor.check`: find the production model; take the newest ``window_rows`` of its
predictions (a window with no prediction newer than the last judged one is not judged again,
and one below ``min_window_rows`` not at all); compare it with the model's reference (its
training data at its data commit, scored by the model, prepared once per version); set the
gauges. After ``consecutive_windows`` drifted windows in a row, drift is declared once for the
episode: the Evidently report is stored, ``driftloop.drift.detected`` is sent, and the episode
ends when a window is no longer drifted or another version becomes production. If the event
cannot be delivered the declaration is retried at the next check: an event is never dropped.

Labels come late: each check also reports the window's label coverage and every new label's
delay, and estimates the window's performance from the version's calibrated scores before its
labels (``driftloop.estimation``); a window whose labels came is judged again (its realized
metrics fill in), without counting as a new window. With ``declare_estimated_drop``, a drop of
the estimate under the task's floor for ``consecutive_windows`` windows is declared once, as
``driftloop.performance.degraded``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from driftloop.datasets.spec import DatasetSpec
from driftloop.events import (
    DRIFT_DETECTED,
    FEEDBACK_PROGRESS,
    PERFORMANCE_DEGRADED,
    Event,
    EventNotDelivered,
    model_resource,
)
from driftloop.prefect_api import FlowRunOutcome
from driftloop.settings import MonitorSettings
from driftloop.tasks import LIVE_FLOOR

if TYPE_CHECKING:  # imported where a window is judged: an idle monitor holds no pandas or scipy
    import pandas as pd

    from driftloop.drift import DriftResult, Reference
    from driftloop.estimation import Estimate
    from driftloop.rollout import Judgement

log = logging.getLogger("driftloop.monitor")


@dataclass(frozen=True)
class ProductionModel:
    """What the monitor needs to know of the model in production."""

    name: str
    version: str
    data_commit: str
    threshold: float
    calibration: dict[str, Any] = field(default_factory=dict)
    """The version's holdout calibration (``driftloop.estimation``); {}: nothing to estimate."""


@dataclass
class Status:
    """The outcome of the latest check, as /status shows it."""

    state: str = "starting"
    checked_at: str | None = None
    model: str | None = None
    version: str | None = None
    window_rows: int = 0
    consecutive_drifted: int = 0
    drift_declared: bool = False
    last_event_id: str | None = None
    last_report: str | None = None
    problem: str | None = None
    result: dict[str, Any] | None = None
    checks: int = 0
    windows_judged: int = 0  # windows with new traffic that were compared with the reference
    last_retrain: dict[str, Any] | None = None  # how the latest retrain run ended
    rollout: dict[str, Any] | None = None  # the challenger's live evidence, when one is out
    label_coverage: float | None = None  # share of the latest window's rows that got a label
    estimated: dict[str, Any] | None = None  # performance estimated from the scores, per metric

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class MonitorMetrics:
    """The monitor's Prometheus metrics (names fixed in docs/architecture.md)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.feature_drift = Gauge(
            "driftloop_feature_drift_score",
            "Drift score of one feature in the latest window (method's own scale).",
            ["model", "feature", "method"],
            registry=registry,
        )
        self.drift_share = Gauge(
            "driftloop_drift_share", "Share of drifted features.", ["model"], registry=registry
        )
        self.dataset_drift = Gauge(
            "driftloop_dataset_drift",
            "1 when the drifted share reaches the threshold.",
            ["model"],
            registry=registry,
        )
        self.prediction_drift = Gauge(
            "driftloop_prediction_drift_score",
            "Drift score of the model's scores against its scores on the reference.",
            ["model"],
            registry=registry,
        )
        self.performance = Gauge(
            "driftloop_model_performance",
            "Quality on the labelled rows of the latest window.",
            ["model", "metric"],
            registry=registry,
        )
        self.window_rows = Gauge(
            "driftloop_monitor_window_rows",
            "Rows in the latest window.",
            ["model"],
            registry=registry,
        )
        self.check_duration = Histogram(
            "driftloop_monitor_check_duration_seconds",
            "Time one drift check took.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.retrain_triggered = Counter(
            "driftloop_retrain_triggered",
            "Drift declarations sent to Prefect (each can start a retrain).",
            registry=registry,
        )
        self.event_failures = Counter(
            "driftloop_monitor_event_failures",
            "Events Prefect did not accept after every retry (sent again later).",
            registry=registry,
        )
        self.retrain_failed = Gauge(
            "driftloop_retrain_failed",
            "1 when the latest retrain run of the model that ended failed or crashed.",
            ["model"],
            registry=registry,
        )
        # Delayed labels: how many came, how late, and what the scores say meanwhile.
        self.label_coverage = Gauge(
            "driftloop_label_coverage",
            "Share of the latest window's predictions that got their true label.",
            ["model"],
            registry=registry,
        )
        self.label_delay = Histogram(
            "driftloop_label_delay_seconds",
            "Time from a prediction to its true label, per label as it arrives.",
            ["model"],
            buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400),
            registry=registry,
        )
        self.estimated = Gauge(
            "driftloop_estimated_performance",
            "Performance of the latest window estimated from the model's calibrated scores, "
            "before labels (bound: estimate, and the lower and upper ends of its 95 % band).",
            ["model", "metric", "bound"],
            registry=registry,
        )
        # A rollout's live evidence (the judge's test, looked at by the monitor each check).
        self._rollout_series: dict[str, list[tuple[Gauge, tuple[str, ...]]]] = {}
        self.rollout_age = Gauge(
            "driftloop_rollout_age_seconds",
            "How long the model's challenger has been on live traffic.",
            ["model", "version", "role"],
            registry=registry,
        )
        self.rollout_max_age = Gauge(
            "driftloop_rollout_max_age_seconds",
            "The rollout's maximum duration (rollout.max_hours) before it is overdue.",
            ["model"],
            registry=registry,
        )
        self.rollout_labelled = Gauge(
            "driftloop_rollout_labelled_rows",
            "Labelled rows behind the rollout's test, per role (shadow: pairs).",
            ["model", "role"],
            registry=registry,
        )
        self.rollout_loss = Gauge(
            "driftloop_rollout_live_loss",
            "Mean per-row loss on the rollout's labelled rows, per role (lower is better).",
            ["model", "role"],
            registry=registry,
        )
        self.rollout_difference = Gauge(
            "driftloop_rollout_loss_difference",
            "Production's loss minus the challenger's (positive: the challenger is better), "
            "with its always-valid confidence bounds.",
            ["model", "bound"],
            registry=registry,
        )

    def record_rollout(self, model: str, judgement: Judgement | None) -> None:
        """Export the rollout's evidence, or remove it when the model has no rollout."""
        for gauge, labels in self._rollout_series.pop(model, []):
            gauge.remove(*labels)
        if judgement is None:
            return
        role, test = judgement.role, judgement.test
        values: list[tuple[Gauge, tuple[str, ...], float]] = [
            (self.rollout_age, (model, judgement.challenger, role), judgement.hours * 3600),
            (self.rollout_max_age, (model,), judgement.max_hours * 3600),
        ]
        counted = ("shadow",) if role == "shadow" else ("champion", "canary")
        values += [
            (self.rollout_labelled, (model, which), count)
            for which, count in zip(counted, test.samples, strict=True)
        ]
        values += [
            (self.rollout_loss, (model, role if which == "challenger" else which), loss)
            for which, loss in judgement.mean_loss.items()
            if loss == loss  # not NaN: there were rows
        ]
        # The difference as soon as there are rows to take it from; its bounds once the test
        # has the rows a decision needs (before, they are infinite).
        shown = [("estimate", test.estimate)] if math.isfinite(test.estimate) else []
        if test.lower > float("-inf"):
            shown += [("lower", test.lower), ("upper", test.upper)]
        values += [(self.rollout_difference, (model, bound), value) for bound, value in shown]
        for gauge, labels, value in values:
            gauge.labels(*labels).set(value)
        self._rollout_series[model] = [(gauge, labels) for gauge, labels, _ in values]

    def record_estimates(self, model: str, estimates: dict[str, Estimate]) -> None:
        for metric, estimate in estimates.items():
            for bound, value in (
                ("estimate", estimate.value), ("lower", estimate.lower), ("upper", estimate.upper)
            ):  # fmt: skip
                self.estimated.labels(model, metric, bound).set(value)

    def record(self, model: str, result: DriftResult) -> None:
        for feature in result.features:
            self.feature_drift.labels(model, feature.feature, feature.method).set(feature.score)
        self.drift_share.labels(model).set(result.drifted_share)
        self.dataset_drift.labels(model).set(int(result.dataset_drift))
        if result.prediction is not None:
            self.prediction_drift.labels(model).set(result.prediction.score)
        if result.performance is not None:
            for metric, value in result.performance.metrics.items():
                self.performance.labels(model, metric).set(value)


@dataclass
class _Episode:
    version: str | None = None
    newest_judged: Any = None
    consecutive: int = 0
    declared: bool = False
    reference: Reference | None = None
    history: list[bool] = field(default_factory=list)
    labelled_judged: int = -1  # labelled rows of the window last judged
    below_floor: int = 0  # windows in a row whose estimated band lies under the floor
    drop_declared: bool = False


class Monitor:
    """Judges the production model's traffic, window after window."""

    def __init__(
        self,
        *,
        spec: DatasetSpec,
        model_name: str,
        settings: MonitorSettings,
        production: Callable[[], ProductionModel | None],
        window: Callable[[ProductionModel, int], pd.DataFrame],
        reference: Callable[[ProductionModel], Reference],
        send: Callable[[list[Event]], None],
        store_report: Callable[[ProductionModel, Reference, pd.DataFrame, DriftResult], str],
        registry: CollectorRegistry,
        annotate: Callable[[str, list[str]], None] = lambda text, tags: None,
        retrains: Callable[[], FlowRunOutcome | None] | None = None,
        metrics: MonitorMetrics | None = None,
        rollout: Callable[[], Judgement | None] | None = None,
        progress_step: int = 50,
        label_delays: Callable[[datetime | None], tuple[list[float], datetime | None]]
        | None = None,
        window_size: Callable[[ProductionModel, int], int] | None = None,
    ) -> None:
        self.spec = spec
        self.model_name = model_name
        self.settings = settings
        self._production = production
        self._window = window
        # How many rows the window would have, read without reading them (None: read them).
        self._window_size = window_size
        self._reference = reference
        self._send = send
        self._store_report = store_report
        self._annotate = annotate
        self._retrains = retrains
        self._rollout = rollout
        self._label_delays = label_delays
        # Label delays are observed from the monitor's start on: the first look does not read
        # every label the log ever got (a restarted counter starts empty anyway).
        self._labels_seen_until: datetime | None = datetime.now(UTC)
        self.progress_step = progress_step
        self._reported: tuple[str, int] | None = None  # (challenger, labelled rows) last sent
        # Several monitors (one per model of a project) share one set of metrics.
        self.metrics = metrics or MonitorMetrics(registry)
        self.status = Status()
        self._episode = _Episode()
        self._lock = threading.Lock()

    def check(self) -> Status:
        """One drift check; never raises (a failure is reported in the status)."""
        with self._lock, self.metrics.check_duration.time():
            try:
                self._check()
            except Exception as problem:
                log.exception("drift check failed")
                self._set("failed", problem=f"{type(problem).__name__}: {problem}")
            self._watch_retrains()
            self._watch_rollout()
            self._watch_labels()
            self.status.checks += 1
            return self.status

    def _watch_retrains(self) -> None:
        """Export whether the model's latest retrain failed: a failed retrain raises an alert
        (RetrainFailed), instead of leaving the drift it was meant to fix in silence."""
        if self._retrains is None:
            return
        try:
            run = self._retrains()
        except Exception as problem:  # Prefect unreachable: keep the last known value
            log.warning("could not read the latest retrain run: %s", problem)
            return
        model = self.model_name
        self.metrics.retrain_failed.labels(model).set(int(run is not None and run.failed))
        previous = self.status.last_retrain
        self.status.last_retrain = None if run is None else dict(run.__dict__)
        if run is not None and run.failed and (previous or {}).get("id") != run.id:
            log.error("retrain run %s of %s %s: %s", run.name, model, run.state, run.message)

    def _watch_labels(self) -> None:
        """Observe the delay of every label that arrived since the last check, once each."""
        if self._label_delays is None:
            return
        try:
            delays, until = self._label_delays(self._labels_seen_until)
        except Exception as problem:  # the log unreachable: the next check catches up
            log.warning("could not read the label delays of %s: %s", self.model_name, problem)
            return
        histogram = self.metrics.label_delay.labels(self.model_name)
        for delay in delays:
            histogram.observe(delay)
        self._labels_seen_until = until

    def _estimate(self, model: ProductionModel, frame: pd.DataFrame, new_window: bool) -> None:
        """Label coverage of the window, and its performance estimated from the scores; with
        ``declare_estimated_drop``, a drop declared once the estimated band of the primary
        metric has stayed under its floor for ``consecutive_windows`` new windows."""
        from driftloop.drift import LABEL, SCORE, TRUE_LABEL
        from driftloop.estimation import estimate_window

        if TRUE_LABEL in frame.columns:  # a window source that keeps labels
            coverage = float(frame[TRUE_LABEL].notna().mean()) if len(frame) else 0.0
            self.metrics.label_coverage.labels(model.name).set(coverage)
            self.status.label_coverage = coverage
        if not model.calibration or SCORE not in frame.columns or LABEL not in frame.columns:
            self.status.estimated = None
            return
        estimates = estimate_window(
            model.calibration, frame[SCORE].to_numpy(float), frame[LABEL].to_numpy(int)
        )
        self.metrics.record_estimates(model.name, estimates)
        self.status.estimated = {name: asdict(found) for name, found in estimates.items()}
        metric, floor = LIVE_FLOOR[self.spec.task]
        if self.settings.performance_floor is not None:
            floor = self.settings.performance_floor
        estimate = estimates.get(metric)
        if estimate is None or not self.settings.declare_estimated_drop:
            return
        episode = self._episode
        if new_window:
            below = estimate.upper < floor  # the whole band: not a noisy window
            episode.below_floor = episode.below_floor + 1 if below else 0
            if not below:
                episode.drop_declared = False
        if self._drop_pending(episode):
            self._declare_drop(model, episode, estimate, floor, len(frame))

    def _declare_drop(
        self,
        model: ProductionModel,
        episode: _Episode,
        estimate: Estimate,
        floor: float,
        window_rows: int,
    ) -> None:
        try:
            self._announce(
                model,
                PERFORMANCE_DEGRADED,
                {
                    "source": "estimated",
                    "metric": estimate.metric,
                    "estimate": estimate.value,
                    "lower": estimate.lower,
                    "upper": estimate.upper,
                    "floor": floor,
                    "window_rows": window_rows,
                    "label_coverage": self.status.label_coverage,
                    "consecutive_windows": episode.below_floor,
                },
                "estimated drop",
            )
        except EventNotDelivered:
            return
        episode.drop_declared = True
        self.metrics.retrain_triggered.inc()
        text = (
            f"estimated {estimate.metric} of {model.name}:{model.version} is {estimate.value:.3f} "
            f"[{estimate.lower:.3f}, {estimate.upper:.3f}], under {floor:g}, before labels"
        )
        self._annotate(text, ["performance", model.name])
        log.warning("performance drop declared: %s", text)

    def _announce(
        self, model: ProductionModel, name: str, details: dict[str, Any], what: str
    ) -> Event:
        """Send event ``name`` about ``model`` (its name, version and data commit, and
        ``details``). Raises EventNotDelivered when Prefect did not take it, counted and logged
        as ``what`` (the caller sends it again at the next check)."""
        event = Event(
            event=name,
            resource_id=model_resource(model.name),
            resource_labels={"driftloop.model.version": model.version},
            payload={
                "model": model.name,
                "model_version": model.version,
                "data_commit": model.data_commit,
                **details,
            },
        )
        try:
            self._send([event])
        except EventNotDelivered as problem:
            self.metrics.event_failures.inc()
            log.error("%s not delivered (sent again next check): %s", what, problem)
            raise
        return event

    def _watch_rollout(self) -> None:
        """Export the rollout's live evidence, and tell Prefect (``driftloop.feedback.progress``,
        which starts the judge) each time another ``progress_step`` labelled rows arrived."""
        if self._rollout is None:
            return
        try:
            judgement = self._rollout()
        except Exception as problem:
            log.warning("could not look at the rollout of %s: %s", self.model_name, problem)
            return
        self.metrics.record_rollout(self.model_name, judgement)
        self.status.rollout = None if judgement is None else judgement.evidence()
        if judgement is None:
            return
        labelled = min(judgement.test.samples)
        last = (
            self._reported[1] if self._reported and self._reported[0] == judgement.challenger else 0
        )
        if labelled - last < self.progress_step:
            return
        event = Event(
            FEEDBACK_PROGRESS,
            model_resource(self.model_name),
            {
                "model": self.model_name,
                "challenger": judgement.challenger,
                "role": judgement.role,
                "labelled": list(judgement.test.samples),
                "preview": judgement.decision,
            },
        )
        try:
            self._send([event])
        except EventNotDelivered as problem:
            self.metrics.event_failures.inc()
            log.warning(
                "rollout progress of %s not delivered (sent again later): %s",
                self.model_name,
                problem,
            )
            return
        self._reported = (judgement.challenger, labelled)

    def _set(self, state: str, **values: Any) -> None:
        self.status.state = state
        self.status.checked_at = datetime.now(UTC).isoformat()
        self.status.problem = None
        for name, value in values.items():
            setattr(self.status, name, value)

    def _check(self) -> None:
        model = self._production()
        if model is None:
            self._set("no production model")
            return
        episode = self._episode
        if episode.version != model.version:
            self._episode = episode = _Episode(version=model.version)
            log.info("monitoring %s:%s", model.name, model.version)
        self.status.model, self.status.version = model.name, model.version
        if self._window_size is not None:
            available = self._window_size(model, self.settings.window_rows)
            if available < self.settings.min_window_rows:  # not read: nothing to judge yet
                self.metrics.window_rows.labels(model.name).set(available)
                self._set("waiting for traffic", window_rows=available, result=None)
                return
        from driftloop.drift import TRUE_LABEL, compute_drift  # pandas, numpy, scipy: here

        frame = self._window(model, self.settings.window_rows)
        self.metrics.window_rows.labels(model.name).set(len(frame))
        if len(frame) < self.settings.min_window_rows:
            self._set("waiting for traffic", window_rows=len(frame), result=None)
            return
        newest = frame["created_at"].max() if "created_at" in frame else None
        labelled = int(frame[TRUE_LABEL].notna().sum()) if TRUE_LABEL in frame else 0
        if (
            newest is not None
            and newest == episode.newest_judged
            and labelled == episode.labelled_judged
            and not self._pending(episode)
            and not self._drop_pending(episode)
        ):
            # Nothing new since the last verdict, which stands; the same rows count only once.
            # (Labels that came for the window's rows are news: the realized metrics fill in.)
            self.status.checked_at = datetime.now(UTC).isoformat()
            return
        episode.labelled_judged = labelled
        if episode.reference is None:
            started = time.monotonic()
            episode.reference = self._reference(model)
            log.info(
                "reference of %s:%s: %d rows at %s, prepared in %.1f s",
                model.name,
                model.version,
                episode.reference.rows,
                model.data_commit[:12],
                time.monotonic() - started,
            )
        result = compute_drift(
            episode.reference,
            frame,
            self.spec,
            share_threshold=self.settings.drift_share_threshold,
            label_threshold=model.threshold,
        )
        self.metrics.record(model.name, result)
        self._estimate(model, frame, new_window=newest != episode.newest_judged)
        if newest != episode.newest_judged:
            episode.newest_judged = newest
            self.status.windows_judged += 1
            episode.consecutive = episode.consecutive + 1 if result.dataset_drift else 0
            if not result.dataset_drift:
                episode.declared = False
        self._set(
            "drifting" if result.dataset_drift else "in distribution",
            window_rows=len(frame),
            consecutive_drifted=episode.consecutive,
            drift_declared=episode.declared,
            result=result.as_dict(),
        )
        if self._pending(episode):
            self._declare(model, episode, frame, result)

    def _drop_pending(self, episode: _Episode) -> bool:
        return (
            self.settings.declare_estimated_drop
            and episode.below_floor >= self.settings.consecutive_windows
            and not episode.drop_declared
        )

    def _pending(self, episode: _Episode) -> bool:
        return episode.consecutive >= self.settings.consecutive_windows and not episode.declared

    def _declare(
        self, model: ProductionModel, episode: _Episode, frame: pd.DataFrame, result: DriftResult
    ) -> None:
        assert episode.reference is not None
        report = self._store_report(model, episode.reference, frame, result)
        try:
            event = self._announce(
                model,
                DRIFT_DETECTED,
                {
                    "window_rows": result.window_rows,
                    "drift_share": result.drifted_share,
                    "share_threshold": result.share_threshold,
                    "drifted_features": result.drifted_features,
                    "feature_scores": {f.feature: f.score for f in result.features},
                    "prediction_drift": None
                    if result.prediction is None
                    else result.prediction.score,
                    "performance": None
                    if result.performance is None
                    else dict(result.performance.metrics),
                    "consecutive_windows": episode.consecutive,
                    "report": report,
                },
                "drift declared but",
            )
        except EventNotDelivered as problem:
            self.status.problem = str(problem)
            self.status.last_report = report
            return
        episode.declared = True
        self.metrics.retrain_triggered.inc()
        self._annotate(
            f"drift on {model.name}:{model.version}: {result.drifted_share:.0%} of features "
            f"({', '.join(result.drifted_features)}); report {report}",
            ["drift", model.name],
        )
        self.status.drift_declared = True
        self.status.state = "drift declared"
        self.status.last_event_id = event.id
        self.status.last_report = report
        log.warning(
            "drift declared for %s:%s (share %.2f: %s); report %s",
            model.name,
            model.version,
            result.drifted_share,
            ", ".join(result.drifted_features),
            report,
        )
