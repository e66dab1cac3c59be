"""The model registry: versions in the BentoML model store, stages and history in a database.

A model version is a BentoML model (``<dataset>-classifier:<version>``) saved with the labels
``dataset``, ``data_commit``, ``stage`` and ``git_sha`` and metadata holding its parameters,
holdout metrics, model digest, lineage (the batches it learned from) and dataset spec. BentoML
models are immutable once saved, so the *current* stage of each version, the one production
version per model and the history of changes live in SQL, owned by :class:`StageStore`
(``DRIFTLOOP_STORAGE__REGISTRY_URL``: a SQLite file under DRIFTLOOP_HOME by default, PostgreSQL
where several machines share the registry; never SQLite on a network volume, whose locks its WAL
cannot rely on). A promotion is one transaction, so exactly one version is production at any
moment; reads take no lock. The registry knows the versions registered through it; other models
in the same BentoML store are not its business.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

if TYPE_CHECKING:
    from driftloop.datasets.spec import DatasetSpec
    from driftloop.settings import Settings
    from driftloop.training import TrainedModel

Stage = Literal["candidate", "production", "archived", "shadow", "canary"]
# A challenger on live traffic: at most one per model, beside its production version.
Role = Literal["shadow", "canary"]
ROLES: tuple[Role, ...] = ("shadow", "canary")


class RegistryError(RuntimeError):
    """A registry request that cannot be done (unknown version, nothing to roll back to)."""


@dataclass(frozen=True)
class BatchLineage:
    """One batch a model learned from, and the ingestion that landed it."""

    batch_id: str
    merge_commit: str
    rows: int
    run_url: str | None


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version, its current stage and where it came from."""

    name: str
    version: str
    stage: Stage
    dataset: str
    data_commit: str
    git_sha: str
    created: str
    metrics: dict[str, float]
    params: dict[str, Any]
    digest: str
    split: str
    batches: list[BatchLineage] = field(default_factory=list)
    # The dataset spec's features as saved with the model (names, types, categories).
    features: list[dict[str, Any]] = field(default_factory=list)
    # What the model answers: the spec's target type, and a categorical target's classes.
    target_type: str = "binary"
    classes: list[str] = field(default_factory=list)
    # The holdout calibration of a classifier's scores (driftloop.estimation); {}: none.
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        """binary, multiclass or regression (``driftloop.tasks``)."""
        return task_of(self.target_type)

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class HistoryEntry:
    at: float
    version: str
    event: str
    detail: str


metadata = sa.MetaData()
# The current stage of each version. At most one production row per model: the partial unique
# index is the invariant (SQLite and PostgreSQL both have them); a promotion also locks the
# model's rows first, so concurrent promotions wait for each other instead of failing.
stages = sa.Table(
    "registry_stages",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(100), primary_key=True),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Index(
        "one_production_version",
        "model",
        unique=True,
        sqlite_where=sa.text("stage = 'production'"),
        postgresql_where=sa.text("stage = 'production'"),
    ),
)
history = sa.Table(
    "registry_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False, index=True),
    sa.Column("version", sa.String(100), nullable=False),
    sa.Column("event", sa.String(40), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)


def registry_engine(url: str) -> sa.Engine:
    """An engine on the registry database; SQLite in WAL mode, so readers never wait."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    sqlite = url.startswith("sqlite")
    engine = sa.create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"timeout": 30} if sqlite else {"connect_timeout": 10},
    )
    if sqlite:

        @sa.event.listens_for(engine, "connect")
        def _wal(connection: Any, _: Any) -> None:
            connection.execute("PRAGMA journal_mode=WAL")

    return engine


class StageStore:
    """The registry's own storage: each version's stage and the history of changes, in SQL.

    Reads take no lock (one indexed SELECT); every change is one transaction. The inference
    service follows production through this alone, without touching the model store.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = registry_engine(url)
        try:
            metadata.create_all(self.engine)
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
            # Another process (a second inference replica) created the tables at the same
            # moment on PostgreSQL; now they exist, and this second pass only checks.
            metadata.create_all(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    def add(self, name: str, version: str, detail: str) -> None:
        """A new candidate version."""
        with self.engine.begin() as db:
            db.execute(stages.insert().values(model=name, version=version, stage="candidate"))
            _log(db, name, version, "registered", detail)

    def models(self) -> set[str]:
        """The name of every model with a version in the registry."""
        with self.engine.connect() as db:
            return {
                str(name) for name in db.execute(sa.select(stages.c.model).distinct()).scalars()
            }

    def of_model(self, name: str) -> dict[str, Stage]:
        """Every version of ``name`` with its stage."""
        with self.engine.connect() as db:
            rows = db.execute(
                sa.select(stages.c.version, stages.c.stage).where(stages.c.model == name)
            ).all()
        return {row[0]: row[1] for row in rows}

    def production_version(self, name: str) -> str | None:
        """The production version's id (what the inference service asks every few seconds)."""
        with self.engine.connect() as db:
            found = db.execute(
                sa.select(stages.c.version).where(
                    stages.c.model == name, stages.c.stage == "production"
                )
            ).scalar_one_or_none()
        return None if found is None else str(found)

    def challenger(self, name: str) -> tuple[str, Role] | None:
        """The version of ``name`` on a rollout (shadow or canary) and its role, if any."""
        with self.engine.connect() as db:
            found = db.execute(
                sa.select(stages.c.version, stages.c.stage).where(
                    stages.c.model == name, stages.c.stage.in_(ROLES)
                )
            ).first()
        return None if found is None else (str(found[0]), found[1])

    def start_rollout(self, name: str, version: str, role: Role, reason: str) -> str | None:
        """Put ``version`` on live traffic as ``role``; a challenger already there goes back to
        candidate (withdrawn, replaced). Returns the version it replaced."""
        with self.engine.begin() as db:
            db.execute(sa.select(stages.c.version).where(stages.c.model == name).with_for_update())
            replaced = db.execute(
                sa.select(stages.c.version).where(
                    stages.c.model == name, stages.c.stage.in_(ROLES), stages.c.version != version
                )
            ).scalar_one_or_none()
            if replaced is not None:
                db.execute(
                    stages.update()
                    .where(stages.c.model == name, stages.c.version == replaced)
                    .values(stage="candidate")
                )
                _log(db, name, str(replaced), "withdrawn", f"replaced by {version}")
            updated = db.execute(
                stages.update()
                .where(stages.c.model == name, stages.c.version == version)
                .values(stage=role)
            )
            if updated.rowcount == 0:
                db.execute(stages.insert().values(model=name, version=version, stage=role))
            _log(db, name, version, f"{role} started", reason)
        return None if replaced is None else str(replaced)

    def withdraw(self, name: str, version: str, reason: str) -> bool:
        """Take ``version`` off its rollout (it becomes a candidate again); False when it was
        not on one (already decided)."""
        with self.engine.begin() as db:
            updated = db.execute(
                stages.update()
                .where(
                    stages.c.model == name, stages.c.version == version, stages.c.stage.in_(ROLES)
                )
                .values(stage="candidate")
            )
            if updated.rowcount:
                _log(db, name, version, "withdrawn", reason)
        return bool(updated.rowcount)

    def rollout_started_at(self, name: str, version: str) -> float | None:
        """When ``version``'s current rollout started (epoch seconds), from the history."""
        with self.engine.connect() as db:
            found = db.execute(
                sa.select(history.c.at)
                .where(
                    history.c.model == name,
                    history.c.version == version,
                    history.c.event.in_([f"{role} started" for role in ROLES]),
                )
                .order_by(history.c.id.desc())
                .limit(1)
            ).scalar_one_or_none()
        return None if found is None else float(found)

    def history(self, name: str) -> list[HistoryEntry]:
        with self.engine.connect() as db:
            rows = db.execute(
                sa.select(history.c.at, history.c.version, history.c.event, history.c.detail)
                .where(history.c.model == name)
                .order_by(history.c.id)
            ).all()
        return [HistoryEntry(*row) for row in rows]

    def promote(self, name: str, version: str, reason: str) -> None:
        """Make ``version`` the one production version of ``name``, in one transaction."""
        with self.engine.begin() as db:
            # Lock the model's rows (PostgreSQL; SQLite has one writer at a time anyway), so a
            # concurrent promotion waits, then archives what this one promoted.
            db.execute(sa.select(stages.c.version).where(stages.c.model == name).with_for_update())
            db.execute(
                stages.update()
                .where(stages.c.model == name, stages.c.stage == "production")
                .values(stage="archived")
            )
            updated = db.execute(
                stages.update()
                .where(stages.c.model == name, stages.c.version == version)
                .values(stage="production")
            )
            if updated.rowcount == 0:  # a version in the store that was never registered here
                db.execute(stages.insert().values(model=name, version=version, stage="production"))
            _log(db, name, version, "promoted", reason)

    def reject(self, name: str, version: str, reasons: list[str]) -> None:
        with self.engine.begin() as db:
            _log(db, name, version, "rejected", "; ".join(reasons))


def _log(db: sa.Connection, name: str, version: str, event: str, detail: str) -> None:
    db.execute(
        history.insert().values(
            model=name, version=version, event=event, detail=detail, at=time.time()
        )
    )


def task_of(target_type: str) -> str:
    """The task of a model whose dataset's target is of ``target_type``."""
    return {"categorical": "multiclass", "numeric": "regression"}.get(target_type, "binary")


def describe(model: Any, stage: Stage = "candidate") -> ModelVersion:
    """A BentoML model of the registry as a :class:`ModelVersion`: the one decoder of its labels
    and metadata (the registry and the inference service both read versions through it)."""
    labels, metadata = model.info.labels, model.info.metadata
    return ModelVersion(
        name=model.tag.name,
        version=str(model.tag.version),
        stage=stage,
        dataset=labels.get("dataset", ""),
        data_commit=labels.get("data_commit", ""),
        git_sha=labels.get("git_sha", ""),
        created=model.info.creation_time.isoformat(),
        metrics=dict(metadata.get("metrics", {})),
        params=dict(metadata.get("params", {})),
        digest=str(metadata.get("digest", "")),
        split=str(metadata.get("split", "")),
        batches=[
            BatchLineage(**{**batch, "run_url": batch["run_url"] or None})
            for batch in metadata.get("batches", [])
        ],
        features=list(metadata.get("spec", {}).get("features", [])),
        target_type=str(metadata.get("spec", {}).get("target_type", "binary")),
        classes=[str(name) for name in metadata.get("spec", {}).get("classes") or []],
        calibration=dict(metadata.get("calibration") or {}),
    )


def use_bentoml_home(path: Path) -> None:
    """Point BentoML at ``path`` (it reads BENTOML_HOME once, on first use of its store)."""
    current = os.environ.get("BENTOML_HOME")
    if current and Path(current).resolve() != path.resolve() and "bentoml" in sys.modules:
        raise RegistryError(f"BentoML already uses {current}; cannot switch this process to {path}")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["BENTOML_HOME"] = str(path.resolve())


class ModelRegistry:
    """Registered versions of driftloop's models: the BentoML store at ``bentoml_home`` holds
    the models, a :class:`StageStore` at ``url`` (SQLite or PostgreSQL) their stages."""

    def __init__(self, bentoml_home: Path, url: str) -> None:
        use_bentoml_home(bentoml_home)
        self.stages = StageStore(url)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        return cls(settings.bentoml_home, settings.registry_url)

    def dispose(self) -> None:
        self.stages.dispose()

    # -- registering -----------------------------------------------------------------------------

    def register(
        self,
        name: str,
        pipeline: Any,
        *,
        dataset: str,
        data_commit: str,
        git_sha: str,
        metrics: dict[str, float],
        params: dict[str, Any],
        digest: str,
        split: str,
        batches: list[BatchLineage],
        spec: dict[str, Any],
        calibration: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Save ``pipeline`` as a new candidate version of ``name``.

        ``spec`` is the dataset spec (as JSON): the inference service builds its input from it.
        The pipeline's compiled scorer, when it has one that gives scikit-learn's scores exactly
        (:func:`driftloop.scoring.compile_checked`), is kept with it: the inference service
        scores through it without loading the pipeline or importing scikit-learn.
        """
        import bentoml

        from driftloop.scoring import STORED_KEY, compile_checked

        task = task_of(str(spec.get("target_type", "binary")))
        compiled = (
            None
            if task == "multiclass"
            else compile_checked(pipeline, list(spec.get("features", [])), task)
        )
        model = bentoml.sklearn.save_model(
            name,
            pipeline,
            custom_objects=None if compiled is None else {STORED_KEY: compiled.stored()},
            labels={
                "dataset": dataset,
                "data_commit": data_commit,
                "stage": "candidate",
                "git_sha": git_sha,
            },
            metadata={
                "params": params,
                "metrics": metrics,
                "digest": digest,
                "split": split,
                # BentoML metadata takes no None: a batch without a run URL stores "".
                "batches": [
                    {**batch.__dict__, "run_url": batch.run_url or ""} for batch in batches
                ],
                "spec": spec,
                **({"calibration": calibration} if calibration else {}),
            },
            signatures={
                method: {"batchable": True}
                for method in ("predict", "predict_proba")
                if hasattr(pipeline, method)  # a regressor has no predict_proba
            },
        )
        version = str(model.tag.version)
        self.stages.add(name, version, f"trained on {data_commit}")
        return self.get(name, version)

    def register_trained(
        self,
        name: str,
        trained: TrainedModel,
        *,
        spec: DatasetSpec,
        data_commit: str,
        git_sha: str,
        batches: list[BatchLineage],
    ) -> ModelVersion:
        """Save a model :func:`driftloop.training.train_model` made on dataset ``spec`` as a new
        candidate version of ``name``, with its metrics, parameters, digest and split."""
        return self.register(
            name,
            trained.pipeline,
            dataset=spec.name,
            data_commit=data_commit,
            git_sha=git_sha,
            metrics=trained.metrics.as_dict(),
            params=trained.params.model_dump(),
            digest=trained.digest,
            split=trained.split,
            batches=batches,
            spec=spec.model_dump(mode="json", exclude_none=True),
            calibration=trained.calibration,
        )

    # -- reading ---------------------------------------------------------------------------------

    def get(self, name: str, version: str) -> ModelVersion:
        import bentoml

        try:
            model = bentoml.models.get(f"{name}:{version}")
        except bentoml.exceptions.BentoMLException:  # not found, or not a valid tag
            raise RegistryError(f"no model version {name}:{version}") from None
        return describe(model, self.stages.of_model(name).get(str(model.tag.version), "candidate"))

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name`` registered here, oldest first."""
        found = [self.get(name, version) for version in self.stages.of_model(name)]
        return sorted(found, key=lambda version: version.created)

    def production(self, name: str) -> ModelVersion | None:
        version = self.stages.production_version(name)
        return None if version is None else self.get(name, version)

    def require_production(self, name: str, purpose: str) -> ModelVersion:
        """The production version of ``name``; RegistryError naming ``purpose`` when none."""
        production = self.production(name)
        if production is None:
            raise RegistryError(f"{name} has no production version to {purpose}")
        return production

    def load(self, name: str, version: str) -> Any:
        """The fitted pipeline of a version."""
        import bentoml

        return bentoml.sklearn.load_model(f"{name}:{version}")

    def history(self, name: str) -> list[HistoryEntry]:
        return self.stages.history(name)

    # -- changing stages ---------------------------------------------------------------------

    def promote(self, name: str, version: str, reason: str) -> ModelVersion:
        """Make ``version`` the one production version of ``name``, atomically."""
        self.get(name, version)  # must exist
        self.stages.promote(name, version, reason)
        return self.get(name, version)

    def reject(self, name: str, version: str, reasons: list[str]) -> None:
        """Record that the gate refused ``version``; it stays a candidate."""
        self.stages.reject(name, version, reasons)

    def challenger(self, name: str) -> ModelVersion | None:
        """The version of ``name`` on a rollout (its stage says shadow or canary), if any."""
        found = self.stages.challenger(name)
        return None if found is None else self.get(name, found[0])

    def start_rollout(self, name: str, version: str, role: Role, reason: str) -> ModelVersion:
        """Put ``version`` on live traffic as a shadow or a canary beside production."""
        self.get(name, version)  # must exist
        self.stages.start_rollout(name, version, role, reason)
        return self.get(name, version)

    def withdraw(self, name: str, version: str, reason: str) -> ModelVersion:
        """Take the challenger ``version`` off live traffic; it becomes a candidate again."""
        if not self.stages.withdraw(name, version, reason):
            raise RegistryError(f"{name}:{version} is not on a rollout")
        return self.get(name, version)

    def rollback(self, name: str) -> ModelVersion:
        """Promote again the version that was production before the current one."""
        entries = [e for e in self.history(name) if e.event == "promoted"]
        current = self.production(name)
        if current is None or len(entries) < 2:
            raise RegistryError(f"{name} has no earlier production version to roll back to")
        earlier = [e.version for e in entries if e.version != current.version]
        if not earlier:
            raise RegistryError(f"{name} has no earlier production version to roll back to")
        return self.promote(name, earlier[-1], f"rollback from {current.version}")
