"""Which model versions the inference service answers with, and where it keeps its state.

Two modes, chosen when the service starts and reported by ``/model``:

- *following*: a model registry is configured; the service answers with each model's production
  version and swaps when another is promoted (``serving.ProductionFollower``). A packaged model
  stands in while the registry has no production version or cannot be read.
- *pinned*: the service answers with the models packaged with it (a Bento built by
  ``driftloop package``) and never looks at a registry.

``DRIFTLOOP_SERVING__MODE`` chooses (``auto``, the default, ``following`` or ``pinned``); under
``auto`` a registry is configured when DRIFTLOOP_STORAGE__REGISTRY_URL is set or the default
registry file exists in DRIFTLOOP_HOME, and a service without one but with packaged models is
pinned.

A Bento records its models in its own files (:data:`PACKAGED_FILE`, beside the service's code),
so ``bentoml serve <bento>`` and the Bento's container both find them: the Bento's ``envs`` reach
only the container. A Bento served with DRIFTLOOP_HOME unset keeps its state (prediction log,
spool) in ``$BENTOML_HOME/driftloop``, beside the BentoML store it runs from and never inside the
Bento (which would be deleted or exported with it).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from driftloop.settings import Settings

PACKAGED_FILE = "driftloop-packaged.json"
"""The file in a Bento's ``src`` naming the model versions it carries."""

Mode = Literal["following", "pinned"]


class StateError(RuntimeError):
    """The service cannot create or write the folder it keeps its state in; the message names
    the setting that chose the folder."""


def write_packaged(folder: Path, tags: list[str]) -> Path:
    """Record the model versions (``name:version``) a Bento carries, in ``folder``."""
    path = folder / PACKAGED_FILE
    models = {tag.partition(":")[0]: tag for tag in tags}
    path.write_text(json.dumps({"models": models}, indent=2) + "\n")
    return path


def read_packaged(folder: Path) -> dict[str, str]:
    """The model versions recorded in ``folder`` (model name → tag); empty outside a Bento."""
    path = folder / PACKAGED_FILE
    if not path.is_file():
        return {}
    models = json.loads(path.read_text())["models"]
    return {str(name): str(tag) for name, tag in models.items()}


@dataclass(frozen=True)
class ServingMode:
    """How the service chose the versions it answers with, as ``/model`` reports it."""

    mode: Mode
    reason: str
    packaged: dict[str, str]
    """Model name → the packaged version (``name:version``) the service falls back on."""

    def as_dict(self, model: str) -> dict[str, str | None]:
        return {"mode": self.mode, "reason": self.reason, "packaged": self.packaged.get(model)}


def packaged_models(settings: Settings, code_folder: Path, models: list[str]) -> dict[str, str]:
    """The packaged versions this service carries: those its Bento records, else the one
    DRIFTLOOP_SERVING__MODEL_TAG names (which wins for its model)."""
    packaged = read_packaged(code_folder)
    if settings.serving.model_tag:
        tag = settings.serving.model_tag
        name = tag.partition(":")[0]
        if name not in models:
            raise StateError(
                f"DRIFTLOOP_SERVING__MODEL_TAG={tag} names model {name!r}, which the project "
                f"does not have (its models: {', '.join(models)})"
            )
        packaged[name] = tag
    unknown = sorted(set(packaged) - set(models))
    if unknown:
        raise StateError(
            f"this Bento carries {', '.join(unknown)}, which its project does not declare "
            f"(its models: {', '.join(models)})"
        )
    return packaged


def choose_mode(settings: Settings, packaged: dict[str, str]) -> ServingMode:
    """The mode the settings and the packaged models call for (see the module's docstring)."""
    setting = settings.serving.mode
    if setting == "pinned":
        if not packaged:
            raise StateError(
                "DRIFTLOOP_SERVING__MODE=pinned, but this service carries no packaged model: "
                "serve a Bento built by `driftloop package`, or name one in "
                "DRIFTLOOP_SERVING__MODEL_TAG"
            )
        return ServingMode("pinned", "DRIFTLOOP_SERVING__MODE=pinned", packaged)
    if setting == "following":
        return ServingMode("following", "DRIFTLOOP_SERVING__MODE=following", packaged)
    if settings.storage.registry_url:
        return ServingMode(
            "following", "a registry is configured (DRIFTLOOP_STORAGE__REGISTRY_URL)", packaged
        )
    registry_file = default_registry_file(settings)
    if registry_file.exists():
        return ServingMode("following", f"the registry {registry_file} exists", packaged)
    if packaged:
        return ServingMode(
            "pinned",
            f"no registry is configured (DRIFTLOOP_STORAGE__REGISTRY_URL is unset and there is "
            f"no {registry_file}): answering with the packaged model",
            packaged,
        )
    return ServingMode(
        "following",
        f"no packaged model: waiting for a production version in the registry {registry_file}",
        packaged,
    )


def default_registry_file(settings: Settings) -> Path:
    return (settings.home / "registry.sqlite").resolve()


def bento_home(settings: Settings, code_folder: Path) -> Settings:
    """``settings`` with the home of a service served from a Bento: ``$BENTOML_HOME/driftloop``
    when DRIFTLOOP_HOME is not set (the default, relative, would land inside the Bento)."""
    if "home" in settings.model_fields_set or not (code_folder / PACKAGED_FILE).is_file():
        return settings
    bentoml_home = Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml")
    return settings.model_copy(update={"home": bentoml_home.expanduser().resolve() / "driftloop"})


def prepare_state(settings: Settings, mode: ServingMode) -> list[Path]:
    """Create the folders the service writes (its home when a database defaults to a file
    there, the spool), checking each can be written; the folders, or StateError naming the
    setting behind the one that cannot."""
    home_used = not settings.storage.prediction_log_url or (
        mode.mode == "following" and not settings.storage.registry_url
    )
    wanted: list[tuple[Path, str]] = []
    if home_used:
        wanted.append((settings.home.resolve(), "DRIFTLOOP_HOME"))
    spool_setting = (
        "DRIFTLOOP_SERVING__SPOOL_DIR" if settings.serving.spool_dir else "DRIFTLOOP_HOME"
    )
    wanted.append((settings.prediction_spool, spool_setting))
    for folder, setting in wanted:
        writable_folder(folder, setting)
    return [folder for folder, _ in wanted]


def writable_folder(folder: Path, setting: str) -> None:
    """Create ``folder`` if needed and check a file can be written in it, or StateError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        what = "is not a folder" if folder.exists() and not folder.is_dir() else error.strerror
        raise StateError(
            f"the inference service cannot keep its state in {folder} ({what}): set {setting} "
            "to a folder it can create and write"
        ) from None
