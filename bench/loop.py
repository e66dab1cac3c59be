"""Loop benchmark: how fast drift turns into a better model serving, and what a check costs.

    .venv/bin/python bench/loop.py [--repeat 3] [--skip-loop]

Part 1, the loop (the stack `driftloop up` starts: its own Prefect server on SQLite, process
worker, lakeFS-compatible server, `bentoml serve` and monitor, in a temporary folder, on free
ports; the first model trained by the stack's bootstrap on 5,000 transactions;
monitor every 1 s over windows of 500 rows, drift declared after 2 drifted windows): it sends
in-distribution traffic, then concept-drift traffic with labels, and measures from the first
drifted request to (a) the driftloop.drift.detected event (its time as Prefect records it),
(b) the retrain flow run starting (its start time in Prefect), (c) the new version answering
/predict.

Part 2, the check: the monitor's check (`compute_drift` on a reference prepared once per model
version) beside a plain Evidently `Report([DataDriftPreset()]).run(current, reference)` on the
same frames: a 10,000-row reference and covariate-shift windows of 1k, 10k and 100k rows,
interleaved, medians of --repeat runs. Both give the same per-feature scores (tests/unit/
test_drift.py checks that).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

PROJECT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-loop", action="store_true", help="only part 2")
    args = parser.parse_args()
    if not args.skip_loop:
        loop_timings()
    check_timings(args.repeat)


def loop_timings() -> None:
    from driftloop.prefect_api import PrefectAccess
    from driftloop.settings import fast_monitor_env, settings_from_env
    from driftloop.stack.demo import first_event, newest_run
    from driftloop.stack.deploy import code_dir
    from driftloop.stack.processes import free_port
    from driftloop.stack.supervisor import LocalStack

    work = Path(tempfile.mkdtemp(prefix="driftloop-bench-loop-"))
    print(f"[bench] part 1: the loop; the stack (driftloop up's) under {work}", flush=True)
    env = {
        "DRIFTLOOP_HOME": str(work),
        "DRIFTLOOP_PREFECT__API_URL": f"http://127.0.0.1:{free_port()}/api",
        "DRIFTLOOP_SERVING__PORT": str(free_port()),
        "DRIFTLOOP_MONITOR__PORT": str(free_port()),
        "DRIFTLOOP_STACK__OBSERVABILITY": "off",
        **fast_monitor_env(),
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    lakefs_port = free_port()
    env["DRIFTLOOP_LAKEFS__EMBEDDED_PORT"] = str(lakefs_port)
    env["DRIFTLOOP_LAKEFS__ENDPOINT"] = f"http://127.0.0.1:{lakefs_port}"
    settings = settings_from_env(env)
    stack = LocalStack(
        settings, code=code_dir(PROJECT), say=lambda m: print(f"[bench] {m}"), extra_env=env
    )
    with stack.running_stack():
        prefect = PrefectAccess.of(stack.settings.prefect)
        base = f"http://127.0.0.1:{settings.serving.port}"
        old_version = httpx.get(f"{base}/model").json()["version"]
        print("[bench] in-distribution traffic (3 windows)", flush=True)
        for seed in (11, 12, 13):
            traffic(base, "baseline", seed)
            time.sleep(1.5)
        print("[bench] concept-drift traffic with labels", flush=True)
        first_drifted = datetime.now(UTC)
        started = time.monotonic()
        served_at = None
        seed = 20
        while time.monotonic() - started < 600:
            seed += 1
            traffic(base, "concept_drift", seed)
            version = httpx.get(f"{base}/model").json()["version"]
            if version != old_version:
                served_at = datetime.now(UTC)
                break
        event = first_event(prefect, "driftloop.drift.detected")
        run = newest_run(prefect, "retrain", first_drifted)
        run_start = datetime.fromisoformat(run["start_time"]) if run and run["start_time"] else None
        print()
        print("the loop: seconds from the first drifted request")
        rows = [
            ("(a) drift event", event),
            ("(b) retrain run started", run_start),
            ("(c) new version serving", served_at),
        ]
        for label, at in rows:
            text = f"{(at - first_drifted).total_seconds():8.1f}" if at else "  (none)"
            print(f"  {label:28}{text}")
        verdict = f"{(served_at - first_drifted).total_seconds():.0f} s" if served_at else "did not"
        print(f"target: (c) under 120 s -> {verdict}")
        print()


def traffic(base: str, scenario: str, seed: int) -> None:
    """500 transactions in lists of 50, each followed by its true label."""
    from driftloop.datasets.spec import load_spec
    from driftloop.datasets.transactions import generate_transactions
    from driftloop.serving import frame_records

    spec = load_spec("transactions")
    frame = generate_transactions(500, seed=seed, scenario=scenario)  # type: ignore[arg-type]
    records = frame_records(frame, spec.feature_names)
    truth = frame[spec.target].astype(int).tolist()
    with httpx.Client(timeout=30) as client:
        answers: list[dict[str, Any]] = []
        for start in range(0, 500, 50):
            answers += client.post(f"{base}/predict", json=records[start : start + 50]).json()
        for answer, label in zip(answers, truth, strict=True):
            client.post(
                f"{base}/feedback", json={"prediction_id": answer["prediction_id"], "label": label}
            )


def check_timings(repeat: int) -> None:
    from driftloop.datasets.spec import load_spec
    from driftloop.datasets.transactions import generate_transactions
    from driftloop.drift import compute_drift, prepare_reference

    print("[bench] part 2: one drift check beside a plain DataDriftPreset run", flush=True)
    started = time.monotonic()
    from evidently import Report
    from evidently.presets import DataDriftPreset

    print(f"[bench] (importing evidently took {time.monotonic() - started:.1f} s, not counted)")
    spec = load_spec("transactions")
    names = spec.feature_names
    reference_frame = generate_transactions(10_000, seed=1)
    started = time.monotonic()
    reference = prepare_reference(reference_frame, spec)
    prepared_in = time.monotonic() - started
    print(f"[bench] reference of 10,000 rows prepared once in {prepared_in * 1000:.1f} ms")
    plain_reference = reference_frame[names]
    header = f"{'window rows':>12}{'driftloop s':>14}{'plain run s':>14}{'ratio':>8}"
    results = []
    for rows in (1_000, 10_000, 100_000):
        current = generate_transactions(rows, seed=2, scenario="covariate_shift")
        ours, plain = [], []
        for _ in range(repeat):
            started = time.monotonic()
            compute_drift(reference, current, spec)
            ours.append(time.monotonic() - started)
            started = time.monotonic()
            Report([DataDriftPreset()]).run(current[names], plain_reference)
            plain.append(time.monotonic() - started)
        results.append((rows, statistics.median(ours), statistics.median(plain)))
        print(f"[bench] {rows:,} rows done", flush=True)
    print()
    print(f"check time, medians of {repeat} runs (reference 10,000 rows)")
    print(header)
    for rows, ours_s, plain_s in results:
        print(f"{rows:>12,}{ours_s:>14.3f}{plain_s:>14.3f}{ours_s / plain_s:>8.2f}")
    worst = max(ours_s / plain_s for _, ours_s, plain_s in results)
    print(f"target: check time at most 0.5x the plain run -> worst {worst:.2f}x")


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT))
    main()
