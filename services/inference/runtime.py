"""What each serving process of the inference service holds and does: the models it follows,
the prediction writer, the shadow scorer, and the handlers of its routes.

``service.py`` defines the BentoML service and imports this module only when a serving process
starts it (in ``InferenceService.__init__``): ``bentoml serve``'s own process, which reads the
service's definition and supervises the workers, never loads numpy, pandas, scikit-learn or the
prediction log (about 200 MB it held for nothing).
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import secrets
import signal
from collections import Counter as Counter_
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import orjson
from prometheus_client import Counter, Gauge, Histogram
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from driftloop.datasets.spec import DatasetSpec
from driftloop.http_bodies import BodyTooLarge, read_body
from driftloop.prediction_log import (
    FeedbackResult,
    PredictionGroup,
    PredictionLog,
    PredictionWriter,
    prediction_ids,
)
from driftloop.project import RolloutConfig
from driftloop.records import feedback_label, label_description, record_model, record_readers
from driftloop.registry import StageStore
from driftloop.serving import (
    ChallengerFollower,
    LoadedModel,
    ProductionFollower,
    ShadowScorer,
    canary_picks,
    observe_many,
)
from driftloop.serving_mode import ServingMode, StateError, prepare_state
from driftloop.settings import Settings

log = logging.getLogger("driftloop.inference")


@dataclass(frozen=True)
class Served:
    """One model of the project as the service answers for it: its input and label rules."""

    name: str
    spec: DatasetSpec
    records: TypeAdapter[list[Any]]
    label_wanted: str
    # The fast readers of a body: one record, a list (record_readers).
    one: TypeAdapter[Any]
    many: TypeAdapter[list[Any]]


@dataclass(frozen=True, slots=True)
class Records:
    """The records of a /predict body: as dicts, whether the body was one record (answered
    with one object), and as a JSON list (what the log stores)."""

    records: list[dict[str, Any]]
    single: bool
    as_json: bytes


def served_model(name: str, spec: DatasetSpec) -> Served:
    record = record_model(spec)
    adapter: TypeAdapter[list[Any]] = TypeAdapter(list[record])  # type: ignore[valid-type]
    return Served(name, spec, adapter, label_description(spec), *record_readers(spec))


# role: champion (production), or a rollout's challenger: shadow (scored a copy, answered
# nobody) or canary (answered the client).
PREDICTIONS = Counter(
    "driftloop_predictions", "Predictions made.", ["model", "version", "label", "role"]
)
SCORES = Histogram(
    "driftloop_prediction_score",
    "Scores of the predictions made.",
    ["role"],
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
)
CHAMPION_SCORES = SCORES.labels("champion")
SHADOW_SCORES = SCORES.labels("shadow")
SHADOW_DROPPED = Counter(
    "driftloop_shadow_dropped",
    "Copies of requests a shadow challenger had no room to score (its queue was full).",
    ["model"],
)
LOG_DROPPED = Counter(
    "driftloop_prediction_log_dropped", "Predictions the prediction log had no room for."
)
MODEL_INFO = Gauge(
    "driftloop_model_info",
    "The model version answering (1) in each live worker.",
    ["model", "version", "data_commit"],
    multiprocess_mode="liveall",
)


@functools.cache
def answered(model: str, version: str, label: int | str, role: str = "champion") -> Any:
    """The predictions counter of one (model, version, label, role); ``labels()`` costs a lock
    each."""
    return PREDICTIONS.labels(model, version, str(label), role)


def count_answers(model: LoadedModel, labels: list[int | str], role: str) -> None:
    """Count predictions by the label each answered: one increment per label, not per row (an
    increment of a multiprocess counter is a locked write to its file, ~1.4 µs)."""
    if len(labels) == 1:
        answered(model.name, model.version, labels[0], role).inc()
        return
    for label, count in Counter_(labels).items():
        answered(model.name, model.version, label, role).inc(count)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def problem(status: int, message: str, **extra: Any) -> Response:
    return json_response({"detail": message, **extra}, status)


def _parsed(raw: bytes) -> tuple[Any, Response | None]:
    """``raw`` parsed as JSON, or the 400 that says why it is not JSON."""
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as error:
        return None, problem(400, f"request body is not valid JSON: {error}")


def field_errors(error: ValidationError, single: bool) -> list[dict[str, str]]:
    """Each validation problem with the field it is about (``records[2].amount`` in lists)."""
    found = []
    for item in error.errors(include_url=False):
        location = list(item["loc"])
        index = location.pop(0) if location and isinstance(location[0], int) else None
        name = ".".join(str(part) for part in location) or "(record)"
        field = name if single or index is None else f"records[{index}].{name}"
        found.append({"field": field, "message": item["msg"], "type": item["type"]})
    return found


def stop_serving(message: str) -> NoReturn:
    """Log ``message`` as the one line that says why, and stop the whole `bentoml serve`: a
    worker that raised would be restarted by BentoML's supervisor forever, each time with the
    traceback of the startup hook, and never let an orchestrator see the failure."""
    log.error("%s", message)
    for handler in logging.getLogger().handlers + log.handlers:
        handler.flush()
    parent = os.getppid()
    try:
        command = Path(f"/proc/{parent}/cmdline").read_bytes()
    except OSError:  # not Linux: the worker stops, and BentoML restarts it
        command = b""
    if b"bentoml" in command:
        os.kill(parent, signal.SIGTERM)
    os._exit(2)


class InferenceRuntime:
    """Answers predictions with the production model and logs every one of them."""

    def __init__(
        self,
        settings: Settings,
        mode: ServingMode,
        served: dict[str, Served],
        rollouts: dict[str, RolloutConfig],
        openapi: bytes,
    ) -> None:
        self.settings, self.mode, self.served = settings, mode, served
        self.rollouts, self.openapi_body = rollouts, openapi
        # A project of one model also answers on the short routes (/predict, /feedback, /model).
        self.only = next(iter(served.values())) if len(served) == 1 else None
        # BentoML's logging passes warnings on; driftloop's own loggers follow its setting.
        logging.getLogger("driftloop").setLevel(settings.log_level)
        try:
            folders = prepare_state(settings, mode)
        except StateError as error:
            stop_serving(str(error))
        log.info(
            "serving %s (%s: %s); state in %s",
            ", ".join(served),
            mode.mode,
            mode.reason,
            ", ".join(map(str, folders)),
        )
        self.api_key = (
            settings.serving.api_key.get_secret_value() if settings.serving.api_key else None
        )
        self.max_rows = settings.serving.max_batch_rows
        self.max_body = settings.serving.max_body_bytes
        # The table is created on first use, so the service starts even with the store down.
        prediction_log = PredictionLog(settings.prediction_log_url)
        self.prediction_log = prediction_log
        self.writer: PredictionWriter | None = None
        if settings.serving.log_predictions:
            self.writer = PredictionWriter(
                prediction_log,
                settings.prediction_spool,
                capacity=settings.serving.log_queue_capacity,
                on_drop=LOG_DROPPED.inc,
            )
        stages = StageStore(settings.registry_url) if mode.mode == "following" else None
        # A rollout's challenger beside each model (following a registry only).
        self.challengers = {
            name: ChallengerFollower(name, stages, settings.serving.model_poll_seconds)
            for name in served
            if stages is not None
        }
        self.shadow = ShadowScorer(
            self._log_shadow,
            capacity=settings.serving.shadow_queue_capacity,
            on_drop=lambda model, count: SHADOW_DROPPED.labels(model).inc(count),
            on_scored=self._count_shadow,
        )
        # One follower per model: each swaps its own production version in on its own.
        self.followers = {
            name: ProductionFollower(
                name,
                stages,
                settings.serving.model_poll_seconds,
                # The packaged version: all there is when pinned, a stand-in when following.
                fallback_tag=mode.packaged.get(name),
                on_swap=self._announce,
            )
            for name in served
        }
        for follower in self.followers.values():
            follower.start()
        for challenger in self.challengers.values():
            challenger.start()
        # Everything imported and built so far lives as long as the process: keep it out of the
        # garbage collector's full passes, which otherwise stall every request for ~0.1 s.
        gc.freeze()

    def routes(self) -> list[Route]:
        """The service's routes: every model's, and the short ones of a project of one model."""
        routes = [
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/models", self.models, methods=["GET"]),
        ]
        for name, served in self.served.items():
            routes += self._routes(f"/models/{name}", served)
        if self.only is not None:
            routes += self._routes("", self.only)
        else:
            for path in ("/predict", "/feedback", "/model"):
                routes.append(Route(path, self.which_model, methods=["GET", "POST"]))
        return routes

    def _routes(self, prefix: str, served: Served) -> list[Route]:
        async def predict(request: Request) -> Response:
            return await self.predict(request, served)

        async def feedback(request: Request) -> Response:
            return await self.feedback(request, served)

        async def model(request: Request) -> Response:
            return await self.model(request, served)

        return [
            Route(f"{prefix}/predict", predict, methods=["POST"]),
            Route(f"{prefix}/feedback", feedback, methods=["POST"]),
            Route(prefix or "/model", model, methods=["GET"]),
        ]

    async def models(self, request: Request) -> Response:
        """Every model of the project: its routes, task and the version answering (or null)."""
        if refused := self._refused(request):
            return refused
        listed = []
        for name, served in self.served.items():
            current = self.followers[name].current
            listed.append(
                {
                    "name": name,
                    "task": served.spec.task,
                    "version": current.version if current else None,
                    "predict": f"/models/{name}/predict",
                }
            )
        return json_response({"models": listed, "mode": self.mode.mode, "reason": self.mode.reason})

    async def which_model(self, request: Request) -> Response:
        """The short routes of a project with several models: say which routes there are."""
        routes = ", ".join(
            f"/models/{name}{request.url.path.replace('/model', '')}" for name in self.served
        )
        return problem(
            404,
            f"this service serves {len(self.served)} models ({', '.join(self.served)}): "
            f"use {routes}",
        )

    def ready(self) -> bool:
        """Whether every model served has a version loaded."""
        return all(follower.current is not None for follower in self.followers.values())

    def shutdown(self) -> None:
        """Stop following the registry and write out every queued prediction."""
        for follower in self.followers.values():
            follower.stop()
        for challenger in self.challengers.values():
            challenger.stop()
        self.shadow.close(timeout=5.0)
        if self.writer is not None:
            self.writer.close()
        self.prediction_log.dispose()

    def _announce(self, previous: LoadedModel | None, model: LoadedModel) -> None:
        # Multiprocess gauges keep every label set they saw: mark the old version 0, not gone.
        if previous is not None:
            MODEL_INFO.labels(previous.name, previous.version, previous.data_commit).set(0)
        MODEL_INFO.labels(model.name, model.version, model.data_commit).set(1)

    def _refused(self, request: Request) -> Response | None:
        if self.api_key is None:
            return None
        given = request.headers.get("x-api-key", "")
        if secrets.compare_digest(given.encode(), self.api_key.encode()):
            return None
        return problem(401, "missing or wrong API key (header X-API-Key)")

    async def _raw_body(self, request: Request) -> tuple[bytes, Response | None]:
        """The body, or the response refusing the request (401, 413)."""
        if refused := self._refused(request):
            return b"", refused
        try:
            return await read_body(request, self.max_body), None
        except BodyTooLarge as error:
            return b"", problem(413, str(error))

    async def _json_body(self, request: Request) -> tuple[Any, Response | None]:
        """The parsed JSON body, or the response refusing the request (401, 413, 400)."""
        raw, refused = await self._raw_body(request)
        if refused:
            return None, refused
        return _parsed(raw)

    def _records(self, raw: bytes, served: Served) -> tuple[Records, Response | None]:
        """The records of a /predict body, or the response refusing it (400, 413, 422 naming
        the field at fault).

        A valid body is read and checked in one pass (``served.one``/``many``, records as dicts)
        and logged as it came; one that fails is read again as JSON and checked step by step,
        to say what is wrong."""
        single = raw.lstrip()[:1] == b"{"
        try:
            records = [served.one.validate_json(raw)] if single else served.many.validate_json(raw)
        except ValidationError:
            pass
        else:
            if records and len(records) <= self.max_rows:
                return Records(records, single, b"[" + raw + b"]" if single else raw), None
        none = Records([], single, b"")
        body, refused = _parsed(raw)
        if refused:
            return none, refused
        single = isinstance(body, dict)
        records = [body] if single else body
        if not isinstance(records, list) or not records:
            refused = problem(422, "send one record (a JSON object) or a non-empty list of them")
            return none, refused
        if len(records) > self.max_rows:
            refused = problem(
                413, f"{len(records)} records in one request; at most {self.max_rows} are accepted"
            )
            return none, refused
        try:
            served.records.validate_python(records)
        except ValidationError as error:
            errors = field_errors(error, single)
            return none, problem(422, "invalid record: " + errors[0]["field"], errors=errors)
        return Records(records, single, orjson.dumps(records)), None

    async def predict(self, request: Request, served: Served) -> Response:
        raw, refused = await self._raw_body(request)
        if refused:
            return refused
        body, refused = self._records(raw, served)
        if refused:
            return refused
        records, single = body.records, body.single
        model = self.followers[served.name].current
        if model is None:
            return problem(503, "no production model is loaded yet")
        challenger = self.challengers[served.name].current if self.challengers else None
        now = datetime.now(UTC)
        if challenger is not None and challenger[1] == "canary":
            rollout = self.rollouts[served.name]
            picks = canary_picks(records, rollout.share, rollout.entity_key)
            if any(picks):
                return self._answer_with_canary(model, challenger[0], records, picks, single, now)
        answers, logged = self._answers(model, records, now, body.as_json)
        if self.writer is not None:
            # In the spool file before the answer leaves: a killed worker loses none of them.
            self.writer.submit(logged)
            if challenger is not None and challenger[1] == "shadow":
                self.shadow.offer(challenger[0], records, logged.ids, now)
        return json_response(answers[0] if single else answers)

    def _answers(
        self,
        model: LoadedModel,
        records: list[dict[str, Any]],
        now: datetime,
        as_json: bytes,
        role: str | None = None,
    ) -> tuple[list[dict[str, Any]], PredictionGroup]:
        """``model``'s answers to ``records`` (``as_json``: the same as a JSON list) and the
        group of predictions to log (``role``: None for the champion, "canary" for a canary)."""
        if model.task != "binary" or role is not None:
            return self._answers_of_any_task(model, records, now, as_json, role)
        scores = model.score(records).tolist()
        threshold, version = model.threshold, model.version
        labels = [int(score >= threshold) for score in scores]
        ids = prediction_ids(len(records))
        answers = [
            {
                "prediction_id": prediction_id,
                "score": score,
                "label": label,
                "model_version": version,
            }
            for prediction_id, score, label in zip(ids, scores, labels, strict=True)
        ]
        count_answers(model, labels, "champion")  # type: ignore[arg-type]
        observe_many(CHAMPION_SCORES, scores)
        return answers, PredictionGroup(ids[0], now, model.name, version, as_json, scores, labels)

    def _answers_of_any_task(
        self,
        model: LoadedModel,
        records: list[dict[str, Any]],
        now: datetime,
        as_json: bytes,
        role: str | None,
    ) -> tuple[list[dict[str, Any]], PredictionGroup]:
        """The answers of a binary model (score and label), a multiclass model (class and
        probabilities) or a regression model (value); the champion's binary path above stays
        as lean as it was."""
        result = model.answer(records)
        answers: list[dict[str, Any]] = []
        shown_role = role or "champion"
        labels: list[int | str] = []
        scores, answered_labels = result.scores.tolist(), result.labels.tolist()
        ids = prediction_ids(len(records))
        for index, (score, label, prediction_id) in enumerate(
            zip(scores, answered_labels, ids, strict=True)
        ):
            if model.task == "multiclass":
                assert result.probabilities is not None
                shown: int | str = model.classes[label]
                body: dict[str, Any] = {
                    "prediction_id": prediction_id,
                    "class": shown,
                    "probabilities": dict(
                        zip(model.classes, result.probabilities[index].tolist(), strict=True)
                    ),
                }
            elif model.task == "regression":
                shown = ""
                body = {"prediction_id": prediction_id, "value": score}
            else:
                shown = label
                body = {"prediction_id": prediction_id, "score": score, "label": label}
            labels.append(shown)
            answers.append({**body, "model_version": model.version})
        count_answers(model, labels, shown_role)
        if model.task == "binary":
            observe_many(SCORES.labels(shown_role), scores)
        logged = PredictionGroup(
            ids[0], now, model.name, model.version, as_json, scores, answered_labels, role
        )
        return answers, logged

    def _answer_with_canary(
        self,
        model: LoadedModel,
        canary: LoadedModel,
        records: list[dict[str, Any]],
        picks: list[bool],
        single: bool,
        now: datetime,
    ) -> Response:
        """Answer the picked records with the canary and the rest with production, in order."""
        answers: list[dict[str, Any]] = [{}] * len(records)
        logged: list[PredictionGroup] = []
        for chosen, role in ((model, None), (canary, "canary")):
            indexes = [i for i, pick in enumerate(picks) if pick == (role is not None)]
            if not indexes:
                continue
            chosen_records = [records[i] for i in indexes]
            part, rows = self._answers(
                chosen, chosen_records, now, orjson.dumps(chosen_records), role
            )
            for index, answer in zip(indexes, part, strict=True):
                answers[index] = answer
            logged.append(rows)
        if self.writer is not None:
            self.writer.submit(*logged)
        return json_response(answers[0] if single else answers)

    def _rollout(self, name: str) -> dict[str, Any]:
        """The model's rollout: its mode, and the challenger on live traffic (if any)."""
        rollout = self.rollouts[name]
        challenger = self.challengers[name].current if self.challengers else None
        shown: dict[str, Any] = {
            "mode": rollout.mode,
            "challenger": challenger[0].version if challenger else None,
            "role": challenger[1] if challenger else None,
        }
        if challenger is not None and challenger[1] == "canary":
            shown |= {"share": rollout.share, "entity_key": rollout.entity_key}
        if challenger is not None and challenger[1] == "shadow":
            shown |= {"shadow_waiting": self.shadow.waiting, "shadow_dropped": self.shadow.dropped}
        return shown

    def _log_shadow(self, group: PredictionGroup) -> None:
        if self.writer is not None:  # not spooled: a shadow's copy answered nobody
            self.writer.submit(group, spool=False)

    def _count_shadow(self, model: LoadedModel, group: PredictionGroup) -> None:
        """Count a shadow's predictions by the label each would have answered."""
        labels: list[int | str] = [
            model.classes[label]
            if model.task == "multiclass"
            else ""
            if model.task == "regression"
            else label
            for label in group.labels
        ]
        count_answers(model, labels, "shadow")
        if model.task == "binary":
            observe_many(SHADOW_SCORES, group.scores)

    async def feedback(self, request: Request, served: Served) -> Response:
        body, refused = await self._json_body(request)
        if refused:
            return refused
        if not isinstance(body, dict):
            return problem(422, "send a JSON object with prediction_id and label")
        prediction_id = body.get("prediction_id")
        if not isinstance(prediction_id, str) or not prediction_id:
            return problem(422, "invalid feedback: prediction_id", field="prediction_id")
        label = feedback_label(served.spec, body.get("label"))
        if label is None:
            return problem(
                422, f"invalid feedback: label must be {served.label_wanted}", field="label"
            )
        unexpected = sorted(set(body) - {"prediction_id", "label"})
        if unexpected:
            return problem(
                422, f"invalid feedback: unknown field {unexpected[0]}", field=unexpected[0]
            )
        # A prediction made a moment ago may still be queued: write it out first.
        if self.writer is not None:
            await run_in_threadpool(self.writer.flush, 5.0)
        try:
            outcome = await run_in_threadpool(
                self.prediction_log.record_feedback, prediction_id, label, served.name
            )
        except SQLAlchemyError as error:
            log.warning("feedback for %s not stored: %s", prediction_id, error)
            return problem(503, "the prediction log is unavailable; send the feedback again later")
        if outcome == FeedbackResult.UNKNOWN:
            return problem(404, f"no prediction {prediction_id} of model {served.name}")
        if outcome == FeedbackResult.CONFLICT:
            return problem(409, f"prediction {prediction_id} already has a different label")
        return json_response({"prediction_id": prediction_id, "status": outcome})

    async def openapi(self, request: Request) -> Response:
        """The OpenAPI document of /predict, /feedback and /model."""
        return Response(self.openapi_body, media_type="application/json")

    async def model(self, request: Request, served: Served) -> Response:
        if refused := self._refused(request):
            return refused
        model = self.followers[served.name].current
        if model is None:
            return problem(503, "no production model is loaded yet")
        return json_response(
            {
                "name": model.name,
                "version": model.version,
                "data_commit": model.data_commit,
                "task": model.task,
                "metrics": model.metrics,
                # compiled: the trees walked directly, checked equal to scikit-learn at load
                "scoring": "compiled" if model.compiled is not None else "scikit-learn",
                "serving": self.mode.as_dict(served.name),
                "rollout": self._rollout(served.name),
            }
        )
