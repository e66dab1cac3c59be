"""The first model of a new stack: the model's declared source landed through its branch, then
training."""

from __future__ import annotations

from collections.abc import Callable

from driftloop.project import ProjectModel
from driftloop.registry import ModelRegistry
from driftloop.settings import Settings
from driftloop.stack.servers import drain_prefect_client
from flows.common import in_process
from flows.ingest import ingest
from flows.train import train


def ensure_production_model(
    settings: Settings, model: ProjectModel, say: Callable[[str], None]
) -> bool:
    """Whether ``model`` has a production version, training one when allowed.

    ``DRIFTLOOP_STACK__BOOTSTRAP`` off, or a model that declares no ``source``, leaves it without
    one (inference starts, but does not answer for it until ``driftloop train`` makes one).
    """
    registry = ModelRegistry.from_settings(settings)
    production = registry.production(model.name)
    if production is not None:
        say(f"✓ production model {production.tag}")
        return True
    if not settings.stack.bootstrap:
        say(
            f"no production model of {model.name} yet and DRIFTLOOP_STACK__BOOTSTRAP is "
            "off: inference starts without one; `driftloop train` makes one"
        )
        return False
    if model.source is None:
        say(
            f"no production model of {model.name} yet, and it declares no `source` in "
            f"{model.root}: `driftloop ingest --model {model.name} --source FILE`, then "
            "`driftloop train`, make one"
        )
        return False

    say(
        f"no production model of {model.name} yet: landing its source {model.config.source} "
        "and training the first model (runs in the Prefect UI) ..."
    )
    with in_process(settings):
        try:
            ingest(model.name, model.source, batch_id="bootstrap")
            outcome = train(model.name)
        finally:
            drain_prefect_client()
    say(f"✓ {outcome.tag} trained on commit {outcome.data_commit[:12]}, stage {outcome.stage}")
    return outcome.stage == "production"
