"""The model registry: versions in the BentoML model store, stages and history in a database.

A model version is a BentoML model (``<dataset>-classifier:<version>``) saved with the labels
``dataset``, ``data_commit``, ``stage`` and ``git_sha`` and metadata holding its parameters,
holdout metrics, model digest and lineage (the batches it learned from). BentoML models are
immutable once saved, so the *current* stage of each version, the one production version per
model and the history of promotions live in a small SQLite database (``DRIFTLOOP_HOME/
registry.sqlite``); a promotion is one transaction, so exactly one version is production at any
moment. The registry knows the versions registered through it; other models in the same BentoML
store are not its business.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Stage = Literal["candidate", "production", "archived"]


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

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class HistoryEntry:
    at: float
    version: str
    event: str
    detail: str


SCHEMA = """
CREATE TABLE IF NOT EXISTS stages (
    model TEXT NOT NULL, version TEXT NOT NULL, stage TEXT NOT NULL, PRIMARY KEY (model, version));
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, version TEXT NOT NULL,
    event TEXT NOT NULL, detail TEXT NOT NULL, at REAL NOT NULL);
"""


def use_bentoml_home(path: Path) -> None:
    """Point BentoML at ``path`` (it reads BENTOML_HOME once, on first use of its store)."""
    current = os.environ.get("BENTOML_HOME")
    if current and Path(current).resolve() != path.resolve():
        import sys

        if "bentoml" in sys.modules:
            raise RegistryError(
                f"BentoML already uses {current}; cannot switch this process to {path}"
            )
    path.mkdir(parents=True, exist_ok=True)
    os.environ["BENTOML_HOME"] = str(path.resolve())


class ModelRegistry:
    """Registered versions of driftloop's models, on the BentoML store at ``bentoml_home``."""

    def __init__(self, bentoml_home: Path, database: Path) -> None:
        use_bentoml_home(bentoml_home)
        database.parent.mkdir(parents=True, exist_ok=True)
        self.database = database
        with sqlite3.connect(self.database, timeout=30) as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.database, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

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
    ) -> ModelVersion:
        """Save ``pipeline`` as a new candidate version of ``name``.

        ``spec`` is the dataset spec (as JSON): the inference service builds its input from it.
        """
        import bentoml

        model = bentoml.sklearn.save_model(
            name,
            pipeline,
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
            },
            signatures={"predict_proba": {"batchable": True}},
        )
        version = str(model.tag.version)
        with self._transaction() as db:
            db.execute("INSERT INTO stages VALUES (?, ?, 'candidate')", (name, version))
            self._log(db, name, version, "registered", f"trained on {data_commit}")
        return self.get(name, version)

    # -- reading ---------------------------------------------------------------------------------

    def get(self, name: str, version: str) -> ModelVersion:
        import bentoml

        try:
            model = bentoml.models.get(f"{name}:{version}")
        except bentoml.exceptions.BentoMLException:  # not found, or not a valid tag
            raise RegistryError(f"no model version {name}:{version}") from None
        return self._version(model, self._stages(name).get(str(model.tag.version), "candidate"))

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name`` registered here, oldest first."""
        found = [self.get(name, version) for version in self._stages(name)]
        return sorted(found, key=lambda version: version.created)

    def production(self, name: str) -> ModelVersion | None:
        for version, stage in self._stages(name).items():
            if stage == "production":
                return self.get(name, version)
        return None

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
        with self._transaction() as db:
            rows = db.execute(
                "SELECT at, version, event, detail FROM history WHERE model = ? ORDER BY id",
                (name,),
            ).fetchall()
        return [HistoryEntry(*row) for row in rows]

    # -- changing stages ---------------------------------------------------------------------

    def promote(self, name: str, version: str, reason: str) -> ModelVersion:
        """Make ``version`` the one production version of ``name``, atomically."""
        self.get(name, version)  # must exist
        with self._transaction() as db:
            db.execute(
                "UPDATE stages SET stage = 'archived' WHERE model = ? AND stage = 'production'",
                (name,),
            )
            db.execute(
                "INSERT INTO stages VALUES (?, ?, 'production') "
                "ON CONFLICT(model, version) DO UPDATE SET stage = 'production'",
                (name, version),
            )
            self._log(db, name, version, "promoted", reason)
        return self.get(name, version)

    def reject(self, name: str, version: str, reasons: list[str]) -> None:
        """Record that the gate refused ``version``; it stays a candidate."""
        with self._transaction() as db:
            self._log(db, name, version, "rejected", "; ".join(reasons))

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

    # -- helpers ---------------------------------------------------------------------------------

    def _stages(self, name: str) -> dict[str, Stage]:
        with self._transaction() as db:
            rows = db.execute(
                "SELECT version, stage FROM stages WHERE model = ?", (name,)
            ).fetchall()
        return {row[0]: row[1] for row in rows}

    @staticmethod
    def _log(db: sqlite3.Connection, name: str, version: str, event: str, detail: str) -> None:
        db.execute(
            "INSERT INTO history (model, version, event, detail, at) VALUES (?, ?, ?, ?, ?)",
            (name, version, event, detail, time.time()),
        )

    @staticmethod
    def _version(model: Any, stage: Stage) -> ModelVersion:
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
        )
