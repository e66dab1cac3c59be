"""What the inference service does, apart from HTTP: score, follow production (what it accepts
and answers is ``driftloop.records``).

- :class:`LoadedModel` is one model version ready to score.
- :class:`ProductionFollower` watches the registry and swaps in each new production version:
  the new version is loaded off to the side and then replaces the old one in one assignment, so
  every request is answered whole by one version or the other.
- :class:`ChallengerFollower` does the same for a rollout's challenger (shadow or canary);
  :class:`ShadowScorer` scores copies of requests with a shadow off the request path, and
  :func:`canary_picks` chooses the records a canary answers.
- :func:`observe_many` puts a batch of values into a Prometheus histogram at once.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property, partial
from typing import TYPE_CHECKING, Any

import numpy as np

from driftloop.prediction_log import PredictionGroup, prediction_ids
from driftloop.registry import Role, StageStore, describe
from driftloop.scoring import STORED_KEY, CompiledModel, compile_checked, records_frame
from driftloop.tasks import class_probabilities

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def frame_records(frame: pd.DataFrame, names: list[str]) -> list[dict[str, Any]]:
    """Rows of ``frame`` as records a client would send: plain Python values, None if missing."""
    values = frame[names].astype(object)
    return values.where(values.notna(), None).to_dict("records")  # type: ignore[return-value]


@dataclass(frozen=True)
class Answers:
    """What a model answers for a list of records, in the prediction log's terms.

    ``scores``: binary, the probability of 1; multiclass, the probability of the class
    answered; regression, the value. ``labels``: binary, 0 or 1; multiclass, the index of the
    class in the spec's ``classes``; regression, 0. ``probabilities``: multiclass only, one
    column per class.
    """

    scores: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray | None = None


@dataclass(frozen=True)
class LoadedModel:
    """One model version, loaded and ready to score."""

    name: str
    version: str
    data_commit: str
    metrics: dict[str, float]
    threshold: float
    features: list[dict[str, Any]]
    load_pipeline: Callable[[], Any]  # the fitted scikit-learn pipeline
    compiled: CompiledModel | None = None
    task: str = "binary"
    classes: tuple[str, ...] = ()

    @cached_property
    def pipeline(self) -> Any:
        """The fitted pipeline, loaded (and scikit-learn imported) when first needed: a version
        that scores through its compiled form never needs it."""
        return self.load_pipeline()

    def frame(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        return records_frame(self.features, records)

    def score(self, records: list[dict[str, Any]]) -> np.ndarray:
        """The positive-class score of each record, a regressor's value, or the probability of
        the class a multiclass model answers (the compiled path when there is one)."""
        if self.task == "multiclass":
            return self.answer(records).scores
        if self.compiled is not None:
            return self.compiled.score(records)
        if self.task == "regression":
            return np.asarray(self.pipeline.predict(self.frame(records)), dtype=np.float64)
        scores: np.ndarray = self.pipeline.predict_proba(self.frame(records))[:, 1]
        return scores

    def answer(self, records: list[dict[str, Any]]) -> Answers:
        """The model's answers to ``records`` (see :class:`Answers`)."""
        if self.task == "multiclass":
            probabilities = class_probabilities(
                self.pipeline, self.frame(records), len(self.classes)
            )
            labels = probabilities.argmax(axis=1)
            scores = probabilities[np.arange(len(labels)), labels]
            return Answers(scores, labels, probabilities)
        scores = self.score(records)
        if self.task == "regression":
            return Answers(scores, np.zeros(len(scores), dtype=np.int64))
        return Answers(scores, (scores >= self.threshold).astype(np.int64))


def load_version(tag: str) -> LoadedModel:
    """Load ``name:version`` from the BentoML store.

    A version registered with its compiled scorer (checked against scikit-learn when it was
    registered: :func:`driftloop.scoring.compile_checked`) scores through it, and its pipeline
    is not loaded: neither scikit-learn nor pandas is imported. An older version, or one whose
    scorer was stored in another format, is compiled and checked here, as it always was.
    """
    import bentoml

    model = bentoml.models.get(tag)
    version = describe(model)
    compiled = pipeline = None
    if version.task != "multiclass":
        stored = model.custom_objects.get(STORED_KEY)
        compiled = None if stored is None else CompiledModel.from_stored(stored)
    if compiled is None:  # scored through the pipeline, or compiled from it: loaded now
        pipeline = _pipeline_of(model)
        if version.task != "multiclass":
            compiled = compile_checked(pipeline, version.features, version.task)
    return LoadedModel(
        name=version.name,
        version=version.version,
        data_commit=version.data_commit,
        metrics=version.metrics,
        threshold=float(version.metrics.get("threshold", 0.5)),
        features=version.features,
        load_pipeline=partial(_pipeline_of, model, pipeline),
        compiled=compiled,
        task=version.task,
        classes=tuple(version.classes),
    )


def _pipeline_of(model: Any, loaded: Any = None) -> Any:
    """``loaded``, or else the fitted pipeline of the BentoML ``model``, loaded now."""
    import bentoml

    return loaded if loaded is not None else bentoml.sklearn.load_model(model)


class _Poller:
    """Calls ``check()`` now and then every ``poll_seconds`` on a daemon thread; a check that
    raises is logged (``what`` says what was being followed) and the next one runs as usual."""

    what = "the production model"

    def __init__(self, model_name: str, poll_seconds: float, thread_name: str) -> None:
        self.model_name = model_name
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def check(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self._check_logged()

    def _check_logged(self) -> None:
        try:
            self.check()
        except Exception:  # a broken registry or store must not stop the service answering
            log.exception("could not follow %s of %s", self.what, self.model_name)


class ProductionFollower(_Poller):
    """Keeps ``current`` on the registry's production version of one model."""

    def __init__(
        self,
        model_name: str,
        stages: StageStore | None,
        poll_seconds: float,
        *,
        fallback_tag: str | None = None,
        on_swap: Callable[[LoadedModel | None, LoadedModel], None] = lambda old, new: None,
    ) -> None:
        super().__init__(model_name, poll_seconds, "production-follower")
        self.stages = stages
        self.fallback_tag = fallback_tag
        self.on_swap = on_swap
        self.current: LoadedModel | None = None

    def start(self) -> None:
        """Load the production version now if there is one, then keep following it (a pinned
        follower, without a registry, loads its packaged version and stops there)."""
        self._check_logged()
        if self.stages is not None or self.current is None:
            self._thread.start()

    def check(self) -> None:
        """Load and switch to the production version if it changed (to the packaged version
        while there is none, or while the registry cannot be read and nothing is loaded)."""
        try:
            wanted = (
                None if self.stages is None else self.stages.production_version(self.model_name)
            )
        except Exception:
            if self.current is not None or self.fallback_tag is None:
                raise
            log.warning(
                "the registry cannot be read: answering with the packaged %s until it can",
                self.fallback_tag,
                exc_info=True,
            )
            wanted = None
        tag = f"{self.model_name}:{wanted}" if wanted else self.fallback_tag
        if tag is None or (self.current and f"{self.model_name}:{self.current.version}" == tag):
            return
        loaded = load_version(tag)
        previous, self.current = self.current, loaded  # a request sees the old or the new one
        log.info("now serving %s:%s", loaded.name, loaded.version)
        self.on_swap(previous, loaded)


class ChallengerFollower(_Poller):
    """Keeps ``current`` on the model's rollout challenger: ``(model, role)`` while a version is
    on live traffic as a shadow or a canary, else None (withdrawn, or promoted: production's
    follower takes it from there)."""

    what = "the rollout"  # the champion keeps answering whatever happens to the challenger

    def __init__(self, model_name: str, stages: StageStore, poll_seconds: float) -> None:
        super().__init__(model_name, poll_seconds, "challenger-follower")
        self.stages = stages
        self.current: tuple[LoadedModel, Role] | None = None

    def start(self) -> None:
        self._check_logged()
        self._thread.start()

    def check(self) -> None:
        found = self.stages.challenger(self.model_name)
        if found is None:
            if self.current is not None:
                log.info("%s:%s is off live traffic", self.model_name, self.current[0].version)
            self.current = None
            return
        version, role = found
        if self.current is not None and (self.current[0].version, self.current[1]) == found:
            return
        same = self.current is not None and self.current[0].version == version
        loaded = (
            self.current[0]
            if same and self.current
            else load_version(f"{self.model_name}:{version}")
        )
        self.current = (loaded, role)
        log.info("%s:%s is on live traffic as a %s", self.model_name, version, role)


def canary_bucket(value: object) -> float:
    """A stable number in [0, 1) for an entity's key value: the same entity, the same model."""
    digest = hashlib.blake2b(str(value).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def canary_picks(records: list[dict[str, Any]], share: float, entity_key: str | None) -> list[bool]:
    """Which records the canary answers: ``share`` of them, by entity when a key is given
    (sticky), else each record on its own."""
    if entity_key is None:
        return [random.random() < share for _ in records]
    return [canary_bucket(record.get(entity_key)) < share for record in records]


def observe_many(histogram: Any, values: list[float]) -> None:
    """``histogram.observe`` of each value, with one increment per bucket it fills and one of
    the sum (prometheus_client keeps a child's own count per bucket in ``_buckets`` beside
    ``_upper_bounds`` and ``_sum``; a child without them gets one observe per value). An
    increment of a multiprocess metric is a locked write to its file: ~2.8 µs a value for
    ``observe``."""
    bounds = getattr(histogram, "_upper_bounds", None)
    if len(values) == 1 or bounds is None or not hasattr(histogram, "_buckets"):
        for value in values:
            histogram.observe(value)
        return
    # observe() fills the first bucket whose bound is >= the value (the last bound is +Inf).
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    histogram._sum.inc(sum(values))
    for index in np.flatnonzero(counts[: len(bounds)]).tolist():
        histogram._buckets[index].inc(int(counts[index]))


@dataclass
class _ShadowWork:
    model: LoadedModel
    records: list[dict[str, Any]]
    champion_ids: list[str]
    created_at: datetime


class ShadowScorer:
    """Scores a copy of every answered request with the shadow model, off the request path.

    :meth:`offer` only appends to a bounded queue (``capacity`` records) and returns; past it,
    records are dropped and counted (``on_drop``), never waited for. A thread takes up to
    ``batch_rows`` records at a time, scores them in one call and hands them as one group (role
    ``shadow``, ``paired_with`` the champion's prediction of each record) to ``submit``;
    it lets a batch gather for ``linger_seconds`` first (a scikit-learn pipeline costs about the
    same for one row as for fifty).
    """

    def __init__(
        self,
        submit: Callable[[PredictionGroup], None],
        *,
        capacity: int = 10_000,
        batch_rows: int = 512,
        linger_seconds: float = 0.05,
        on_drop: Callable[[str, int], None] = lambda model, count: None,
        on_scored: Callable[[LoadedModel, PredictionGroup], None] = lambda model, group: None,
    ) -> None:
        self.submit = submit
        self.capacity = capacity
        self.batch_rows = batch_rows
        self.linger_seconds = linger_seconds
        self.on_drop = on_drop
        self.on_scored = on_scored
        self.dropped = 0
        self.scored = 0
        self._work: deque[_ShadowWork] = deque()
        self._waiting = 0
        self._lock = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self._waiting

    def offer(
        self,
        model: LoadedModel,
        records: list[dict[str, Any]],
        champion_ids: list[str],
        created_at: datetime,
    ) -> None:
        with self._lock:
            if self._stop or self._waiting + len(records) > self.capacity:
                self.dropped += len(records)
                self.on_drop(model.name, len(records))
                return
            idle = not self._work
            self._work.append(_ShadowWork(model, records, champion_ids, created_at))
            self._waiting += len(records)
            # Wake the scorer only when it sleeps on an empty queue or a batch is full: while a
            # batch gathers it wakes at the linger's end anyway (a wake-up per request would
            # cost the request path a thread switch each).
            if idle or self._waiting >= self.batch_rows:
                self._lock.notify_all()

    def _take(self) -> list[_ShadowWork] | None:
        with self._lock:
            while not self._work and not self._stop:
                self._lock.wait()
            if not self._work:
                return None
            # Let a batch gather for a moment: scoring 50 rows costs about what 1 row does.
            deadline = time.monotonic() + self.linger_seconds
            while self._waiting < self.batch_rows and not self._stop:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            taken = [self._work.popleft()]
            rows = len(taken[0].records)
            while self._work and self._work[0].model is taken[0].model:
                if rows + len(self._work[0].records) > self.batch_rows:
                    break
                rows += len(self._work[0].records)
                taken.append(self._work.popleft())
            return taken

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            try:
                self._score(taken)
            except Exception:
                log.exception("shadow scoring of %d requests failed", len(taken))
            finally:
                with self._lock:
                    self._waiting -= sum(len(work.records) for work in taken)
                    self._lock.notify_all()

    def _score(self, taken: list[_ShadowWork]) -> None:
        model = taken[0].model
        records = [record for work in taken for record in work.records]
        answers = model.answer(records)
        scores, labels = answers.scores.tolist(), answers.labels.tolist()
        champions = [champion for work in taken for champion in work.champion_ids]
        # One group: no features (they are the paired champion rows', one copy in the log),
        # stamped with the newest champion time it holds a copy of.
        group = PredictionGroup(
            prediction_ids(1)[0],  # the others count up from it
            max(work.created_at for work in taken),
            model.name,
            model.version,
            b"[]",
            scores,
            [int(label) for label in labels],
            "shadow",
            champions,
        )
        self.submit(group)
        self.scored += group.size
        self.on_scored(model, group)

    def drain(self, timeout: float) -> bool:
        """Wait until every offered record is scored; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._waiting:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Score what is queued (up to ``timeout``), then stop."""
        self.drain(timeout)
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        self._thread.join(timeout)
