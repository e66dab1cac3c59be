"""Loop benchmark: how fast drift turns into a better model serving, hop by hop, and what a
check costs.

    .venv/bin/python bench/loop.py [--loops 3] [--runner both|warm|cooled] [--repeat 3]
                                   [--skip-loop] [--skip-check]

Part 1, the loop, --loops times, each on a fresh stack (the one `driftloop up` starts: its own
Prefect server on SQLite, worker, lakeFS-compatible server, `bentoml serve` and monitor, in a
temporary folder, on free ports; the first model trained by the stack's bootstrap on 5,000
transactions; monitor every 1 s over windows of 500 rows, drift declared after 2 drifted
windows). It sends in-distribution traffic, then concept-drift traffic with labels, while a
thread asks /predict every 50 ms which version answers. Each hop is timed from the first
drifted request, from Prefect's own records where it has them: the drift event (when the monitor
declared it, and when Prefect received it), the retrain run (created by the automation, picked
up by the worker, running), each step of the run (labelled batch exported, ingest merged, model
fitted and registered, gate judged, promoted, packaged, run completed) and the first answer from
the new version. The table gives every hop's median over the loops.

The flow runner (``driftloop.stack.flow_runner``) is warm right after a run and cools when the
stack is left alone (DRIFTLOOP_PREFECT__RUNNER_COOL_SECONDS); drift warms it again. With
``--runner both`` (the default) each loop runs twice: once with the runner warm from the first
training, once with it cooled first (cool-down set to 10 s, and the loop waits until the worker
says the runner cooled): an idle stack's case. A table per case.

Part 2, the check: the monitor's check (`compute_drift` on a reference prepared once per model
version) beside a plain Evidently `Report([DataDriftPreset()]).run(current, reference)` on the
same frames: a 10,000-row reference and covariate-shift windows of 1k, 10k and 100k rows,
interleaved, medians of --repeat runs. Both give the same per-feature scores (tests/unit/
test_drift.py checks that).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

PROJECT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 15.0  # drift onset -> new version serving, median of the loops (issue 19)
COOLED_AFTER = 10.0  # the runner's cool-down in a cooled loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=3, help="loops, each on a fresh stack")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each drift check")
    parser.add_argument("--skip-loop", action="store_true", help="only part 2")
    parser.add_argument("--skip-check", action="store_true", help="only part 1")
    parser.add_argument(
        "--runner",
        choices=("both", "warm", "cooled"),
        default="both",
        help="the flow runner at drift onset: warm from the first training, cooled, or both",
    )
    parser.add_argument("--one-loop", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_loop:  # a child of the run below: one loop, its hops as the last line
        print(json.dumps(one_loop(args.one_loop, args.loops, args.runner == "cooled")))
        return
    if not args.skip_loop:
        cases = ("warm", "cooled") if args.runner == "both" else (args.runner,)
        loops: dict[str, list[dict[str, float | None]]] = {case: [] for case in cases}
        for number in range(args.loops):  # interleaved
            for case in cases:
                loops[case].append(loop_in_own_process(number + 1, args.loops, case))
        for case in cases:
            hop_table(loops[case], case)
    if not args.skip_check:
        check_timings(args.repeat)


# Each hop: its name, in the order a loop passes them.
HOPS = (
    "drift declared (monitor)",
    "drift event in Prefect",
    "retrain run created",
    "run picked up (Pending)",
    "run running",
    "labelled batch exported",
    "ingest merged",
    "model fitted, registered",
    "gate judged",
    "promoted",
    "new version answering",
    "packaged (Bento)",
    "retrain run completed",
)


class VersionWatch:
    """Asks /predict every 50 ms which version answers; notes when one other than ``old``
    first does (a real answer to a real record, not /model)."""

    def __init__(self, base: str, old: str, record: dict[str, Any]) -> None:
        self.base, self.old, self.record = base, old, record
        self.seen: datetime | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and self.seen is None:
                try:
                    answer = client.post(f"{self.base}/predict", json=self.record).json()
                except httpx.HTTPError:
                    answer = {}
                if answer.get("model_version", self.old) != self.old:
                    self.seen = datetime.now(UTC)
                self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def loop_in_own_process(number: int, loops: int, runner: str) -> dict[str, float | None]:
    """One loop in a process of its own (a process keeps the BentoML store it first used, and
    each loop's stack has its own); its output passes through, its hops come back."""
    command = [sys.executable, __file__, "--one-loop", str(number), "--loops", str(loops)]
    command += ["--runner", runner]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        last = ""
        for line in child.stdout:
            print(line, end="", flush=True)
            last = line
    if child.returncode != 0:
        raise SystemExit(f"loop {number} failed (exit {child.returncode})")
    return dict(json.loads(last))


def one_loop(number: int, loops: int, cooled: bool) -> dict[str, float | None]:
    """One loop on a fresh stack: each hop's seconds from the first drifted request; with
    ``cooled``, the flow runner has cooled before the drift."""
    from driftloop.datasets.transactions import EXAMPLE_RECORD
    from driftloop.prefect_api import PrefectAccess
    from driftloop.settings import fast_monitor_env, settings_from_env
    from driftloop.stack.deploy import code_dir
    from driftloop.stack.processes import free_port
    from driftloop.stack.supervisor import LocalStack

    work = Path(tempfile.mkdtemp(prefix="driftloop-bench-loop-"))
    runner = "cooled" if cooled else "warm"
    print(
        f"[bench] loop {number} of {loops}, the runner {runner}: the stack (driftloop up's) "
        f"under {work}",
        flush=True,
    )
    env = {
        "DRIFTLOOP_HOME": str(work),
        "DRIFTLOOP_PREFECT__API_URL": f"http://127.0.0.1:{free_port()}/api",
        "DRIFTLOOP_SERVING__PORT": str(free_port()),
        "DRIFTLOOP_MONITOR__PORT": str(free_port()),
        "DRIFTLOOP_STACK__OBSERVABILITY": "off",
        **fast_monitor_env(),
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    if cooled:
        env["DRIFTLOOP_PREFECT__RUNNER_COOL_SECONDS"] = str(COOLED_AFTER)
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
        if cooled:
            print("[bench] waiting for the flow runner to cool", flush=True)
            deadline = time.monotonic() + 120
            while "cooling" not in (stack.logs / "worker.log").read_text():
                if time.monotonic() > deadline:
                    raise SystemExit("the flow runner did not cool; see worker.log")
                time.sleep(0.5)
        print("[bench] in-distribution traffic (3 windows)", flush=True)
        for seed in (11, 12, 13):
            traffic(base, "baseline", seed)
            time.sleep(1.5)
        print("[bench] concept-drift traffic with labels", flush=True)
        first_drifted = datetime.now(UTC)
        watch = VersionWatch(base, old_version, EXAMPLE_RECORD)
        started, seed = time.monotonic(), 20
        while watch.seen is None and time.monotonic() - started < 600:
            seed += 1
            traffic(base, "concept_drift", seed)
        watch.stop()
        hops = loop_hops(prefect, first_drifted, watch.seen)
    print(f"[bench] loop {number}: seconds from the first drifted request")
    for hop in HOPS:
        at = hops.get(hop)
        print(f"  {hop:30}{f'{at:8.1f}' if at is not None else '  (none)'}", flush=True)
    return hops


def loop_hops(
    prefect: Any, onset: datetime, served: datetime | None, wait_seconds: float = 60
) -> dict[str, float | None]:
    """Every hop of the loop that began at ``onset``, in seconds from it, from Prefect's records
    (the retrain run is waited on until it ends, at most ``wait_seconds``)."""
    from driftloop.stack.demo import newest_run

    def since(moment: str | datetime | None) -> float | None:
        if moment is None:
            return None
        at = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
        return (at - onset).total_seconds()

    deadline = time.monotonic() + wait_seconds
    run = newest_run(prefect, "retrain", onset)
    while run and run["state_type"] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
        run = newest_run(prefect, "retrain", onset)
    drift = events(prefect, "driftloop.drift.detected", onset)
    promoted = events(prefect, "driftloop.model.promoted", onset)
    while not promoted and time.monotonic() < deadline:  # Prefect stores events in batches
        time.sleep(0.5)
        promoted = events(prefect, "driftloop.model.promoted", onset)
    hops: dict[str, float | None] = dict.fromkeys(HOPS)
    if drift:
        hops["drift declared (monitor)"] = since(drift[0]["occurred"])
        hops["drift event in Prefect"] = since(drift[0].get("received"))
    if promoted:
        hops["promoted"] = since(promoted[0]["occurred"])
    hops["new version answering"] = since(served)
    if run is None:
        return hops
    hops["retrain run created"] = since(run["created"])
    states = prefect.get(f"/flow_run_states/?flow_run_id={run['id']}").json()
    pending = [s["timestamp"] for s in states if s["type"] == "PENDING"]
    hops["run picked up (Pending)"] = since(min(pending)) if pending else None
    hops["run running"] = since(run["start_time"])
    hops["retrain run completed"] = since(run["end_time"])
    children = prefect.post(
        "/flow_runs/filter", {"flow_runs": {"start_time": {"after_": run["start_time"]}}}
    ).json()
    flows = {f["id"]: f["name"] for f in prefect.post("/flows/filter", {}).json()}
    by_flow = {flows.get(child["flow_id"]): child for child in children}
    if "ingest" in by_flow:
        hops["ingest merged"] = since(by_flow["ingest"]["end_time"])
    runs = [run["id"], *(child["id"] for child in children)]
    tasks = prefect.post("/task_runs/filter", {"flow_runs": {"id": {"any_": runs}}}).json()
    ends = {t["task_key"].split("-")[0]: t["end_time"] for t in tasks if t["end_time"]}
    for hop, task in (
        ("labelled batch exported", "export_feedback"),
        ("model fitted, registered", "register"),
        ("gate judged", "judge"),
        ("packaged (Bento)", "bento"),
    ):
        hops[hop] = since(ends.get(task))
    return hops


def events(prefect: Any, name: str, since: datetime) -> list[dict[str, Any]]:
    """The events called ``name`` that occurred after ``since``, oldest first."""
    found = prefect.post(
        "/events/filter",
        {
            "filter": {
                "event": {"name": [name]},
                "occurred": {"since": since.isoformat(), "until": datetime.now(UTC).isoformat()},
                "order": "ASC",
            },
            "limit": 10,
        },
    ).json()["events"]
    return sorted(found, key=lambda event: event["occurred"])


def hop_table(loops: list[dict[str, float | None]], runner: str) -> None:
    print()
    print(
        f"the loop, the flow runner {runner} at drift onset, seconds from the first drifted "
        f"request: each of {len(loops)} loops, median"
    )
    header = "".join(f"{f'loop {n + 1}':>9}" for n in range(len(loops)))
    print(f"  {'hop':30}{header}{'median':>9}")
    for hop in HOPS:
        values = [loop[hop] for loop in loops]
        shown = "".join(f"{v:9.1f}" if v is not None else f"{'-':>9}" for v in values)
        known = [v for v in values if v is not None]
        middle = f"{statistics.median(known):9.1f}" if len(known) == len(values) else f"{'-':>9}"
        print(f"  {hop:30}{shown}{middle}")
    served = [loop["new version answering"] for loop in loops]
    if all(value is not None for value in served):
        median = statistics.median(v for v in served if v is not None)
        print(
            f"target ({runner}): drift onset -> new version answering, median of "
            f"{len(loops)} loops <= {TARGET_SECONDS:.0f} s -> {median:.1f} s"
        )
    else:
        print("target: a loop did not end with a new version answering")
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
