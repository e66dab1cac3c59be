"""The monitor with its real dependencies: the registry, the prediction log, lakeFS and Prefect.

    python -m services.monitor.server            (or: driftloop monitor serve)

Settings come from DRIFTLOOP_* (see ``driftloop config show``): the model registry and the
prediction log under DRIFTLOOP_HOME, lakeFS from ``lakefs.*``, Prefect's API from
``prefect.api_url``, the cadence and thresholds from ``monitor.*``.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from driftloop.events import Event, send_events
from driftloop.grafana import annotate_if_configured
from driftloop.prediction_log import PredictionLog
from driftloop.prefect_api import FlowRunOutcome, PrefectAccess, latest_finished_run
from driftloop.project import ProjectModel, find_project
from driftloop.registry import ModelRegistry
from driftloop.settings import Settings, get_settings
from services.monitor.app import create_app
from services.monitor.monitor import Monitor, MonitorMetrics, ProductionModel

if TYPE_CHECKING:
    # Imported where they are used: pandas, scipy, scikit-learn and lakeFS's SDK only once
    # there is traffic to judge (an idle monitor holds ~100 MB, not ~300).
    import pandas as pd

    from driftloop.drift import DriftResult, Reference
    from driftloop.lakefs_client import LakeFSClient
    from driftloop.rollout import Judgement

log = logging.getLogger("driftloop.monitor")


def report_path(model: str, at: datetime) -> str:
    """Where a drift report goes in lakeFS: ``reports/drift/<model>/<utc-timestamp>.html``."""
    return f"reports/drift/{model}/{at.strftime('%Y%m%dT%H%M%S%fZ')}.html"


class Dependencies:
    """What the monitor talks to, built from settings."""

    def __init__(self, settings: Settings, model: ProjectModel, only_model: bool) -> None:
        self.settings = settings
        self.model = model
        # A retrain started by hand without a model is about the project's only model.
        self.run_defaults = {"model": model.name} if only_model else {}
        self.spec = model.spec
        self.registry = ModelRegistry.from_settings(settings)
        self.prediction_log = PredictionLog(settings.prediction_log_url)
        self.prefect = PrefectAccess.of(settings.prefect)

    @functools.cached_property
    def lakefs(self) -> LakeFSClient:
        from driftloop.lakefs_client import LakeFSClient

        return LakeFSClient.from_settings(self.settings.lakefs)

    def production(self) -> ProductionModel | None:
        version = self.registry.production(self.model.name)
        if version is None:
            return None
        return ProductionModel(
            name=version.name,
            version=version.version,
            data_commit=version.data_commit,
            threshold=float(version.metrics.get("threshold", 0.5)),
            calibration=version.calibration,
        )

    def label_delays(self, since: datetime | None) -> tuple[list[float], datetime | None]:
        return self.prediction_log.label_delays(self.model.name, since)

    def window(self, model: ProductionModel, rows: int) -> pd.DataFrame:
        return self.prediction_log.window(model.name, model.version, rows)

    def window_size(self, model: ProductionModel, rows: int) -> int:
        return self.prediction_log.window_size(model.name, model.version, rows)

    def reference(self, model: ProductionModel) -> Reference:
        """The model's training data at its data commit, sampled, scored by the model itself."""
        from driftloop.drift import prepare_reference
        from driftloop.ingestion import read_dataset
        from driftloop.serving import frame_records, load_version

        frame = read_dataset(self.lakefs, model.data_commit, self.model.dataset)
        limit = self.model.monitor_settings(self.settings.monitor).reference_rows
        if len(frame) > limit:
            frame = frame.sample(n=limit, random_state=0).reset_index(drop=True)
        loaded = load_version(f"{model.name}:{model.version}")
        answers = loaded.answer(frame_records(frame, self.spec.feature_names))
        # What prediction drift compares: scores and values, or the classes answered.
        predictions = answers.labels if loaded.task == "multiclass" else answers.scores
        return prepare_reference(frame, self.spec, predictions)

    def rollout(self) -> Judgement | None:
        """The live evidence of the model's rollout, when a challenger is on live traffic (the
        judge flow decides on the same test; the monitor only looks and exports it)."""
        name = self.model.name
        found = self.registry.stages.challenger(name)
        champion = self.registry.stages.production_version(name)
        if found is None or champion is None:
            return None
        from driftloop.rollout import judge_rollout

        version, role = found
        started = self.registry.stages.rollout_started_at(name, version)
        return judge_rollout(
            self.prediction_log,
            model=name,
            task=self.model.task,
            champion=champion,
            challenger=version,
            role=role,
            started_at=datetime.fromtimestamp(started or 0, UTC),
            config=self.model.config.rollout,
        )

    def send(self, events: list[Event]) -> None:
        send_events(self.prefect, events)

    def latest_retrain(self) -> FlowRunOutcome | None:
        """How the latest retrain run of the monitored model ended."""
        return latest_finished_run(
            self.prefect,
            "retrain",
            parameters={"model": self.model.name},
            defaults=self.run_defaults,
        )

    def store_report(
        self,
        model: ProductionModel,
        reference: Reference,
        window: pd.DataFrame,
        result: DriftResult,
    ) -> str:
        """Render the Evidently report, judged as ``result`` was, and land it on main through
        its own branch."""
        from driftloop.drift import render_report
        from driftloop.ingestion import isolated_branch

        html = render_report(reference, window, self.spec, result)
        at = datetime.now(UTC)
        path = report_path(model.name, at)
        name = f"report-{model.version}-{at.strftime('%Y%m%d%H%M%S%f')}"
        main = self.settings.lakefs.default_branch
        with isolated_branch(self.lakefs, name, main) as branch:
            self.lakefs.upload(branch, path, html.encode(), content_type="text/html")
            self.lakefs.commit(
                branch,
                f"drift report for {model.name}:{model.version}",
                {"driftloop.model": model.name, "driftloop.model_version": model.version},
            )
            merged = self.lakefs.merge(branch, main, message=f"drift report {path}")
        return f"lakefs://{self.settings.lakefs.repository}/{merged}/{path}"


def build_app(settings: Settings | None = None) -> Starlette:
    """The monitor app with its real dependencies."""
    settings = settings or get_settings()
    project = find_project(settings.project)
    project.make_importable()
    registry = CollectorRegistry()
    metrics = MonitorMetrics(registry)
    monitors = []
    for model in project.models:  # each model: its own windows, thresholds, episode, events
        dependencies = Dependencies(settings, model, only_model=len(project.models) == 1)
        monitors.append(
            Monitor(
                spec=model.spec,
                model_name=model.name,
                settings=model.monitor_settings(settings.monitor),
                production=dependencies.production,
                window=dependencies.window,
                reference=dependencies.reference,
                send=dependencies.send,
                store_report=dependencies.store_report,
                registry=registry,
                annotate=lambda text, tags: annotate_if_configured(settings, text, tags),
                retrains=dependencies.latest_retrain,
                metrics=metrics,
                rollout=dependencies.rollout,
                label_delays=dependencies.label_delays,
                window_size=dependencies.window_size,
                # Tell Prefect (and so the judge) about every quarter of the labels it needs.
                progress_step=max(10, model.config.rollout.min_labels // 4),
            )
        )
    token = settings.monitor.alert_token
    return create_app(
        monitors,
        registry=registry,
        send=dependencies.send,
        alert_token=token.get_secret_value() if token else None,
        interval_seconds=settings.monitor.interval_seconds,
        known_models=dependencies.registry.stages.models,
    )


def main() -> None:
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    problem = settings.lakefs.credentials_problem()
    if problem is not None:  # it reads references and writes reports there
        raise SystemExit(f"monitor: {problem}")
    app = build_app(settings)
    log.info(
        "monitor on http://%s:%d (checks every %.0f s)",
        settings.monitor.host,
        settings.monitor.port,
        settings.monitor.interval_seconds,
    )
    uvicorn.run(app, host=settings.monitor.host, port=settings.monitor.port, log_level="warning")


if __name__ == "__main__":
    main()
