"""The first model of a new stack: a built-in batch landed through its branch, then training."""

from __future__ import annotations

from collections.abc import Callable

from driftloop.datasets.spec import load_spec
from driftloop.registry import ModelRegistry
from driftloop.settings import Settings
from driftloop.stack.servers import drain_prefect_client
from flows.common import in_process
from flows.ingest import ingest
from flows.train import train


def ensure_production_model(settings: Settings, say: Callable[[str], None]) -> bool:
    """Whether the dataset's model has a production version, training one when allowed.

    ``DRIFTLOOP_STACK__BOOTSTRAP`` off leaves a stack without a model (inference starts, but is
    not ready until ``driftloop train`` makes one).
    """
    spec = load_spec(settings.dataset)
    registry = ModelRegistry.from_settings(settings)
    production = registry.production(spec.model_name)
    if production is not None:
        say(f"✓ production model {production.tag}")
        return True
    if not settings.stack.bootstrap:
        say(
            f"no production model of {spec.model_name} yet and DRIFTLOOP_STACK__BOOTSTRAP is "
            "off: inference starts without one; `driftloop train` makes one"
        )
        return False

    say(
        f"no production model of {spec.model_name} yet: landing a built-in batch and training "
        "the first model (runs in the Prefect UI) ..."
    )
    with in_process(settings):
        try:
            ingest(settings.dataset, "builtin:?seed=1", batch_id="bootstrap")
            outcome = train(settings.dataset)
        finally:
            drain_prefect_client()
    say(f"✓ {outcome.tag} trained on commit {outcome.data_commit[:12]}, stage {outcome.stage}")
    return outcome.stage == "production"
