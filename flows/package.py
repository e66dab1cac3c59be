"""The package flow: a Bento of the inference service with the production models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from driftloop.project import find_project
from driftloop.registry import ModelRegistry
from flows.common import settings
from services.inference.bento import (
    build_bento,
    container_engine_available,
    containerize,
    export_bento,
)


@dataclass(frozen=True)
class PackageOutcome:
    """The Bento built, the model versions in it, its archive ("" unless asked for) and its
    image ("" when no container engine runs)."""

    bento: str
    models: list[str]
    archive: str
    image: str


@task(cache_policy=NO_CACHE)
def bento(model_tags: list[str], bentoml_home: str, project: str) -> str:
    """Build the Bento, with the project's files (offline: no package locking)."""
    return build_bento(model_tags, Path(bentoml_home), Path(project))


@task(cache_policy=NO_CACHE)
def archive(bento_tag: str, bentoml_home: str, path: str) -> str:
    """Export the Bento and its models to a ``.bento`` archive."""
    return str(export_bento(bento_tag, Path(bentoml_home), Path(path)))


@flow(name="package")
def package(model: str | None = None, export: str | None = None) -> PackageOutcome:
    """Build a Bento of services/inference with the production version of the project's
    ``model`` (default: of every model of the project); export it to the archive ``export``
    when given; an image if Docker runs."""
    logger = get_run_logger()
    config = settings()
    project = find_project(config.project)
    project.make_importable()  # the registry loads models pickled with the project's code
    names = [project.model(model).name] if model else project.names
    registry = ModelRegistry.from_settings(config)
    tags = [registry.require_production(name, "package").tag for name in names]
    bento_tag = bento(tags, str(config.bentoml_home), str(project.root))
    logger.info("built Bento %s with %s", bento_tag, ", ".join(tags))
    archived = ""
    if export:
        archived = archive(bento_tag, str(config.bentoml_home), export)
        logger.info(
            "exported %s to %s (`bentoml import %s` on another machine)",
            *(bento_tag, archived, archived),
        )
    image = ""
    if container_engine_available():
        image = containerize(bento_tag, config.bentoml_home)
        logger.info("containerized %s", image)
    else:
        logger.info(
            "no container engine answers here (`docker info` fails): skipping bentoml "
            "containerize; run `bentoml containerize %s` where Docker runs",
            bento_tag,
        )
    return PackageOutcome(bento=bento_tag, models=tags, archive=archived, image=image)
