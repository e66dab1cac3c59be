"""A driftloop project: a folder the user owns, with a ``driftloop.yaml`` that declares models.

::

    # driftloop.yaml
    models:
      - name: churn-model             # the model's name in the registry, events and metrics
        dataset: churn.yaml           # its dataset spec, relative to this file
        task: binary                  # binary | multiclass | regression
        estimator: hist_gradient_boosting   # a built-in, or module:function in this folder
        source: data/sample.csv       # batches `driftloop up` starts from when no model exists
        train: {seed: 7}              # training options (driftloop.training_options.TrainOptions)
        gate: {margin: 0.01}          # overrides of DRIFTLOOP_REGISTRY__GATE for this model
        monitor: {window_rows: 1000}  # overrides of DRIFTLOOP_MONITOR__* for this model
        rollout: shadow               # direct | shadow | canary, or {mode: canary, share: 0.1, ...}

Which project: ``DRIFTLOOP_PROJECT`` (the file or its folder), else ``driftloop.yaml`` in the
working directory, else the bundled example ``transactions``. The bundled examples are projects
like any other, under ``examples/`` in the repository (and ``driftloop/examples`` in the wheel).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    field_validator,
    model_validator,
)

from driftloop.datasets.spec import DatasetSpec, load_spec_file
from driftloop.documents import DocumentError, line_of, read_document
from driftloop.gate import GatePolicy, known_metric, known_metrics, policy_for
from driftloop.tasks import ALL_BUILTIN_ESTIMATORS, BUILTIN_ESTIMATORS, Task, task_of_target
from driftloop.training_options import TrainOptions, TrainParams

if TYPE_CHECKING:
    from driftloop.settings import MonitorSettings

PROJECT_FILE = "driftloop.yaml"
DEFAULT_EXAMPLE = "transactions"
MODEL_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
_USER_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ProjectError(ValueError):
    """No project where one was looked for, or a model it does not declare."""


def check_estimator(value: str) -> str:
    """``value`` if it names a built-in estimator or ``module:function``; ValueError if not."""
    if value in ALL_BUILTIN_ESTIMATORS or _USER_FUNCTION.match(value):
        return value
    raise ValueError(
        f"{value!r} is neither a built-in estimator ({', '.join(ALL_BUILTIN_ESTIMATORS)}) nor "
        "module:function"
    )


class GateOverrides(BaseModel):
    """What a model changes of the gate (``DRIFTLOOP_REGISTRY__GATE``); unset fields stay."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    primary_metric: Annotated[str, AfterValidator(known_metric)] | None = None
    margin: float | None = Field(default=None, ge=0)
    guards: Annotated[dict[str, float], AfterValidator(known_metrics)] | None = None
    floor: Annotated[dict[str, float], AfterValidator(known_metrics)] | None = None


class MonitorOverrides(BaseModel):
    """What a model changes of the monitor's windows and thresholds; unset fields stay."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_rows: PositiveInt | None = None
    min_window_rows: PositiveInt | None = None
    drift_share_threshold: float | None = Field(default=None, gt=0, le=1)
    consecutive_windows: PositiveInt | None = None
    reference_rows: PositiveInt | None = None
    declare_estimated_drop: bool | None = None
    performance_floor: float | None = None


class RolloutConfig(BaseModel):
    """How a challenger that passed the offline gate reaches production: at once (``direct``),
    or after a live judgement beside production as a ``shadow`` (scores a copy of every request,
    answers nobody) or a ``canary`` (answers ``share`` of the requests)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["direct", "shadow", "canary"] = "direct"
    share: float = Field(
        default=0.1, gt=0, lt=1, description="canary: the share of requests the canary answers"
    )
    entity_key: str | None = Field(
        default=None,
        description="canary: a feature whose value keeps each entity on one model (sticky); "
        "default: each request is routed on its own",
    )
    alpha: float = Field(
        default=0.05, gt=0, lt=0.5, description="the judge's error rate, valid at every look"
    )
    effect: float = Field(
        default=0.1,
        gt=0,
        description="the difference in per-row loss worth finding quickly, in standard "
        "deviations of the loss (the mSPRT's mixing scale)",
    )
    min_labels: PositiveInt = Field(
        default=200, description="labelled rows per model before the judge decides anything"
    )
    max_hours: float = Field(
        default=24.0, gt=0, description="a rollout undecided for longer raises an alert"
    )

    @model_validator(mode="before")
    @classmethod
    def _mode_alone(cls, value: Any) -> Any:
        """``rollout: shadow`` is short for ``rollout: {mode: shadow}``."""
        return {"mode": value} if isinstance(value, str) else value


class ModelConfig(BaseModel):
    """One model of a project, as its ``driftloop.yaml`` declares it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=MODEL_NAME, description="The model's name: registry, events, URLs.")
    dataset: str = Field(min_length=1, description="Its dataset spec, relative to the project.")
    task: Task | None = Field(
        default=None,
        description="binary, multiclass or regression; default: what the spec's target_type "
        "asks for (binary, categorical, numeric).",
    )
    estimator: Annotated[str, AfterValidator(check_estimator)] = "hist_gradient_boosting"
    source: str | None = Field(
        default=None,
        description="Where `driftloop up` takes a first batch from when the model has no "
        "production version (a file or folder relative to the project, or `builtin`).",
    )
    train: TrainOptions = Field(default_factory=TrainOptions)
    gate: GateOverrides = Field(default_factory=GateOverrides)
    monitor: MonitorOverrides = Field(default_factory=MonitorOverrides)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)


class ProjectDocument(BaseModel):
    """The whole ``driftloop.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[ModelConfig, ...] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: tuple[ModelConfig, ...]) -> tuple[ModelConfig, ...]:
        seen: set[str] = set()
        for model in models:
            if model.name in seen:
                raise ValueError(f"two models are named {model.name!r}")
            seen.add(model.name)
        return models


@dataclass(frozen=True)
class ProjectModel:
    """A declared model with its dataset spec loaded."""

    config: ModelConfig
    spec: DatasetSpec
    root: Path

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def task(self) -> Task:
        return self.spec.task  # a declared task that disagrees is refused at load

    @property
    def dataset(self) -> str:
        """The dataset's name: its folder in lakeFS (``datasets/<dataset>/``)."""
        return self.spec.name

    def train_params(self, **overrides: Any) -> TrainParams:
        """The project's training options and estimator, with ``overrides`` (not None) on top."""
        given = {name: value for name, value in overrides.items() if value is not None}
        return TrainParams(
            **{"estimator": self.config.estimator, **self.config.train.model_dump(), **given}
        )

    def gate_policy(self, setting: GatePolicy) -> GatePolicy:
        """The gate of this model: its task's defaults, what the gate setting sets explicitly,
        then the project's overrides.

        Raises:
            ValueError: the result names a metric this model's task does not record.
        """
        explicitly_set = setting.model_dump(include=setting.model_fields_set)
        overrides = self.config.gate.model_dump(exclude_none=True)
        return policy_for(self.task, explicitly_set, overrides)

    def monitor_settings(self, base: MonitorSettings) -> MonitorSettings:
        """``base`` (the monitor settings) with this model's window and threshold overrides."""
        changes = self.config.monitor.model_dump(exclude_none=True)
        return type(base).model_validate({**base.model_dump(), **changes})

    @property
    def source(self) -> str | None:
        """The model's first-batch source, with a relative path made absolute."""
        source = self.config.source
        if source is None or source == "builtin" or source.startswith("builtin:"):
            return source
        path = Path(source).expanduser()
        return str(path if path.is_absolute() else (self.root / path).resolve())


@dataclass(frozen=True)
class Project:
    """A project folder, its ``driftloop.yaml`` and the models it declares."""

    file: Path
    models: tuple[ProjectModel, ...]

    @property
    def root(self) -> Path:
        return self.file.parent

    @property
    def names(self) -> list[str]:
        return [model.name for model in self.models]

    def make_importable(self) -> None:
        """Put the project folder on ``sys.path`` when a model names its own estimator code:
        a model pickled with the project's classes loads only where they import."""
        own = any(m.config.estimator not in ALL_BUILTIN_ESTIMATORS for m in self.models)
        if own and str(self.root) not in sys.path:
            sys.path.insert(0, str(self.root))

    def model(self, name: str | None = None) -> ProjectModel:
        """The model called ``name``; without a name, the project's only model."""
        if name is None:
            if len(self.models) == 1:
                return self.models[0]
            raise ProjectError(
                f"{self.file} declares {len(self.models)} models ({', '.join(self.names)}): "
                "say which one"
            )
        for model in self.models:
            if model.name == name:
                return model
        raise ProjectError(
            f"{self.file} declares no model {name!r}; it declares {', '.join(self.names)}"
        )


def load_project(path: Path) -> Project:
    """Read a ``driftloop.yaml`` (or the one in folder ``path``) and every spec it names.

    Raises:
        DocumentError: the file or a spec is wrong (its message names file, line and field).
        ProjectError: there is no such file.
    """
    file = (path / PROJECT_FILE if path.is_dir() else path).resolve()
    if not file.is_file():
        raise ProjectError(f"no driftloop project at {path} (no {PROJECT_FILE} there)")
    document = read_document(file, ProjectDocument)
    models = []
    for index, config in enumerate(document.models):
        spec_file = (file.parent / config.dataset).resolve()
        if not spec_file.is_file():
            raise DocumentError(
                file,
                line_of(file, ("models", index, "dataset")),
                f"models[{index}].dataset",
                f"no dataset spec at {spec_file}",
            )
        model = ProjectModel(config, load_spec_file(spec_file), file.parent)
        _check_model(file, index, model)
        models.append(model)
    return Project(file, tuple(models))


def _check_model(file: Path, index: int, model: ProjectModel) -> None:
    """The model's task, estimator and gate agree with its spec; DocumentError where not."""

    def refuse(field: str, message: str) -> None:
        where = ("models", index, field)
        raise DocumentError(file, line_of(file, where), f"models[{index}].{field}", message)

    config, spec = model.config, model.spec
    expected = task_of_target(spec.target_type)
    if config.task is not None and config.task != expected:
        refuse(
            "task",
            f"{config.task} does not fit the target of {config.dataset} ({spec.target} is "
            f"{spec.target_type}: a {expected} task)",
        )
    builtin = config.estimator in ALL_BUILTIN_ESTIMATORS
    if builtin and config.estimator not in BUILTIN_ESTIMATORS[model.task]:
        refuse(
            "estimator",
            f"{config.estimator} is not a {model.task} estimator; choose "
            f"{', '.join(BUILTIN_ESTIMATORS[model.task])} or module:function",
        )
    try:
        policy_for(model.task, config.gate.model_dump(exclude_none=True))
    except ValueError as error:
        refuse("gate", str(error))
    key = config.rollout.entity_key
    if key is not None and key not in {feature.name for feature in spec.features}:
        refuse("rollout", f"entity_key {key} is not a feature of {config.dataset}")


def examples_root() -> Path:
    """Where the bundled example projects are: in the wheel, or in a source checkout."""
    packaged = Path(__file__).parent / "examples"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "examples"


def example_names() -> list[str]:
    """The bundled example projects."""
    return sorted(p.parent.name for p in examples_root().glob(f"*/{PROJECT_FILE}"))


def example_project(name: str) -> Project:
    """The bundled example project ``name`` (``transactions``, ``breast_cancer``)."""
    folder = examples_root() / name
    if not (folder / PROJECT_FILE).is_file():
        raise ProjectError(f"no example project {name!r}; examples: {', '.join(example_names())}")
    return load_project(folder)


def find_project(setting: Path | None, cwd: Path | None = None) -> Project:
    """The project driftloop works on: the setting, else ``./driftloop.yaml``, else the example.

    Args:
        setting: ``DRIFTLOOP_PROJECT`` (a ``driftloop.yaml`` or the folder holding one).
        cwd: the working directory (default: the process's).
    """
    if setting is not None:
        if not setting.exists():
            raise ProjectError(f"DRIFTLOOP_PROJECT={setting}: no such file or folder")
        return load_project(setting)
    here = (cwd or Path.cwd()) / PROJECT_FILE
    if here.is_file():
        return load_project(here)
    return example_project(DEFAULT_EXAMPLE)
