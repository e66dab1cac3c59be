"""Footprint benchmark: what the embedded stack holds when it does nothing.

    .venv/bin/python bench/footprint.py [--idle 30] [--cold-worker] [--traffic]

Starts the stack `driftloop up` starts (Prefect server on SQLite, the worker with its warm flow
runner, lakeFS-compatible server, `bentoml serve`, monitor, and Prometheus and Alertmanager when
they are installed) in a temporary folder on free ports, lets it train its first model, waits
``--idle`` seconds with no traffic, then prints each component's memory and CPU used while idle:
resident memory (RSS, its processes and theirs summed, as `driftloop status` and `ps` show it:
a page two processes share counts in both) and proportional memory (PSS: a page shared by n
processes counts 1/n in each, so the total is what the machine holds). ``--cold-worker``
leaves the warm flow runner out (DRIFTLOOP_PREFECT__WARM_RUNNER=false); ``--traffic`` first
sends 2,000 labelled predictions, so the monitor has judged windows (it loads pandas and scipy
only then) and the service has logged them.
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
    parser.add_argument("--cold-worker", action="store_true", help="no warm flow runner")
    parser.add_argument("--traffic", action="store_true", help="2,000 predictions first")
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
        # A check every 2 s: with --traffic, the windows are judged before the idle time.
        "DRIFTLOOP_MONITOR__INTERVAL_SECONDS": "2",
    }
    if args.cold_worker:
        env["DRIFTLOOP_PREFECT__WARM_RUNNER"] = "false"
    settings = settings_from_env(env)
    stack = LocalStack(
        settings, code=code_dir(PROJECT), say=lambda m: print(f"[bench] {m}"), extra_env=env
    )
    with stack.running_stack():
        if args.traffic:
            send_traffic(f"http://127.0.0.1:{settings.serving.port}")
        print(f"[bench] ready; idle for {args.idle:.0f} s", flush=True)
        records = [record for _, record in stack.running]
        before = {r.name: usage([r.pid, *r.children]) for r in records}
        time.sleep(args.idle)
        after = {r.name: usage([r.pid, *r.children]) for r in records}
    print()
    runner = "without the warm flow runner" if args.cold_worker else "with the warm flow runner"
    print(
        f"idle stack ({runner}{', after traffic' if args.traffic else ''}): memory per "
        f"component, and CPU over {args.idle:.0f} s idle"
    )
    print(f"{'component':34}{'processes':>10}{'RSS MB':>9}{'PSS MB':>9}{'CPU idle %':>12}")
    for name, now in after.items():
        busy = 100 * (now.cpu_seconds - before[name].cpu_seconds) / args.idle
        # A process that ended meanwhile takes its CPU time along: no figure then.
        shown = f"{busy:>12.1f}" if busy >= 0 else f"{'-':>12}"
        print(
            f"{name:34}{now.processes:>10}{now.rss_bytes / 2**20:>9.0f}"
            f"{now.pss_bytes / 2**20:>9.0f}{shown}"
        )
    rss = sum(now.rss_bytes for now in after.values()) / 2**20
    pss = sum(now.pss_bytes for now in after.values()) / 2**20
    print(f"{'total':34}{'':>10}{rss:>9.0f}{pss:>9.0f}")
    print(
        f"target: idle total <= {TARGET_MB} MB (it was ~{BEFORE_MB} RSS) -> "
        f"{rss:.0f} MB RSS, {pss:.0f} MB PSS"
    )


def send_traffic(base: str, rows: int = 2000) -> None:
    """``rows`` in-distribution transactions in lists of 100, each with its label."""
    import httpx

    from driftloop.datasets.spec import load_spec
    from driftloop.datasets.transactions import generate_transactions
    from driftloop.serving import frame_records

    spec = load_spec("transactions")
    frame = generate_transactions(rows, seed=5)
    records = frame_records(frame, spec.feature_names)
    truth = frame[spec.target].astype(int).tolist()
    with httpx.Client(base_url=base, timeout=30) as client:
        for start in range(0, rows, 100):
            answers = client.post("/predict", json=records[start : start + 100]).json()
            for answer, label in zip(answers, truth[start : start + 100], strict=True):
                client.post(
                    "/feedback", json={"prediction_id": answer["prediction_id"], "label": label}
                )
    print(f"[bench] {rows} labelled predictions sent", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT))
    main()
