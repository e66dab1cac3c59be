"""The package flow: a Bento of the inference service with the production model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from driftloop.registry import ModelRegistry
from flows.common import project_model, settings
from services.inference.bento import build_bento, container_engine_available, containerize


@dataclass(frozen=True)
class PackageOutcome:
    """The Bento built, the model in it, and its image ("" when no container engine runs)."""

    bento: str
    model: str
    image: str


@task(cache_policy=NO_CACHE)
def bento(model_tag: str, bentoml_home: str, project: str | None = None) -> str:
    """Build the Bento, with the project's files (offline: no package locking)."""
    return build_bento(model_tag, Path(bentoml_home), Path(project) if project else None)


@flow(name="package")
def package(model: str | None = None) -> PackageOutcome:
    """Build a Bento of services/inference with the production version of the project's
    ``model`` (default: its only one); an image if Docker runs."""
    logger = get_run_logger()
    config = settings()
    declared = project_model(config, model)
    registry = ModelRegistry.from_settings(config)
    production = registry.require_production(declared.name, "package")
    bento_tag = bento(production.tag, str(config.bentoml_home), str(declared.root))
    logger.info("built Bento %s with model %s", bento_tag, production.tag)
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
    return PackageOutcome(bento=bento_tag, model=production.tag, image=image)
