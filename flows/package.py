"""The package flow: a Bento of the inference service with the production model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from driftloop.datasets.spec import load_spec
from driftloop.registry import ModelRegistry
from flows.common import settings
from services.inference.bento import build_bento, container_engine_available, containerize


@dataclass(frozen=True)
class PackageOutcome:
    """The Bento built, the model in it, and its image ("" when no container engine runs)."""

    bento: str
    model: str
    image: str


@task(cache_policy=NO_CACHE)
def bento(model_tag: str, bentoml_home: str) -> str:
    """Build the Bento (offline: no package locking)."""
    return build_bento(model_tag, Path(bentoml_home))


@flow(name="package")
def package(dataset: str = "transactions") -> PackageOutcome:
    """Build a Bento of services/inference with the production model; an image if Docker runs."""
    logger = get_run_logger()
    config = settings()
    spec = load_spec(dataset)
    registry = ModelRegistry.from_settings(config)
    production = registry.require_production(spec.model_name, "package")
    bento_tag = bento(production.tag, str(config.bentoml_home))
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
