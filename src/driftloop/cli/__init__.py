"""The ``driftloop`` command line, one module per command group (as Prefect's CLI has it).

The root app and what every command shares live in ``root``; each module adds its commands to it.
Commands import flows, services and the embedded stack only when they run, so ``driftloop
--help`` and ``status`` answer at once.
"""

from driftloop.cli import config, data, demo, grafana, init, lakefs, models, monitor, stack
from driftloop.cli.root import app

__all__ = [
    "app",
    "main",
    "config",
    "data",
    "demo",
    "grafana",
    "init",
    "lakefs",
    "models",
    "monitor",
    "stack",
]


def main() -> None:
    """Entry point for ``python -m driftloop``."""
    app()
