"""What a training run is asked to do: the options a project declares for a model and the
parameters recorded with each version.

Apart from ``driftloop.training`` so that reading a project file (``driftloop.project``), which
the inference service and the monitor do when they start, imports no scikit-learn.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

HoldoutMode = Literal["stratified", "newest_batch"]


class TrainOptions(BaseModel):
    """How a model is trained, besides its estimator (a project's ``train:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(default=42, ge=0)
    holdout: HoldoutMode = Field(
        default="stratified",
        description="stratified: a seeded stratified share of all rows; newest_batch: the batch "
        "that landed last (a time-based split).",
    )
    holdout_share: float = Field(default=0.25, gt=0, lt=1)
    threshold: float = Field(default=0.25, gt=0, lt=1, description="Score at or above: positive.")
    learning_rate: float = Field(default=0.05, gt=0)
    max_iter: int = Field(default=100, ge=1)
    max_leaf_nodes: int = Field(default=8, ge=2)
    l2_regularization: float = Field(default=1.0, ge=0)
    c: float = Field(
        default=1.0, gt=0, description="Inverse regularisation of logistic regression."
    )


class TrainParams(TrainOptions):
    """What a training run is asked to do; recorded with the model."""

    estimator: str = Field(
        default="hist_gradient_boosting",
        description="A built-in estimator, or module:function in the project folder.",
    )
