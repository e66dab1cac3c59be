"""Packaging: a Bento of the inference service with a given model, and an image when possible."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import services.inference


class PackagingError(RuntimeError):
    """``bentoml build`` or ``bentoml containerize`` failed; the message carries their output."""


def service_folder() -> Path:
    """The build context of the inference Bento (``services/inference``)."""
    return Path(services.inference.__file__).resolve().parent


def _environment(bentoml_home: Path, model_tag: str) -> dict[str, str]:
    # `bentoml build` calls uv; the one of this environment is beside the interpreter.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {
        **os.environ,
        "PATH": path,
        "BENTOML_HOME": str(bentoml_home),
        "DRIFTLOOP_MODEL_TAG": model_tag,
        "BENTOML_DO_NOT_TRACK": "true",
    }


def build_bento(model_tag: str, bentoml_home: Path) -> str:
    """Build the inference Bento around ``model_tag``; returns the Bento's tag.

    Works offline: the bentofile turns package locking off, so nothing is resolved or fetched.
    """
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    finished = subprocess.run(
        [bentoml, "build", "--output", "tag", str(service_folder())],
        env=_environment(bentoml_home, model_tag),
        cwd=service_folder(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if finished.returncode != 0:
        raise PackagingError(f"bentoml build failed:\n{finished.stdout}\n{finished.stderr}")
    tag = finished.stdout.strip().splitlines()[-1].strip()
    return tag.removeprefix("__tag__:")


def container_engine_available() -> bool:
    """Whether a Docker engine answers (a docker client alone is not enough)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return (
            subprocess.run(
                [docker, "info"], capture_output=True, timeout=20, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def containerize(bento_tag: str, bentoml_home: Path) -> str:
    """``bentoml containerize`` the Bento; returns the image tag."""
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    finished = subprocess.run(
        [bentoml, "containerize", bento_tag],
        env=_environment(bentoml_home, ""),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if finished.returncode != 0:
        raise PackagingError(f"bentoml containerize failed:\n{finished.stdout}\n{finished.stderr}")
    return bento_tag
