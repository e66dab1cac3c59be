"""Dataset specifications: the columns a batch must have, their types, and what values are sane.

A spec is a YAML file in a driftloop project (the examples' are under ``examples/``), named by
the project's ``driftloop.yaml``; the validation of every ingested batch and the inference
service's input model are derived from it, so the contract of a dataset is written down once.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from driftloop.documents import read_document
from driftloop.tasks import Task, task_of_target

FeatureType = Literal["numeric", "integer", "categorical", "boolean"]
TargetType = Literal["binary", "categorical", "numeric"]


class FeatureSpec(BaseModel):
    """One input column of the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: FeatureType
    description: str = ""
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] | None = None
    nullable: bool = False
    # How the feature relates to the positive class, for behavioural model tests:
    # "up" (more of it never lowers risk), "down", "none" (carries no signal), "mixed".
    signal: Literal["up", "down", "none", "mixed"] = "mixed"

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.type == "categorical" and not self.categories:
            raise ValueError(f"categorical feature {self.name!r} needs categories")
        if self.type != "categorical" and self.categories:
            raise ValueError(f"only categorical features have categories ({self.name!r})")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"feature {self.name!r}: minimum above maximum")
        return self


class DatasetSpec(BaseModel):
    """A dataset: target, optional id and event-time columns, features, batch expectations."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,62}$",
        description="The dataset's name: its folder in lakeFS (datasets/<name>/).",
    )
    description: str = ""
    target: str
    target_type: TargetType = Field(
        default="binary",
        description="binary (0 or 1: a binary model), categorical (one of `classes`: a "
        "multiclass model) or numeric (a finite number: a regression model).",
    )
    positive_label: str | None = Field(
        default=None, description="What target value 1 means, for people (binary targets)."
    )
    classes: tuple[str, ...] | None = Field(
        default=None, description="The classes of a categorical target, in a fixed order."
    )
    target_minimum: float | None = Field(
        default=None, description="The smallest plausible value of a numeric target."
    )
    target_maximum: float | None = Field(
        default=None, description="The largest plausible value of a numeric target."
    )
    id_column: str | None = None
    time_column: str | None = None
    features: tuple[FeatureSpec, ...]
    ignored_columns: tuple[str, ...] = Field(
        default=(),
        description="Columns a batch may carry that driftloop leaves out (free text, codes of "
        "other systems): not checked, not stored, not model inputs.",
    )
    min_rows: int = Field(default=1, ge=1)
    max_rows: int = Field(default=5_000_000, ge=1)
    label_share_min: float = Field(default=0.0, ge=0, le=1)
    label_share_max: float = Field(
        default=1.0, ge=0, le=1, description="Binary targets: the share of 1s a batch may have."
    )

    @model_validator(mode="after")
    def _target_consistent(self) -> DatasetSpec:
        if self.target_type == "categorical":
            if not self.classes or len(self.classes) < 2:
                raise ValueError("a categorical target needs `classes` (at least two)")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError("`classes` has a class twice")
        elif self.classes:
            raise ValueError(
                f"only a categorical target has `classes` (this one is {self.target_type})"
            )
        if self.target_type != "numeric" and (
            self.target_minimum is not None or self.target_maximum is not None
        ):
            raise ValueError("only a numeric target has target_minimum and target_maximum")
        names = self.feature_names
        for column in (self.target, self.id_column, self.time_column, *self.ignored_columns):
            if column is not None and column in names:
                raise ValueError(
                    f"{column!r} is both a feature and the target, id, time or an ignored column"
                )
        if len(set(names)) != len(names):
            raise ValueError("a feature is declared twice")
        return self

    @property
    def task(self) -> Task:
        """The task a model of this dataset does, as the target asks for it."""
        return task_of_target(self.target_type)

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    @property
    def columns(self) -> list[str]:
        """Every column of a batch, in canonical order."""
        extra = [c for c in (self.id_column, self.time_column) if c]
        return [*extra, *self.feature_names, self.target]

    def feature(self, name: str) -> FeatureSpec:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def schema_sha256(self) -> str:
        """Fingerprint of the batch schema (columns and types), recorded on every commit."""
        schema = [
            [self.id_column, "id"],
            [self.time_column, "time"],
            *[[f.name, f.type] for f in self.features],
            [self.target, "label" if self.target_type == "binary" else f"label:{self.target_type}"],
        ]
        return hashlib.sha256(json.dumps(schema).encode()).hexdigest()


def load_spec_file(path: Path) -> DatasetSpec:
    """The spec in the YAML file ``path``; a mistake raises DocumentError with file and line."""
    return read_document(path, DatasetSpec)


@cache
def load_spec(example: str) -> DatasetSpec:
    """The spec of the bundled example project ``example`` (``transactions``, ``breast_cancer``)."""
    from driftloop.project import example_project

    return example_project(example).model().spec
