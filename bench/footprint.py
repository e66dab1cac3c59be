"""Footprint benchmark: what the embedded stack holds when it does nothing.

    .venv/bin/python bench/footprint.py [--idle 30]

Starts the stack `driftloop up` starts (Prefect server on SQLite, process worker,
lakeFS-compatible server, `bentoml serve`, monitor, and Prometheus and Alertmanager when they are
installed) in a temporary folder on free ports, lets it train its first model, waits ``--idle``
seconds with no traffic, then prints each component's resident memory (its processes and
theirs, summed: pages two processes share count twice, as `ps` shows them) and CPU used while
idle, as `driftloop status` shows them. The total is what a laptop pays to keep the stack up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
TARGET_MB = 900  # issue 19: the idle stack's total
BEFORE_MB = 1300  # the figure issue 19 started from (monitor 466, inference 352, Prefect 258)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=30.0, help="seconds idle before measuring")
    args = parser.parse_args()

    from driftloop.settings import settings_from_env
    from driftloop.stack.deploy import code_dir
    from driftloop.stack.processes import free_port, usage
    from driftloop.stack.supervisor import LocalStack

    work = Path(tempfile.mkdtemp(prefix="driftloop-bench-footprint-"))
    print(f"[bench] the stack (driftloop up's) under {work}", flush=True)
    lakefs_port = free_port()
    env = {
        "DRIFTLOOP_HOME": str(work),
        "DRIFTLOOP_PREFECT__API_URL": f"http://127.0.0.1:{free_port()}/api",
        "DRIFTLOOP_SERVING__PORT": str(free_port()),
        "DRIFTLOOP_MONITOR__PORT": str(free_port()),
        "DRIFTLOOP_STACK__PROMETHEUS_PORT": str(free_port()),
        "DRIFTLOOP_STACK__ALERTMANAGER_PORT": str(free_port()),
        "DRIFTLOOP_LAKEFS__EMBEDDED_PORT": str(lakefs_port),
        "DRIFTLOOP_LAKEFS__ENDPOINT": f"http://127.0.0.1:{lakefs_port}",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    settings = settings_from_env(env)
    stack = LocalStack(
        settings, code=code_dir(PROJECT), say=lambda m: print(f"[bench] {m}"), extra_env=env
    )
    with stack.running_stack():
        print(f"[bench] ready; idle for {args.idle:.0f} s", flush=True)
        records = [record for _, record in stack.running]
        before = {r.name: usage([r.pid, *r.children]) for r in records}
        time.sleep(args.idle)
        after = {r.name: usage([r.pid, *r.children]) for r in records}
    print()
    print(f"idle stack: resident memory per component, and CPU over {args.idle:.0f} s idle")
    print(f"{'component':34}{'processes':>10}{'memory MB':>11}{'CPU idle %':>12}")
    for name, now in after.items():
        busy = 100 * (now.cpu_seconds - before[name].cpu_seconds) / args.idle
        print(f"{name:34}{now.processes:>10}{now.rss_bytes / 2**20:>11.0f}{busy:>12.1f}")
    total = sum(now.rss_bytes for now in after.values()) / 2**20
    print(f"{'total':34}{'':>10}{total:>11.0f}")
    print(f"target: idle total <= {TARGET_MB} MB (it was ~{BEFORE_MB}) -> {total:.0f} MB")


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT))
    main()
