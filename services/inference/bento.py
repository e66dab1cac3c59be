"""Packaging: a Bento of the inference service with given models, its archive, and an image
when a container engine runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

import services.inference
from driftloop.serving_mode import write_packaged


class PackagingError(RuntimeError):
    """``bentoml build`` or ``bentoml containerize`` failed; the message carries their output."""


def service_folder() -> Path:
    """The build context of the inference Bento (``services/inference``)."""
    return Path(services.inference.__file__).resolve().parent


def _environment(bentoml_home: Path) -> dict[str, str]:
    # `bentoml build` calls uv; the one of this environment is beside the interpreter.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {
        **os.environ,
        "PATH": path,
        "BENTOML_HOME": str(bentoml_home),
        "BENTOML_DO_NOT_TRACK": "true",
    }


def _bentoml(args: list[str], bentoml_home: Path, timeout: float, cwd: Path | None = None) -> str:
    """Run the ``bentoml`` command of this environment (in ``cwd``: BentoML reads files only
    below it); its stdout, or PackagingError."""
    finished = subprocess.run(
        [str(Path(sys.executable).with_name("bentoml")), *args],
        env=_environment(bentoml_home),
        cwd=cwd or service_folder(),
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


# What of a project folder a Bento carries: its driftloop.yaml, specs and code, never its data,
# state or environments.
_SKIPPED_FOLDERS = {".driftloop", ".venv", "venv", "__pycache__", "node_modules", "data"}


def project_files(root: Path) -> list[Path]:
    """The project's driftloop.yaml, YAML files (specs) and Python code, relative to ``root``."""
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") or part in _SKIPPED_FOLDERS for part in relative.parts[:-1]):
            continue
        if path.is_file() and path.suffix in (".py", ".yaml", ".yml"):
            found.append(relative)
    return found


def build_bento(model_tags: list[str], bentoml_home: Path, project: Path | None = None) -> str:
    """Build the inference Bento around the model versions ``model_tags``; returns its tag.

    The Bento carries the models, the service, driftloop's own wheel (the service imports
    driftloop), the record of its models (``driftloop-packaged.json``: the service answers with
    them when no registry is there to follow, see ``driftloop.serving_mode``) and, given the
    ``project`` folder, the project's driftloop.yaml, specs and code at the root of its ``src``
    (where `bentoml serve` runs it: the service finds the project there, and a model's own
    estimator code imports from there). Its image's Dockerfile is ``Dockerfile.j2`` over
    BentoML's. It builds offline: the bentofile turns package locking off, so nothing is
    resolved or fetched.
    """
    folder = service_folder()
    with tempfile.TemporaryDirectory(prefix="driftloop-bento-") as context_dir:
        context = Path(context_dir)
        wheel = build_wheel(context / "wheels")
        shutil.copy2(folder / "service.py", context / "service.py")
        shutil.copy2(folder / "Dockerfile.j2", context / "Dockerfile.j2")
        packaged = write_packaged(context, model_tags)
        included = ["service.py", packaged.name]
        for relative in project_files(project) if project is not None else []:
            (context / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(project / relative, context / relative)  # type: ignore[operator]
            included.append(relative.as_posix())
        config = yaml.safe_load((folder / "bentofile.yaml").read_text())
        config["include"] = included
        config["python"]["wheels"] = [f"wheels/{wheel.name}"]
        config["models"] = list(model_tags)
        config["docker"] = {**config.get("docker", {}), "dockerfile_template": "Dockerfile.j2"}
        generated = context / "bentofile.generated.yaml"
        generated.write_text(yaml.safe_dump(config, sort_keys=False))
        output = _bentoml(
            ["build", "--bentofile", str(generated), "--output", "tag", str(context)],
            bentoml_home,
            600,
            cwd=context,
        )
    return output.strip().splitlines()[-1].strip().removeprefix("__tag__:")


def export_bento(bento_tag: str, bentoml_home: Path, path: Path) -> Path:
    """``bentoml export`` the Bento, with its models, to the archive ``path`` (a path not
    ending in ``.bento`` is a folder, created if missing, and the archive is named after the
    Bento in it); returns the archive's path. ``bentoml import`` reads it on a machine with no
    driftloop state."""
    if path.is_dir() or path.suffix != ".bento":
        path = path / f"{bento_tag.replace(':', '-')}.bento"
    path.parent.mkdir(parents=True, exist_ok=True)
    _bentoml(["export", bento_tag, str(path.resolve())], bentoml_home, 600)
    return path.resolve()


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
    _bentoml(["containerize", bento_tag], bentoml_home, 1800)
    return bento_tag
