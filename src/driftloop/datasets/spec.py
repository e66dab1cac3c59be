"""Dataset specifications: the columns a batch must have, their types, and what values are sane.

Specs live as YAML files beside this module (``transactions.yaml``, ``breast_cancer.yaml``); the
validation of every ingested batch and, later, the inference service's input model are derived
from them, so the contract of a dataset is written down once.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

FeatureType = Literal["numeric", "integer", "categorical", "boolean"]
DATASETS = ("transactions", "breast_cancer")


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

    name: str
    description: str = ""
    target: str
    positive_label: str = Field(description="What target value 1 means, for people.")
    id_column: str | None = None
    time_column: str | None = None
    features: tuple[FeatureSpec, ...]
    min_rows: int = Field(default=1, ge=1)
    max_rows: int = Field(default=5_000_000, ge=1)
    label_share_min: float = Field(default=0.0, ge=0, le=1)
    label_share_max: float = Field(default=1.0, ge=0, le=1)

    @property
    def feature_names(self) -> list[str]:
        return [feature.name for feature in self.features]

    @property
    def columns(self) -> list[str]:
        """Every column of a batch, in canonical order."""
        extra = [c for c in (self.id_column, self.time_column) if c]
        return [*extra, *self.feature_names, self.target]

    @property
    def model_name(self) -> str:
        """The BentoML model name of this dataset's classifier."""
        return f"{self.name}-classifier"

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
            [self.target, "label"],
        ]
        return hashlib.sha256(json.dumps(schema).encode()).hexdigest()


@cache
def load_spec(name: str) -> DatasetSpec:
    """The shipped spec of dataset ``name``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; shipped datasets: {', '.join(DATASETS)}")
    text = resources.files("driftloop.datasets").joinpath(f"{name}.yaml").read_text()
    return DatasetSpec.model_validate(yaml.safe_load(text))
