"""Footprint benchmark: what the embedded stack holds when it does nothing.

    .venv/bin/python bench/footprint.py [--idle 30] [--cold-worker] [--traffic] [--cool-after S]

Starts the stack `driftloop up` starts (Prefect server on SQLite, the worker with its warm flow
runner, lakeFS-compatible server, `bentoml serve`, monitor, and Prometheus and Alertmanager when
they are installed) in a temporary folder on free ports, lets it train its first model, waits
``--idle`` seconds with no traffic, then prints each component's memory and CPU used while idle:
resident memory (RSS, its processes and theirs summed, as `driftloop status` and `ps` show it:
a page two processes share counts in both) and proportional memory (PSS: a page shared by n
processes counts 1/n in each, so the total is what the machine holds). Then it stays idle
until the flow runner has cooled (DRIFTLOOP_PREFECT__RUNNER_COOL_SECONDS after its last run,
120 s unless ``--cool-after`` says otherwise) and prints the same table again: the first table
is the stack right after a run (the runner warm), the second the stack left alone.
``--cold-worker`` leaves the warm flow runner out (DRIFTLOOP_PREFECT__WARM_RUNNER=false);
``--traffic`` first sends 2,000 labelled predictions, so the monitor has judged windows (it
loads pandas and scipy only then) and the service has logged them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
TARGET_MB = 900  # issue 19: the idle stack's total
BEFORE_MB = 1300  # the figure issue 19 started from (monitor 466, inference 352, Prefect 258)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=30.0, help="seconds idle before measuring")
    parser.add_argument("--cold-worker", action="store_true", help="no warm flow runner")
    parser.add_argument("--traffic", action="store_true", help="2,000 predictions first")
    parser.add_argument(
        "--cool-after",
        type=float,
        default=None,
        help="DRIFTLOOP_PREFECT__RUNNER_COOL_SECONDS (default: the setting's, 120)",
    )
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
    if args.cool_after is not None:
        env["DRIFTLOOP_PREFECT__RUNNER_COOL_SECONDS"] = str(args.cool_after)
    settings = settings_from_env(env)
    stack = LocalStack(
        settings, code=code_dir(PROJECT), say=lambda m: print(f"[bench] {m}"), extra_env=env
    )
    cool_after = settings.prefect.runner_cool_seconds
    with stack.running_stack():
        if args.traffic:
            send_traffic(f"http://127.0.0.1:{settings.serving.port}")
        print(f"[bench] ready; idle for {args.idle:.0f} s", flush=True)
        records = [record for _, record in stack.running]
        start = time.monotonic()
        before = {r.name: usage([r.pid, *r.children]) for r in records}
        time.sleep(args.idle)
        after = {r.name: usage([r.pid, *r.children]) for r in records}
        cooled = None
        if not args.cold_worker and cool_after > 0:
            # The runner cools cool_after seconds after its last run: the judge's, on its cron
            # schedule (every 5 minutes), may come meanwhile and put it off.
            print(f"[bench] idle until the flow runner cools ({cool_after:.0f} s after a run)")
            deadline = time.monotonic() + cool_after + 360
            while "cooling" not in (stack.logs / "worker.log").read_text():
                if time.monotonic() > deadline:
                    raise SystemExit("the flow runner did not cool; see worker.log")
                time.sleep(1)
            time.sleep(10)  # its new image imports Prefect's engine
            cooled = {r.name: usage([r.pid, *r.children]) for r in records}
            wait = time.monotonic() - start - args.idle
    print()
    if args.cold_worker:
        runner = "without the warm flow runner"
    else:
        runner = "the flow runner warm, as after a run"
    total = table(
        f"idle stack ({runner}{', after traffic' if args.traffic else ''})",
        before,
        after,
        args.idle,
    )
    if cooled is not None:
        print()
        cooled_total = table(
            f"idle stack (the flow runner cooled: {cool_after:.0f} s without a run)",
            after,
            cooled,
            wait,
        )
        print(
            f"target: idle total <= {TARGET_MB} MB RSS (it was ~{BEFORE_MB}) -> cooled "
            f"{cooled_total[0]:.0f} MB RSS ({cooled_total[1]:.0f} PSS); warm {total[0]:.0f} "
            f"RSS ({total[1]:.0f} PSS)"
        )
    else:
        print(
            f"target: idle total <= {TARGET_MB} MB RSS (it was ~{BEFORE_MB}) -> "
            f"{total[0]:.0f} MB RSS ({total[1]:.0f} PSS)"
        )


def table(
    title: str, before: dict[str, Any], after: dict[str, Any], seconds: float
) -> tuple[float, float]:
    """Print memory per component and CPU between ``before`` and ``after``; total RSS, PSS."""
    print(f"{title}: memory per component, and CPU over {seconds:.0f} s idle")
    print(f"{'component':34}{'processes':>10}{'RSS MB':>9}{'PSS MB':>9}{'CPU idle %':>12}")
    for name, now in after.items():
        busy = 100 * (now.cpu_seconds - before[name].cpu_seconds) / seconds
        # A process that ended meanwhile takes its CPU time along: no figure then.
        shown = f"{busy:>12.1f}" if busy >= 0 else f"{'-':>12}"
        print(
            f"{name:34}{now.processes:>10}{now.rss_bytes / 2**20:>9.0f}"
            f"{now.pss_bytes / 2**20:>9.0f}{shown}"
        )
    rss = sum(now.rss_bytes for now in after.values()) / 2**20
    pss = sum(now.pss_bytes for now in after.values()) / 2**20
    print(f"{'total':34}{'':>10}{rss:>9.0f}{pss:>9.0f}")
    return rss, pss


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
