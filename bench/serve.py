"""Serving benchmark: driftloop's inference service beside bare BentoML and bare FastAPI.

    .venv/bin/python bench/serve.py [--seconds 5] [--repeat 7] [--fraud-only]

Same model (the fraud pipeline, trained here, loaded and scored by every server through
`driftloop.serving.load_version`, so each does the same scoring work), same load: single-row
JSON POSTs from wrk (Debian package `wrk`) at concurrency 8 and 32 after a 2 s warm-up, the
servers interleaved in every repetition. Every server is pinned to core 0
with taskset and wrk to core 1. Servers:

- driftloop, logging on: `bentoml serve services.inference.service:InferenceService`, every
  prediction validated, answered with an id and version, and written to the prediction log;
- driftloop, logging on, shadow: the same with a second version of the model on a shadow
  rollout, scoring a copy of every request off the request path and logging it too;
- driftloop, logging off: the same with DRIFTLOOP_SERVING__LOG_PREDICTIONS=false;
- bare BentoML: one async `@bentoml.api` calling the model (bench/servers/bare_bentoml.py);
- bare FastAPI + uvicorn: one async route calling the model (bench/servers/bare_fastapi.py);
- the other tasks, logging on, each its own project built from scikit-learn's bundled data (as
  tests/bundled_data.py builds them): a multiclass model (wine, gradient boosting: three trees
  per iteration, scored through scikit-learn) and a regression model (diabetes) with gradient
  boosting (the compiled path applies: its check passes) and with ridge (scikit-learn).

It prints requests/s and p50/p90/p99 latency side by side, and each one's ratio to bare FastAPI
(which scores the fraud model: the other tasks' lines compare a different model's work). Beside
them, the CPU time each server's processes spent per request (user + system, read from the
kernel before and after each run; about 1 / throughput when the server saturates its core, so
a gap between the two means it waited on something else) and the share of the core the host
took away during the run (steal). On a shared virtual machine a core's speed also drifts from
minute to minute with its neighbours' load (one run of bare FastAPI here: 1,657 to 2,304 req/s
over ten minutes): compare ratios within one run of this script; many short repetitions (the
default) beat a few long ones, and the targets print each repetition's own ratio beside the
ratio of the medians.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from driftloop.datasets.transactions import EXAMPLE_RECORD

PROJECT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RECORD = EXAMPLE_RECORD


@dataclass(frozen=True)
class Variant:
    label: str
    command: list[str]  # "{port}" in it is the port; otherwise --host/--port are added
    env: dict[str, str]
    body: object  # one record, in the server's own protocol
    ready_path: str
    path: str = "/predict"
    many: object = None  # ROWS records in one request (None: not in the many-rows table)
    many_path: str = ""  # where they go, when not to ``path``


ROWS = 100  # records in each request of the many-rows table
# What each load is: its name, the concurrency, and whether requests carry ROWS records.
LOADS = (("c=8", 8, False), ("c=32", 32, False), (f"{ROWS} rows, c=8", 8, True))


@dataclass(frozen=True)
class Run:
    requests: int
    rps: float
    p50: float
    p90: float
    p99: float
    errors: int
    cpu_us: float  # the server's CPU time per request, microseconds
    steal: float  # the share of the server's core the host took away during the run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--fraud-only",
        action="store_true",
        help="only the fraud model's servers (leave out the multiclass and regression lines)",
    )
    parser.add_argument(
        "--no-peers",
        action="store_true",
        help="leave out KServe and MLServer (their environments take a minute to create)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/serve.py needs wrk: apt-get install wrk")
    if shutil.which("taskset") is None:
        sys.exit("bench/serve.py needs taskset (util-linux)")

    # Stopped with SIGTERM, still stop the servers (the finally below).
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(f"[bench] stopped ({number})"))
    work = Path(tempfile.mkdtemp(prefix="driftloop-bench-serve-"))
    os.environ["BENTOML_HOME"] = str(work / "bentoml")
    tag = prepare_model(work)
    print(f"[bench] model {tag}; working in {work}", flush=True)
    variants = make_variants(work, tag)
    if not args.no_peers:
        variants += peer_variants(work, tag)
    if not args.fraud_only:
        variants += task_variants(work)
    from driftloop.stack.processes import free_port

    ports = [free_port() for _ in variants]  # free ones: 3306 is MySQL's on many machines
    processes = {}
    try:
        for index, variant in enumerate(variants):
            processes[variant.label] = start(variant, ports[index], work)
        for index, variant in enumerate(variants):
            wait_ready(f"http://127.0.0.1:{ports[index]}{variant.ready_path}", variant.label)
        results: dict[tuple[str, str], list[Run]] = {}
        for repetition in range(args.repeat):
            for name, concurrency, many in LOADS:
                for index, variant in enumerate(variants):
                    body = variant.many if many else variant.body
                    if body is None:
                        continue
                    path = (many and variant.many_path) or variant.path
                    url = f"http://127.0.0.1:{ports[index]}{path}"
                    server = processes[variant.label]
                    run = load(url, body, concurrency, args.seconds, work, server.pid)
                    results.setdefault((variant.label, name), []).append(run)
                    print(
                        f"[bench] rep {repetition + 1} {name:<14} {variant.label:<34} "
                        f"{run.rps:8.0f} req/s  p50 {run.p50:6.2f} ms  p99 {run.p99:6.2f} ms  "
                        f"CPU {run.cpu_us:5.0f} µs/req  steal {run.steal:4.0%}  "
                        f"({run.requests} requests, {run.errors} errors)",
                        flush=True,
                    )
        report(variants, results)
        shadowed = ports[[v.label for v in variants].index("driftloop, logging on, shadow")]
        print(f"shadow: {shadow_dropped(shadowed)} copies dropped (its queue full) in all the runs")
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def prepare_model(work: Path) -> str:
    from driftloop.datasets.transactions import generate_transactions
    from driftloop.project import example_project
    from driftloop.registry import BatchLineage, ModelRegistry
    from driftloop.training import TrainParams, split_frame, train_model

    model = example_project("transactions").model()
    spec = model.spec
    params = TrainParams()
    frame = generate_transactions(20_000, seed=1)
    trained = train_model(split_frame(frame, spec, params, None), spec, params)
    registry = ModelRegistry(work / "bentoml", f"sqlite:///{work / 'home' / 'registry.sqlite'}")
    version = registry.register_trained(
        model.name,
        trained,
        spec=spec,
        data_commit="0" * 64,
        git_sha="bench",
        batches=[BatchLineage("bench", "0" * 64, len(frame), None)],
    )
    registry.promote(model.name, version.version, "bench")
    # The same, with a second version scoring every request as a shadow (a rollout's cost).
    shadowed = ModelRegistry(
        work / "bentoml", f"sqlite:///{work / 'home-shadow' / 'registry.sqlite'}"
    )
    batches = [BatchLineage("bench", "0" * 64, len(frame), None)]
    champion, shadow = (
        shadowed.register_trained(
            model.name, trained, spec=spec, data_commit="0" * 64, git_sha="bench", batches=batches
        )
        for _ in range(2)
    )
    shadowed.promote(model.name, champion.version, "bench")
    shadowed.start_rollout(model.name, shadow.version, "shadow", "bench")
    return version.tag


def make_variants(work: Path, tag: str) -> list[Variant]:
    common = {
        "BENTOML_HOME": str(work / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "DRIFTLOOP_HOME": str(work / "home"),
        "DRIFTLOOP_STORAGE__BENTOML_HOME": str(work / "bentoml"),
        "BENCH_MODEL_TAG": tag,
        "PYTHONPATH": str(PROJECT),
        # One core per server: OpenMP (gradient boosting) gets one thread, in every variant.
        "OMP_NUM_THREADS": "1",
    }
    ours = [str(BIN / "bentoml"), "serve", "services.inference.service:InferenceService"]
    many = [RECORD] * ROWS
    return [
        Variant("driftloop, logging on", ours, common, RECORD, "/readyz", many=many),
        Variant(
            "driftloop, logging on, shadow",
            ours,
            {**common, "DRIFTLOOP_HOME": str(work / "home-shadow")},
            RECORD,
            "/readyz",
        ),
        Variant(
            "driftloop, logging off",
            ours,
            {**common, "DRIFTLOOP_SERVING__LOG_PREDICTIONS": "false"},
            RECORD,
            "/readyz",
            many=many,  # the serving alone: every row logged costs an insert into SQL
        ),
        Variant(
            "bare BentoML",
            [str(BIN / "bentoml"), "serve", "bench.servers.bare_bentoml:BareService"],
            common,
            {"record": RECORD},
            "/readyz",
        ),
        Variant(
            "bare FastAPI + uvicorn",
            [str(BIN / "uvicorn"), "bench.servers.bare_fastapi:app", "--no-access-log"],
            common,
            RECORD,
            "/docs",
            many=many,
            many_path="/predict/many",
        ),
    ]


KSERVE = "kserve==0.21.0"
MLSERVER = "mlserver==1.7.1"


def peer_variants(work: Path, tag: str) -> list[Variant]:
    """KServe's and MLServer's servers, each in an environment of its own with the project's
    scikit-learn, numpy, pandas and scipy, serving the same model file with a custom model: once
    through driftloop's scoring function, once through plain scikit-learn ``predict_proba``.

    Both run as their users would run them for throughput on one core, with their per-request
    logs off as driftloop's are: KServe with gRPC off and its access and timing logs at WARNING;
    MLServer with ``parallel_workers: 0`` (inference in the server's process: with its default
    of one worker process, each request crosses a process boundary on the same core) and
    uvicorn's access log at WARNING.
    """
    import bentoml
    import numpy
    import pandas
    import scipy
    import sklearn
    from bench.environments import python_of

    from driftloop.stack.processes import free_port

    model_file = Path(bentoml.models.get(tag).path) / "saved_model.pkl"  # joblib, BentoML's
    pins = [
        f"scikit-learn=={sklearn.__version__}",
        f"numpy=={numpy.__version__}",
        f"pandas=={pandas.__version__}",
        f"scipy=={scipy.__version__}",
    ]
    quiet = work / "peer-logging.json"
    quiet.write_text(
        json.dumps(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {"err": {"class": "logging.StreamHandler"}},
                "root": {"level": "INFO", "handlers": ["err"]},
                "loggers": {
                    name: {"level": "WARNING"}
                    for name in ("uvicorn.access", "kserve.trace", "mlserver.rest")
                },
            }
        )
    )
    kserve = python_of(KSERVE.replace("==", "-"), [KSERVE, *pins])
    mlserver = python_of(MLSERVER.replace("==", "-"), [MLSERVER, *pins])
    env = {
        "BENCH_MODEL_FILE": str(model_file),
        "PYTHONPATH": f"{PROJECT}:{PROJECT / 'src'}",  # bench.servers, driftloop.scoring
        "OMP_NUM_THREADS": "1",
    }
    made = []
    for scoring, shown in (("compiled", "driftloop's scoring"), ("sklearn", "scikit-learn")):
        made.append(
            Variant(
                f"KServe 0.21, {shown}",
                [
                    str(kserve),
                    str(PROJECT / "bench" / "servers" / "kserve_server.py"),
                    "--http_port={port}",
                    "--enable_grpc=false",
                    "--model_name=fraud",
                    "--enable_latency_logging=false",
                    f"--log_config_file={quiet}",
                ],
                {**env, "BENCH_SCORING": scoring},
                {"instances": [RECORD]},
                "/v1/models/fraud",
                path="/v1/models/fraud:predict",
                many={"instances": [RECORD] * ROWS},
            )
        )
        folder = work / f"mlserver-{scoring}"
        (folder / "fraud").mkdir(parents=True)
        (folder / "fraud" / "model-settings.json").write_text(
            json.dumps({"name": "fraud", "implementation": "bench.servers.mlserver_model.Fraud"})
        )
        settings = {
            "host": "127.0.0.1",
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": 0,
            "logging_settings": str(quiet),
        }
        (folder / "settings.json").write_text(json.dumps(settings))
        made.append(
            Variant(
                f"MLServer 1.7.1, {shown}",
                [str(mlserver.parent / "mlserver"), "start", str(folder)],
                # The port in MLServer's own setting, given by the environment.
                {**env, "BENCH_SCORING": scoring, "MLSERVER_HTTP_PORT": "{port}"},
                v2_request([RECORD]),
                "/v2/models/fraud/ready",
                path="/v2/models/fraud/infer",
                many=v2_request([RECORD] * ROWS),
            )
        )
    return made


def v2_request(records: list[dict[str, object]]) -> dict[str, object]:
    """``records`` as an Open Inference Protocol (V2) request: one input per feature, decoded by
    MLServer's PandasCodec into a frame (strings as ``str``, not bytes)."""
    inputs = []
    for name, value in records[0].items():
        kind = {bool: "BOOL", int: "INT64", float: "FP64"}.get(type(value), "BYTES")
        entry: dict[str, object] = {
            "name": name,
            "shape": [len(records)],
            "datatype": kind,
            "data": [record[name] for record in records],
        }
        if kind == "BYTES":
            entry["parameters"] = {"content_type": "str"}
        inputs.append(entry)
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def task_variants(work: Path) -> list[Variant]:
    """driftloop serving a multiclass and a regression model, each from a project of its own
    (DRIFTLOOP_PROJECT) with its own home and registry."""
    import pandas as pd

    from driftloop.project import load_project
    from driftloop.registry import BatchLineage, ModelRegistry
    from driftloop.serving import frame_records
    from driftloop.training import split_frame, train_model
    from tests.bundled_data import diabetes_frame, wine_frame, write_project

    made = []
    for label, frame, dataset, target, estimator in (
        ("multiclass (wine)", wine_frame(), "wine", "cultivar", "hist_gradient_boosting"),
        (
            "regression, compiled",
            diabetes_frame(),
            "diabetes",
            "progression",
            "hist_gradient_boosting",
        ),
        ("regression, ridge", diabetes_frame(), "diabetes", "progression", "ridge"),
    ):
        folder = work / label.replace(" ", "-").replace(",", "").replace("(", "").replace(")", "")
        model = load_project(
            write_project(folder, {f"{dataset}-model": (frame, dataset, target)})
        ).model()
        params = model.train_params(estimator=estimator)
        data = pd.read_csv(model.source)
        trained = train_model(split_frame(data, model.spec, params, None), model.spec, params)
        registry = ModelRegistry(work / "bentoml", f"sqlite:///{folder / 'registry.sqlite'}")
        version = registry.register_trained(
            model.name,
            trained,
            spec=model.spec,
            data_commit="0" * 64,
            git_sha="bench",
            batches=[BatchLineage("bench", "0" * 64, len(data), None)],
        )
        registry.promote(model.name, version.version, "bench")
        env = {
            "BENTOML_HOME": str(work / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            "DRIFTLOOP_HOME": str(folder),
            "DRIFTLOOP_PROJECT": str(model.root),
            "OMP_NUM_THREADS": "1",
        }
        record = frame_records(data.head(1), model.spec.feature_names)[0]
        ours = [str(BIN / "bentoml"), "serve", "services.inference.service:InferenceService"]
        made.append(Variant(f"driftloop {label}", ours, env, record, "/readyz"))
    return made


def start(variant: Variant, port: int, work: Path) -> subprocess.Popen[bytes]:
    given = [*variant.command, *variant.env.values()]
    if any("{port}" in part for part in given):
        command = [part.replace("{port}", str(port)) for part in variant.command]
    else:
        command = [*variant.command, "--host", "127.0.0.1", "--port", str(port)]
    env = {name: value.replace("{port}", str(port)) for name, value in variant.env.items()}
    log = (work / f"{variant.label.replace(' ', '_').replace(',', '')}.log").open("wb")
    return subprocess.Popen(
        ["taskset", "-c", "0", *command],
        env={**os.environ, **env},
        cwd=PROJECT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def shadow_dropped(port: int) -> int:
    """Copies of requests the shadow server's shadow had no room to score."""
    import httpx

    return int(
        httpx.get(f"http://127.0.0.1:{port}/model", timeout=5).json()["rollout"]["shadow_dropped"]
    )


def wait_ready(url: str, label: str, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{label} did not become ready at {url}")


def core_times(core: int) -> tuple[int, int]:
    """All the ticks of ``core`` so far, and those the host took away (steal)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            ticks = [int(value) for value in line.split()[1:]]
            return sum(ticks[:8]), ticks[7]
    raise SystemExit(f"no cpu{core} line in /proc/stat")


def load(url: str, body: object, concurrency: int, seconds: int, work: Path, server: int) -> Run:
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        # A long bracket of level 1: a JSON list of records ends in "]]", which closes level 0.
        f"wrk.body = [=[{json.dumps(body)}]=]\n"
    )
    subprocess.run(  # warm-up, not measured
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{concurrency}", "-d2s", "-s", str(script), url],
        capture_output=True,
        check=False,
    )
    from driftloop.stack.processes import usage  # a server's processes and its workers'

    cpu_before, (ticks_before, steal_before) = usage([server]).cpu_seconds, core_times(0)
    finished = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu, (ticks, steal) = usage([server]).cpu_seconds - cpu_before, core_times(0)
    run = parse(finished.stdout)
    stolen = (steal - steal_before) / max(ticks - ticks_before, 1)
    return dataclasses.replace(run, cpu_us=cpu / max(run.requests, 1) * 1e6, steal=stolen)


def parse(output: str) -> Run:
    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        assert match, output
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors_match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(errors_match.group(1)) if errors_match else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Run(requests, rps, latency("50"), latency("90"), latency("99"), errors, 0.0, 0.0)


def report(variants: list[Variant], results: dict[tuple[str, str], list[Run]]) -> None:
    header = "server req/s p50_ms p90_ms p99_ms x_rps x_p50 CPU_µs requests errors".split()
    header = [name.replace("_", " ") for name in header]
    bare = "bare FastAPI + uvicorn"

    def median(label: str, load: str, field: str) -> float:
        return statistics.median(getattr(run, field) for run in results[(label, load)])

    print()
    for load, _, many in LOADS:
        base_rps, base_p50 = median(bare, load, "rps"), median(bare, load, "p50")
        unit = f"; rows/s = req/s x {ROWS}" if many else ""
        runs_of = len(results[(bare, load)])
        print(f"{load}: medians of {runs_of} runs; ratios to bare FastAPI{unit}")
        print(f"{header[0]:34}" + "".join(f"{h:>9}" for h in header[1:]))
        for variant in variants:
            if (variant.label, load) not in results:
                continue
            runs = results[(variant.label, load)]
            rps = median(variant.label, load, "rps")
            p50, p90 = median(variant.label, load, "p50"), median(variant.label, load, "p90")
            p99, cpu = median(variant.label, load, "p99"), median(variant.label, load, "cpu_us")
            fewest = min(r.requests for r in runs)
            errors = sum(r.errors for r in runs)
            print(
                f"{variant.label:34}{rps:9.0f}{p50:9.2f}{p90:9.2f}{p99:9.2f}"
                f"{rps / base_rps:9.2f}{p50 / base_p50:9.2f}{cpu:9.0f}{fewest:9d}{errors:9d}"
            )
        print()
    steal = statistics.median(run.steal for runs in results.values() for run in runs)
    print(f"the host took {steal:.0%} of the servers' core away (median over the runs)")

    def ratios(label: str, load: str = "c=8") -> tuple[float, str]:
        """The ratio of medians, and the spread of each repetition's own ratio (the two runs
        of a repetition are a minute apart at most: the core's drift mostly cancels)."""
        ours, base = results[(label, load)], results[(bare, load)]
        rps = median(label, load, "rps") / median(bare, load, "rps")
        each = [mine.rps / theirs.rps for mine, theirs in zip(ours, base, strict=True)]
        return rps, f"each repetition {min(each):.2f}-{max(each):.2f}x"

    ours = "driftloop, logging on"
    p50_ratio = median(ours, "c=8", "p50") / median(bare, "c=8", "p50")
    rps, spread = ratios(ours)
    print(
        f"target (logging on, c=8): throughput >= 0.90x bare FastAPI -> {rps:.2f}x ({spread}); "
        f"p50 <= 1.5x -> {p50_ratio:.2f}x"
    )
    rps, spread = ratios(f"{ours}, shadow")
    print(f"target (shadow on, c=8): throughput >= 0.75x bare FastAPI -> {rps:.2f}x ({spread})")
    rows = LOADS[2][0]
    rps, spread = ratios(ours, rows)
    print(f"target ({rows}): rows/s >= 0.90x bare FastAPI -> {rps:.2f}x ({spread})")
    peers = [v.label for v in variants if v.label.startswith(("KServe", "MLServer"))]
    for load, _, _ in LOADS:
        if not peers:
            break
        best = max(peers, key=lambda label: median(label, load, "rps"))
        ahead = median(ours, load, "rps") / median(best, load, "rps")
        print(f"target ({load}): ahead of every peer -> {ahead:.2f}x the fastest, {best}")


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT))
    main()
