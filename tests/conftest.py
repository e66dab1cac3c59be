"""Test-wide guards, set before any test module imports Prefect.

A Prefect client with no API URL would start a throwaway server and write to ~/.prefect; in the
tests every client must talk to the session's real server, so a missing URL has to fail loudly,
and nothing may touch the developer's own Prefect home.
"""

import os
import tempfile

import pytest

os.environ["PREFECT_SERVER_EPHEMERAL_ENABLED"] = "false"
if "PREFECT_HOME" not in os.environ or os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist workers inherit the controller's environment: each gets a home of its own.
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="driftloop-test-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"

# One BentoML store for the whole test process: BentoML reads BENTOML_HOME once. Each test
# keeps its own registry database (under its DRIFTLOOP_HOME), so tests do not see each other's
# model stages.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="driftloop-test-bentoml-")
os.environ["DRIFTLOOP_STORAGE__BENTOML_HOME"] = os.environ["BENTOML_HOME"]
os.environ["BENTOML_DO_NOT_TRACK"] = "true"

# The modules that take minutes, started first when pytest-xdist spreads modules over workers
# (`--dist loadfile`), so that no worker is left with one of them at the end.
SLOW_FIRST = (
    "test_stack.py",
    "test_projects.py",
    "test_inference.py",
    "test_demo.py",
    "test_loop.py",
    "test_alerting.py",
    "test_monitor.py",
    "test_retrain.py",
    "test_training.py",
    "test_inference_tasks.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # every worker collects, in the same order
        items.sort(
            key=lambda item: (
                SLOW_FIRST.index(item.path.name)
                if item.path.name in SLOW_FIRST
                else len(SLOW_FIRST)
            )
        )
