"""Packaging: a Bento of the inference service with a given model, and an image when possible."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

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
        "DRIFTLOOP_SERVING__MODEL_TAG": model_tag,
        "BENTOML_DO_NOT_TRACK": "true",
    }


def _bentoml(args: list[str], bentoml_home: Path, model_tag: str, timeout: float) -> str:
    """Run the ``bentoml`` command of this environment; its stdout, or PackagingError."""
    finished = subprocess.run(
        [str(Path(sys.executable).with_name("bentoml")), *args],
        env=_environment(bentoml_home, model_tag),
        cwd=service_folder(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if finished.returncode != 0:
        raise PackagingError(f"bentoml {args[0]} failed:\n{finished.stdout}\n{finished.stderr}")
    return finished.stdout


def build_wheel(into: Path) -> Path:
    """Build driftloop's own wheel (offline) into ``into``; the Bento installs it."""
    if into.exists():
        shutil.rmtree(into)
    uv = str(Path(sys.executable).with_name("uv"))
    project = service_folder().parents[1]
    finished = subprocess.run(
        [uv, "build", "--wheel", "--offline", "--out-dir", str(into), str(project)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if finished.returncode != 0:
        raise PackagingError(f"building the driftloop wheel failed:\n{finished.stderr}")
    (wheel,) = into.glob("driftloop-*.whl")
    return wheel


def build_bento(model_tag: str, bentoml_home: Path) -> str:
    """Build the inference Bento around ``model_tag``; returns the Bento's tag.

    The Bento carries the model, the service and driftloop's own wheel (the service imports
    driftloop), and serves ``model_tag`` when no registry is there to follow. It builds offline:
    the bentofile turns package locking off, so nothing is resolved or fetched.
    """
    folder = service_folder()
    wheel = build_wheel(folder / "wheels")
    config = yaml.safe_load((folder / "bentofile.yaml").read_text())
    config["python"]["wheels"] = [f"wheels/{wheel.name}"]
    config["envs"] = [{"name": "DRIFTLOOP_SERVING__MODEL_TAG", "value": model_tag}]
    config["models"] = [model_tag]
    generated = folder / "bentofile.generated.yaml"
    generated.write_text(yaml.safe_dump(config, sort_keys=False))
    output = _bentoml(
        ["build", "--bentofile", str(generated), "--output", "tag", str(folder)],
        bentoml_home,
        model_tag,
        600,
    )
    return output.strip().splitlines()[-1].strip().removeprefix("__tag__:")


def container_engine_available() -> bool:
    """Whether a Docker engine answers (a docker client alone is not enough)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        answer = subprocess.run([docker, "info"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return answer.returncode == 0


def containerize(bento_tag: str, bentoml_home: Path) -> str:
    """``bentoml containerize`` the Bento; returns the image tag (the Bento's tag)."""
    _bentoml(["containerize", bento_tag], bentoml_home, "", 1800)
    return bento_tag
