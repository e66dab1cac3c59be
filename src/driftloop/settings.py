"""driftloop's settings: one pydantic-settings model, one nested area per component.

Every value comes from the environment (prefix ``DRIFTLOOP_``, nested delimiter ``__``) or from a
``.env`` file in the working directory. Nothing is read at import time: call :func:`get_settings`
where a program starts and pass the result down.

Every setting has a default that serves the embedded local stack, except secrets, which have none.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from driftloop.gate import GatePolicy

ENV_PREFIX = "DRIFTLOOP_"
NESTED_DELIMITER = "__"

# Values that people paste from examples; a secret set to one of these is a mistake, not a secret.
_PLACEHOLDER_SECRETS = frozenset(
    {"changeme", "change-me", "changethis", "secret", "password", "xxx"}
)


def _reject_placeholder(value: SecretStr | None) -> SecretStr | None:
    if value is not None and value.get_secret_value().strip().lower() in _PLACEHOLDER_SECRETS:
        raise ValueError("is a placeholder value; set a real secret")
    return value


Secret = Annotated[SecretStr | None, AfterValidator(_reject_placeholder)]
"""A secret: no default, never printed, and never one of the placeholders people paste."""


def _user_and_password(value: SecretStr | None) -> SecretStr | None:
    if value is not None and ":" not in value.get_secret_value():
        raise ValueError("is not `user:password` (basic auth)")
    return value


class _Area(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LakeFSSettings(_Area):
    """Where versioned data lives: real lakeFS in production, the embedded server locally."""

    endpoint: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8000"),
        description="Base URL of the lakeFS server (without /api/v1).",
    )
    access_key_id: Secret = Field(
        default=None, description="lakeFS access key id (secret: no default)."
    )
    secret_access_key: Secret = Field(
        default=None, description="lakeFS secret access key (secret: no default)."
    )
    repository: str = Field(
        default="driftloop",
        pattern=r"^[a-z0-9][a-z0-9-]{2,62}$",
        description="Repository that holds datasets and drift reports.",
    )
    default_branch: str = Field(
        default="main", pattern=r"^\w[-\w]*$", description="Branch that holds published data."
    )
    storage_namespace: str = Field(
        default="local://driftloop",
        description="Storage namespace used when the repository has to be created.",
    )
    embedded_host: str = Field(
        default="127.0.0.1", description="Host the embedded lakeFS-compatible server binds to."
    )
    embedded_port: int = Field(
        default=8000, ge=1, le=65535, description="Port of the embedded lakeFS-compatible server."
    )
    request_retries: int = Field(
        default=4, ge=0, description="Retries on connection errors and 5xx answers."
    )
    request_timeout_seconds: PositiveFloat = Field(
        default=30.0, description="Timeout of one request to lakeFS."
    )

    def credentials_problem(self) -> str | None:
        """Why no lakeFS client can be built from these settings, or None."""
        if self.access_key_id is None or self.secret_access_key is None:
            return (
                "no lakeFS credentials: set DRIFTLOOP_LAKEFS__ACCESS_KEY_ID and "
                "DRIFTLOOP_LAKEFS__SECRET_ACCESS_KEY (environment or .env)"
            )
        return None


class PrefectSettings(_Area):
    """How driftloop reaches the Prefect server and names what it creates there."""

    api_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:4200/api"),
        description="Prefect API URL; clients never fall back to a throwaway server.",
    )
    api_key: Secret = Field(
        default=None, description="Prefect Cloud API key, when the server wants one."
    )
    auth_string: Annotated[Secret, AfterValidator(_user_and_password)] = Field(
        default=None,
        description="`user:password` of the Prefect server's basic auth "
        "(its PREFECT_SERVER_API_AUTH_STRING); `driftloop up` makes one when unset.",
    )
    work_pool: str = Field(
        default="driftloop-process", min_length=1, description="Process work pool for the flows."
    )
    ingest_cron: str = Field(
        default="0 * * * *", min_length=9, description="Cron schedule of the ingest deployment."
    )
    retrain_cooldown_seconds: PositiveInt = Field(
        default=600,
        description="After a model's drift event or alert starts a retrain, its further events "
        "start none for this long (measured between the events; manual runs do not count).",
    )
    retrain_label_wait_minutes: NonNegativeFloat = Field(
        default=60.0,
        description="A retrain an event started that finds too few new labels waits this long "
        "for them, looking every 30 s (an estimated drop comes before its labels); 0: none.",
    )
    judge_cron: str = Field(
        default="*/5 * * * *",
        min_length=9,
        description="Cron schedule of the judge deployment, which looks at every rollout (it "
        "also runs when the monitor reports new labelled traffic on one).",
    )
    worker_query_seconds: PositiveFloat = Field(
        default=2.0, description="How often the process worker polls for runs."
    )
    warm_runner: bool = Field(
        default=True,
        description="The stack's worker forks each flow run from a process that imported the "
        "flows once: a run is running ~1 s after the worker picks it up instead of 8-15 s, for "
        "about 310 MB (RSS) held while warm (see runner_cool_seconds). false: each run is a new "
        "interpreter, as Prefect's own worker starts it.",
    )
    runner_cool_seconds: NonNegativeFloat = Field(
        default=120.0,
        description="After this long without a flow run, the warm flow runner lets the flows' "
        "imports go (about 85 MB held instead of 310; runs it forks then import them "
        "themselves); an event that starts one of the pool's deployments (drift, an alert) "
        "warms it again before the run arrives. 0: it never cools.",
    )
    ingest_schedule_active: bool = Field(
        default=False,
        description="Whether the ingest deployment's cron schedule runs (paused in the embedded "
        "stack, where batches arrive by hand or from the demo).",
    )


class ServingSettings(_Area):
    """The BentoML inference service."""

    host: str = Field(default="127.0.0.1", description="Host the inference service binds to.")
    port: int = Field(default=3000, ge=1, le=65535, description="Port of the inference service.")
    api_key: Secret = Field(
        default=None,
        description="When set, /predict, /feedback and /model require it in the X-API-Key header.",
    )
    workers: PositiveInt = Field(
        default=1, description="Worker processes of the inference service."
    )
    max_batch_rows: PositiveInt = Field(
        default=1000, description="Largest list of records one /predict request may carry."
    )
    max_body_bytes: PositiveInt = Field(
        default=8 << 20,
        description="Largest request body /predict and /feedback read; larger ones get 413 "
        "before they are read whole.",
    )
    model_poll_seconds: PositiveFloat = Field(
        default=2.0, description="How often the service looks for a new production model."
    )
    mode: Literal["auto", "following", "pinned"] = Field(
        default="auto",
        description="following: answer with the registry's production version of each model "
        "and swap on promotion; pinned: answer with the models packaged with the service (a "
        "Bento's) and never read a registry; auto: following when a registry is configured "
        "(DRIFTLOOP_STORAGE__REGISTRY_URL, or the registry file in DRIFTLOOP_HOME exists), "
        "else pinned when the service carries a packaged model.",
    )
    model_tag: str | None = Field(
        default=None,
        description="A packaged model (name:version) to answer with while the registry has no "
        "production version of it (or in pinned mode); a Bento records its own models.",
    )
    log_predictions: bool = Field(
        default=True, description="Write every prediction to the prediction log."
    )
    log_queue_capacity: PositiveInt = Field(
        default=1_000_000,
        description="Predictions spooled on disk and not yet in the prediction log (while its "
        "database is down); beyond it new ones are dropped and counted.",
    )
    shadow_queue_capacity: PositiveInt = Field(
        default=10_000,
        description="Records waiting to be scored by a shadow challenger (off the request "
        "path); beyond it copies are dropped and counted, never waited for.",
    )
    spool_dir: Path | None = Field(
        default=None,
        description="Where answered predictions are spooled before they reach the prediction "
        "log (one file per worker, replayed after a crash); default: DRIFTLOOP_HOME/spool/"
        "predictions. It must be on a disk that outlives the worker process.",
    )
    access_log: bool = Field(
        default=False,
        description="BentoML's per-request access log on stdout (the prediction log already "
        "records every prediction).",
    )
    trace_requests: bool = Field(
        default=False,
        description="OpenTelemetry spans for /predict and /feedback (BentoML's tracing "
        "settings choose the exporter and sample rate).",
    )


class MonitorSettings(_Area):
    """The monitoring service: drift windows, thresholds, alert webhook."""

    host: str = Field(default="127.0.0.1", description="Host the monitor binds to.")
    port: int = Field(default=8001, ge=1, le=65535, description="Port of the monitor.")
    interval_seconds: PositiveFloat = Field(
        default=30.0, description="Seconds between two drift checks."
    )
    window_rows: PositiveInt = Field(
        default=500, description="Most recent predictions compared with the reference."
    )
    min_window_rows: PositiveInt = Field(
        default=100, description="A window with fewer rows than this is not judged."
    )
    drift_share_threshold: float = Field(
        default=0.3, gt=0, le=1, description="Share of drifted features that makes dataset drift."
    )
    consecutive_windows: PositiveInt = Field(
        default=3, description="Drifted windows in a row before drift is declared."
    )
    reference_rows: PositiveInt = Field(
        default=20_000,
        description="Most rows of the model's training data kept as the drift reference.",
    )
    alert_token: Secret = Field(
        default=None,
        description="Bearer token Alertmanager must send to /alerts (secret: no default).",
    )
    declare_estimated_drop: bool = Field(
        default=False,
        description="Send driftloop.performance.degraded (which starts a retrain) when the "
        "estimated primary metric's whole band lies below its floor for consecutive_windows "
        "windows, before labels arrive.",
    )
    performance_floor: float | None = Field(
        default=None,
        description="Floor of the primary metric for that declaration; none: the task's "
        "(ROC AUC 0.75, macro F1 0.6), the alert rules' own.",
    )


class GrafanaSettings(_Area):
    """Grafana, when there is one: dashboards sync and event annotations."""

    url: AnyHttpUrl | None = Field(
        default=None,
        description="Grafana to annotate model promotions and drift in; none: no annotations.",
    )
    token: Secret = Field(
        default=None, description="Grafana service-account token (secret: no default)."
    )
    prometheus_url: str = Field(
        default="http://127.0.0.1:9090",
        description="Prometheus URL as Grafana reaches it (the datasource `grafana sync` writes).",
    )


class StackSettings(_Area):
    """The embedded stack that `driftloop up` and `driftloop demo` run on one machine."""

    prometheus_port: int = Field(
        default=9090, ge=1, le=65535, description="Port of the stack's Prometheus."
    )
    alertmanager_port: int = Field(
        default=9093, ge=1, le=65535, description="Port of the stack's Alertmanager."
    )
    observability: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Start Prometheus and Alertmanager: auto when their binaries are on PATH, on "
        "(missing binaries are an error) or off.",
    )
    bootstrap: bool = Field(
        default=True,
        description="When no production model exists, `driftloop up` lands a built-in batch and "
        "trains one, so the inference service has a model to serve.",
    )
    start_timeout_seconds: PositiveFloat = Field(
        default=180.0, description="How long `driftloop up` waits for a component to be healthy."
    )
    restart_limit: int = Field(
        default=5,
        ge=0,
        description="Restarts of one component within restart_window_seconds before `driftloop "
        "up` gives up and stops the stack (0: a component that dies stops the stack).",
    )
    restart_window_seconds: PositiveFloat = Field(
        default=300.0, description="The window in which restart_limit counts a component's exits."
    )
    flow_run_log: Path | None = Field(
        default=None,
        description="A file a worker's flow runs write their output to, instead of through the "
        "worker (so a run outlives its worker); `driftloop up` sets its logs/worker.log.",
    )


class StorageSettings(_Area):
    """State: the prediction log and registry databases, and the BentoML model store."""

    prediction_log_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the prediction log; default: SQLite file under DRIFTLOOP_HOME."
        ),
    )
    registry_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the model registry's stages and history; default: SQLite file "
            "under DRIFTLOOP_HOME. Use PostgreSQL when several machines share the registry."
        ),
    )
    bentoml_home: Path | None = Field(
        default=None, description="BentoML model and Bento store; default: DRIFTLOOP_HOME/bentoml."
    )

    @field_validator("prediction_log_url", "registry_url")
    @classmethod
    def _known_database(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:// or postgresql:// SQLAlchemy URL")
        return value


class RegistrySettings(_Area):
    """The model registry and the champion/challenger gate."""

    gate: GatePolicy = Field(default_factory=GatePolicy, description="When a challenger wins.")


class Settings(BaseSettings):
    """All of driftloop's settings."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    home: Path = Field(
        default=Path(".driftloop"), description="Folder of local state: databases, logs, stores."
    )

    @field_validator("home")
    @classmethod
    def _a_folder(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} is a file, not a folder")
        return value

    project: Path | None = Field(
        default=None,
        description="The driftloop project (its driftloop.yaml, or the folder holding one); "
        "default: driftloop.yaml in the working directory, else the bundled transactions example.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level of driftloop's own loggers."
    )
    git_sha: str | None = Field(
        default=None,
        description="Commit of the code that trains, recorded with each model; default: HEAD of "
        "the checkout (set it in images, which have no .git).",
    )
    lakefs: LakeFSSettings = Field(default_factory=LakeFSSettings)
    prefect: PrefectSettings = Field(default_factory=PrefectSettings)
    grafana: GrafanaSettings = Field(default_factory=GrafanaSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    stack: StackSettings = Field(default_factory=StackSettings)

    @property
    def prediction_log_url(self) -> str:
        """The prediction log's SQLAlchemy URL, defaulting to a SQLite file in ``home``."""
        if self.storage.prediction_log_url:
            return self.storage.prediction_log_url
        return f"sqlite:///{(self.home / 'predictions.sqlite').resolve()}"

    @property
    def prediction_spool(self) -> Path:
        """Where the inference service spools predictions (default ``home/spool/predictions``)."""
        return (self.serving.spool_dir or self.home / "spool" / "predictions").resolve()

    @property
    def registry_url(self) -> str:
        """The model registry's SQLAlchemy URL, defaulting to a SQLite file in ``home``."""
        if self.storage.registry_url:
            return self.storage.registry_url
        return f"sqlite:///{(self.home / 'registry.sqlite').resolve()}"

    @property
    def bentoml_home(self) -> Path:
        """The BentoML store, defaulting to ``home/bentoml``."""
        return (self.storage.bentoml_home or self.home / "bentoml").resolve()


class SettingsError(ValueError):
    """Settings that cannot be used; the message names each environment variable at fault."""


def env_var_name(location: tuple[str | int, ...]) -> str:
    """The environment variable behind a settings field, e.g. ``DRIFTLOOP_MONITOR__PORT``."""
    return ENV_PREFIX + NESTED_DELIMITER.join(str(part).upper() for part in location)


def fast_monitor_env(
    *, interval_seconds: float = 1.0, consecutive_windows: int = 2, min_window_rows: int = 300
) -> dict[str, str]:
    """Settings, as environment variables, for a loop that closes in seconds: the demo, the
    benchmarks and the tests. The defaults (a check a minute, 1,000-row windows, three drifted
    windows) suit production traffic; these judge 500-row windows every ``interval_seconds``,
    and the service and the worker look for news every second or faster."""
    return {
        "DRIFTLOOP_MONITOR__INTERVAL_SECONDS": f"{interval_seconds:g}",
        "DRIFTLOOP_MONITOR__WINDOW_ROWS": "500",
        "DRIFTLOOP_MONITOR__MIN_WINDOW_ROWS": str(min_window_rows),
        "DRIFTLOOP_MONITOR__CONSECUTIVE_WINDOWS": str(consecutive_windows),
        "DRIFTLOOP_SERVING__MODEL_POLL_SECONDS": "0.5",
        "DRIFTLOOP_PREFECT__WORKER_QUERY_SECONDS": "1",
    }


def get_settings(**overrides: Any) -> Settings:
    """Read and validate the settings from the environment and ``.env``.

    Raises:
        SettingsError: a value is invalid, or a DRIFTLOOP_ variable names no setting; the message
            names each variable at fault.
    """
    problems = _unknown_variables()
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        problems += [_describe_problem(item) for item in error.errors(include_url=False)]
    except PydanticSettingsError as error:  # a JSON-valued setting that is not JSON
        problems += _json_problems() or [str(error)]
    else:
        if not problems:
            return settings
    raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))


def _environment() -> dict[str, str]:
    """The DRIFTLOOP_ variables of ``.env`` and the environment (which wins)."""
    from dotenv import dotenv_values

    found = {k.upper(): v for k, v in dotenv_values(".env").items() if v is not None}
    found.update({k.upper(): v for k, v in os.environ.items()})
    return {k: v for k, v in found.items() if k.startswith(ENV_PREFIX)}


def _known_variables() -> dict[str, Any]:
    """Every setting's variable name -> its field's annotation."""
    found: dict[str, Any] = {}

    def walk(model: type[BaseModel], prefix: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            nested = isinstance(annotation, type) and issubclass(annotation, BaseModel)
            if not nested or annotation is GatePolicy:  # the gate is also settable whole, as JSON
                found[env_var_name((*prefix, name))] = annotation
            if nested:
                walk(annotation, (*prefix, name))  # type: ignore[arg-type]

    walk(Settings, ())
    return found


def _unknown_variables() -> list[str]:
    """A DRIFTLOOP_<AREA>__... variable of an area that does not exist, or one that is one typo
    away from a setting: refused, as pydantic refuses an unknown field inside an area. Other
    DRIFTLOOP_ variables (DRIFTLOOP_CODE_DIR for prefect.yaml, test switches) are not ours."""
    known = _known_variables()
    areas = {name.split(NESTED_DELIMITER)[0] for name in known if NESTED_DELIMITER in name}
    problems = []
    for name in sorted(_environment()):
        if name in known:
            continue
        area = name.split(NESTED_DELIMITER)[0]
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.85)
        if NESTED_DELIMITER in name and area not in areas:
            hint = f"; did you mean {close[0]}?" if close else ""
            problems.append(
                f"{name}: there is no settings area {area.removeprefix(ENV_PREFIX)}{hint}"
            )
        elif name == ENV_PREFIX + "DATASET":
            problems.append(
                f"{name}: datasets are declared by a project now; set DRIFTLOOP_PROJECT to its "
                "driftloop.yaml (the built-ins are the example projects examples/transactions "
                "and examples/breast_cancer)"
            )
        elif NESTED_DELIMITER not in name and close:
            problems.append(f"{name}: no setting of that name; did you mean {close[0]}?")
    return problems


def _json_problems() -> list[str]:
    """The variables of JSON-valued settings (dicts, lists) whose value is not JSON."""
    problems = []
    known = _known_variables()
    for name, value in _environment().items():
        annotation = repr(known.get(name, ""))
        if "dict" in annotation or "list" in annotation or "GatePolicy" in annotation:
            try:
                json.loads(value)
            except ValueError:
                problems.append(f'{name}: must be JSON, e.g. {{"pr_auc": 0.02}} (got {value!r})')
    return problems


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The settings with ``env``'s DRIFTLOOP_ variables on top of the process environment and
    ``.env``, without changing the process environment (a component gets ``env`` as its own; this
    process gets the same values as an object)."""
    overrides: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        *areas, field = name.removeprefix(ENV_PREFIX).lower().split(NESTED_DELIMITER)
        target = overrides
        for area in areas:
            target = target.setdefault(area, {})
        target[field] = value
    return get_settings(**overrides)


def _describe_problem(item: ErrorDetails) -> str:
    location = tuple(item["loc"])
    text = f"{env_var_name(location)}: {item['msg']}"
    # The rejected value helps, except where it is a secret: that is never echoed.
    if item["type"] != "missing" and not _is_secret(location):
        text += f" (got {item.get('input')!r})"
    return text


def _is_secret(location: tuple[str | int, ...]) -> bool:
    model: type[BaseModel] = Settings
    for part in location:
        field = model.model_fields.get(str(part))
        if field is None:
            return False
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        return "SecretStr" in repr(annotation)
    return False


def mask_url(url: str) -> str:
    """A URL with its password replaced by ``***``, safe to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def effective_settings(settings: Settings) -> Iterator[tuple[str, str, str]]:
    """Each setting as (environment variable, printable value, description), secrets masked."""
    yield from _walk(settings, ())


def _walk(model: BaseModel, prefix: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        location = (*prefix, name)
        if isinstance(value, BaseModel):
            yield from _walk(value, location)
            continue
        yield env_var_name(location), _printable(value), field.description or ""


def secret_variables() -> set[str]:
    """The environment variable of every secret setting (and Prefect's own secret variables)."""
    names = {name for name in _known_variables() if _is_secret(_location(name))}
    return names | {"PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING"}


def secret_values(settings: Settings) -> dict[str, str]:
    """The secrets that are set, by environment variable."""
    found = {}

    def walk(model: BaseModel, prefix: tuple[str, ...]) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                walk(value, (*prefix, name))
            elif isinstance(value, SecretStr):
                found[env_var_name((*prefix, name))] = value.get_secret_value()

    walk(settings, ())
    return found


def _location(name: str) -> tuple[str, ...]:
    return tuple(name.removeprefix(ENV_PREFIX).lower().split(NESTED_DELIMITER))


def _printable(value: object) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, SecretStr):
        return "********"
    text = str(value)
    if "://" in text:
        return mask_url(text)
    return text
