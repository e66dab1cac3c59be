"""Apply prefect.yaml: the work pool, the ingest/train/retrain deployments and the retrain trigger.

prefect.yaml reads the values that vary (where the code is, the pool, the cron schedule, the
cooldown) from DRIFTLOOP_* environment variables; :func:`deployment_env` sets them from
driftloop's settings, and :func:`apply` runs ``prefect --no-prompt deploy --all`` with them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from driftloop.prefect_api import PrefectAccess
from driftloop.settings import Settings


class DeployError(RuntimeError):
    """prefect.yaml could not be applied; the message says why and where to look."""


def code_dir(start: Path | None = None) -> Path:
    """The folder holding prefect.yaml: ``start`` or one of its parents, else this checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "prefect.yaml").is_file() and (folder / "flows").is_dir():
            return folder
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "prefect.yaml").is_file():
        return checkout
    raise DeployError(f"no prefect.yaml with a flows/ folder in {here} or above")


def deployment_env(settings: Settings, project: Path) -> dict[str, str]:
    """The variables prefect.yaml reads (driftloop's settings under their own names, in the form
    Prefect takes), and the Prefect client's own."""
    prefect = settings.prefect
    return {
        **PrefectAccess.of(prefect).client_env(),
        "DRIFTLOOP_CODE_DIR": str(project),
        "DRIFTLOOP_PREFECT__WORK_POOL": prefect.work_pool,
        "DRIFTLOOP_PREFECT__INGEST_CRON": prefect.ingest_cron,
        "DRIFTLOOP_PREFECT__INGEST_SCHEDULE_ACTIVE": str(prefect.ingest_schedule_active).lower(),
        "DRIFTLOOP_PREFECT__RETRAIN_COOLDOWN_SECONDS": str(prefect.retrain_cooldown_seconds),
        "DRIFTLOOP_PREFECT__JUDGE_CRON": prefect.judge_cron,
    }


def apply(settings: Settings, project: Path) -> str:
    """Create the work pool and apply every deployment of prefect.yaml; Prefect's output."""
    from driftloop.stack.servers import ensure_process_pool

    access = PrefectAccess.of(settings.prefect)
    problem = access.problem()
    if problem:
        raise DeployError(problem)
    ensure_process_pool(access, settings.prefect.work_pool)
    prefect = str(Path(sys.executable).with_name("prefect"))
    finished = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all"],
        cwd=project,
        env={**os.environ, **deployment_env(settings, project)},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    output = finished.stdout + finished.stderr
    if finished.returncode != 0:
        raise DeployError(f"prefect deploy failed (exit {finished.returncode}):\n{output[-3000:]}")
    return output
