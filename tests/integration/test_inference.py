"""The inference service under `bentoml serve`: API, validation, feedback, metrics, log, swap."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import EXAMPLE_RECORD, generate_transactions
from driftloop.prediction_log import PredictionLog
from driftloop.registry import BatchLineage, ModelRegistry
from driftloop.stack.processes import Component, descendants, free_port
from driftloop.stack.servers import start_inference_server
from driftloop.training import TrainParams, split_frame, train_model
from tests.polling import eventually

SPEC = load_spec("transactions")
MODEL = MODEL_NAME = "transactions-classifier"
PROJECT = Path(__file__).resolve().parents[2]
RECORD = EXAMPLE_RECORD


class Home:
    """A DRIFTLOOP_HOME with a registry holding two trained versions of the fraud model."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.registry = ModelRegistry(
            Path(os.environ["BENTOML_HOME"]), f"sqlite:///{path / 'registry.sqlite'}"
        )
        self.versions: list[str] = []
        for seed in (1, 2):
            params = TrainParams(max_iter=30, seed=seed)
            frame = generate_transactions(4000, seed=seed)
            trained = train_model(split_frame(frame, SPEC, params, None), SPEC, params)
            version = self.registry.register(
                MODEL,
                trained.pipeline,
                dataset="transactions",
                data_commit=f"{seed}" * 64,
                git_sha="test",
                metrics=trained.metrics.as_dict(),
                params=trained.params.model_dump(),
                digest=trained.digest,
                split=trained.split,
                batches=[BatchLineage(f"b{seed}", "c" * 64, 4000, None)],
                spec=SPEC.model_dump(mode="json", exclude_none=True),
            )
            self.versions.append(version.version)


def serve(home: Path, log_name: str, **settings: str) -> Component:
    """`bentoml serve` the inference service over ``home``; not waited for."""
    env = {
        "DRIFTLOOP_HOME": str(home),
        "DRIFTLOOP_SERVING__MODEL_POLL_SECONDS": "0.5",
        **{f"DRIFTLOOP_{key.upper()}": value for key, value in settings.items()},
    }
    return start_inference_server(
        host="127.0.0.1", port=free_port(), log_path=home / log_name, env=env, cwd=PROJECT
    )


def url(component: Component, path: str) -> str:
    return component.health_url.removesuffix("/readyz") + path


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    found = Home(tmp_path_factory.mktemp("inference-home"))
    found.registry.promote(MODEL, found.versions[0], "test")
    return found


@pytest.fixture(scope="module")
def server(home: Home) -> Iterator[Component]:
    component = serve(home.path, "inference.log", serving__max_batch_rows="50")
    try:
        component.wait_healthy(timeout=120)
        yield component
    finally:
        component.stop()


def test_predict_one_record_or_a_list(server: Component, home: Home) -> None:
    one = httpx.post(url(server, "/predict"), json=RECORD)
    many = httpx.post(url(server, "/predict"), json=[RECORD, {**RECORD, "amount": 3.0}])

    assert one.status_code == 200 and many.status_code == 200
    answer = one.json()
    assert set(answer) == {"prediction_id", "score", "label", "model_version"}
    assert 0 <= answer["score"] <= 1 and answer["label"] in (0, 1)
    assert answer["model_version"] == home.versions[0]
    assert [a["model_version"] for a in many.json()] == [home.versions[0]] * 2
    assert len({a["prediction_id"] for a in many.json()}) == 2


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({k: v for k, v in RECORD.items() if k != "hour"}, 422, "hour"),
        ({**RECORD, "colour": "red"}, 422, "colour"),
        ({**RECORD, "amount": "12"}, 422, "amount"),
        ({**RECORD, "channel": "fax"}, 422, "channel"),
        ({**RECORD, "hour": 3.5}, 422, "hour"),
        ([RECORD, {**RECORD, "is_foreign": "yes"}], 422, "records[1].is_foreign"),
        ([RECORD] * 51, 413, None),
        ([], 422, None),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(
    server: Component, body: object, status: int, field: str | None
) -> None:
    response = httpx.post(url(server, "/predict"), json=body)

    assert response.status_code == status, response.text
    if field:
        assert response.json()["detail"] == f"invalid record: {field}"
        assert field in [error["field"] for error in response.json()["errors"]]


def test_a_huge_body_is_refused_before_it_is_read_whole(server: Component) -> None:
    """A 200 MB body was read into memory before it was refused."""
    declared = httpx.post(
        url(server, "/predict"),
        content=b"[" + b" " * (50 << 20) + b"]",
        headers={"Content-Type": "application/json"},
        timeout=60,
    )

    def streamed() -> Iterator[bytes]:
        yield b"["
        for _ in range(50):
            yield b" " * (1 << 20)
        yield b"]"

    chunked = httpx.post(
        url(server, "/predict"),
        content=streamed(),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )

    assert declared.status_code == 413 and "at most" in declared.json()["detail"]
    assert chunked.status_code == 413 and "at most" in chunked.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        # Not JSON either, though some parsers (and pydantic's) read it as a number.
        json.dumps({**RECORD, "amount": float("nan")}).encode(),
        b"[" + json.dumps(RECORD).encode() + b", Infinity]",
    ],
)
def test_malformed_json_is_a_400(server: Component, body: bytes) -> None:
    response = httpx.post(url(server, "/predict"), content=body)

    assert response.status_code == 400 and "not valid JSON" in response.json()["detail"]


def test_every_prediction_is_logged_and_feedback_attaches_the_true_label(
    server: Component, home: Home
) -> None:
    answer = httpx.post(url(server, "/predict"), json=RECORD).json()

    first = httpx.post(
        url(server, "/feedback"), json={"prediction_id": answer["prediction_id"], "label": 1}
    )
    repeat = httpx.post(
        url(server, "/feedback"), json={"prediction_id": answer["prediction_id"], "label": 1}
    )
    conflict = httpx.post(
        url(server, "/feedback"), json={"prediction_id": answer["prediction_id"], "label": 0}
    )
    unknown = httpx.post(
        url(server, "/feedback"), json={"prediction_id": str(uuid.uuid4()), "label": 1}
    )
    bad_label = httpx.post(
        url(server, "/feedback"), json={"prediction_id": answer["prediction_id"], "label": 7}
    )

    assert (first.status_code, first.json()["status"]) == (200, "recorded")
    assert (repeat.status_code, repeat.json()["status"]) == (200, "already recorded")
    assert conflict.status_code == 409 and unknown.status_code == 404
    assert bad_label.status_code == 422 and bad_label.json()["field"] == "label"
    row = PredictionLog(f"sqlite:///{home.path / 'predictions.sqlite'}").get(
        answer["prediction_id"]
    )
    assert row is not None
    assert row["features"] == RECORD and row["true_label"] == 1
    assert row["model_version"] == home.versions[0] and row["score"] == answer["score"]


@pytest.mark.parametrize("label", [7, 1.0, 0.0, True, "1", None])
def test_feedback_labels_must_be_the_integers_0_or_1(server: Component, label: object) -> None:
    answer = httpx.post(url(server, "/predict"), json=RECORD).json()

    response = httpx.post(
        url(server, "/feedback"), json={"prediction_id": answer["prediction_id"], "label": label}
    )

    assert response.status_code == 422 and response.json()["field"] == "label", response.text


def test_racing_conflicting_feedback_has_exactly_one_winner(server: Component, home: Home) -> None:
    answers = httpx.post(url(server, "/predict"), json=[RECORD] * 50).json()
    ids = [answer["prediction_id"] for answer in answers]
    statuses: dict[tuple[str, int], int] = {}

    def send(
        client: httpx.Client, prediction_id: str, label: int, start: threading.Barrier
    ) -> None:
        start.wait()
        response = client.post(
            url(server, "/feedback"), json={"prediction_id": prediction_id, "label": label}
        )
        statuses[(prediction_id, label)] = response.status_code

    with httpx.Client(timeout=30) as client:
        for prediction_id in ids:
            start = threading.Barrier(2)
            pair = [
                threading.Thread(target=send, args=(client, prediction_id, label, start))
                for label in (0, 1)
            ]
            for thread in pair:
                thread.start()
            for thread in pair:
                thread.join()

    log = PredictionLog(f"sqlite:///{home.path / 'predictions.sqlite'}")
    for prediction_id in ids:
        codes = {label: statuses[(prediction_id, label)] for label in (0, 1)}
        assert sorted(codes.values()) == [200, 409], (prediction_id, codes)
        winner = next(label for label, code in codes.items() if code == 200)
        row = log.get(prediction_id)
        assert row is not None and row["true_label"] == winner


def test_model_health_readiness_and_metrics(server: Component, home: Home) -> None:
    first = httpx.get(url(server, "/metrics")).text
    before = predictions_counted(first, home.versions[0])
    httpx.post(url(server, "/predict"), json=[RECORD] * 3)
    httpx.post(url(server, "/predict"), json={**RECORD, "amount": "lots"})  # 422

    model = httpx.get(url(server, "/model")).json()
    metrics = httpx.get(url(server, "/metrics")).text

    assert model["version"] == home.versions[0] and model["data_commit"] == "1" * 64
    assert "roc_auc" in model["metrics"]
    assert httpx.get(url(server, "/healthz")).status_code == 200
    assert httpx.get(url(server, "/readyz")).status_code == 200
    assert predictions_counted(metrics, home.versions[0]) == before + 3
    assert "driftloop_prediction_score_bucket" in metrics
    assert "driftloop_prediction_log_dropped_total" in metrics
    assert f'driftloop_model_info{{data_commit="{"1" * 64}",model="{MODEL}"' in metrics
    # BentoML's request series, one per endpoint and status, as BentoML's own middleware counts
    for name in ("bentoml_service_request_total", "bentoml_service_request_duration_seconds_count"):
        for status in ("200", "422"):
            counted = sum(request_samples(metrics, name, "/predict", status))
            was = sum(request_samples(first, name, "/predict", status))
            assert counted == was + 1, (name, status)
    in_progress = request_samples(metrics, "bentoml_service_request_in_progress", "/predict")
    assert in_progress and sum(in_progress) == 0  # the series is there, back at 0
    assert sum(request_samples(metrics, "bentoml_service_last_request_timestamp_seconds")) > 0


def request_samples(metrics: str, name: str, endpoint: str = "", status: str = "") -> list[float]:
    """``name``'s samples of one endpoint and status (all when not given)."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == name
        and sample.labels.get("endpoint", endpoint) == endpoint
        and sample.labels.get("http_response_code", status) == status
    ]


def test_metrics_stay_correct_with_two_workers(home: Home) -> None:
    component = serve(home.path, "two-workers.log", serving__workers="2")
    try:
        component.wait_healthy(timeout=120)
        with httpx.Client(timeout=10) as client:  # each predict below opens its own connection
            answers = [
                httpx.post(url(component, "/predict"), json=[RECORD] * 3).json() for _ in range(40)
            ]
            metrics = client.get(url(component, "/metrics")).text
    finally:
        component.stop()

    counted = predictions_counted(metrics, answers[0][0]["model_version"])
    scored = [
        line for line in metrics.splitlines() if line.startswith("driftloop_prediction_score_count")
    ]
    assert len(answers) == 40 and counted == 120
    assert scored and float(scored[0].split()[-1]) == 120
    assert len({a[0]["model_version"] for a in answers}) == 1
    workers = {
        line.split('pid="')[1].split('"')[0]
        for line in metrics.splitlines()
        if line.startswith("driftloop_model_info{") and 'pid="' in line
    }
    assert len(workers) == 2, "both workers report the model they serve"


def test_not_ready_until_a_production_model_exists(tmp_path: Path) -> None:
    empty = Home(tmp_path)  # two candidates, no production yet
    component = serve(tmp_path, "empty.log")
    try:
        eventually(lambda: _answers(component, "/healthz"), "/healthz to answer", timeout=90)
        assert httpx.get(url(component, "/readyz")).status_code == 503
        assert httpx.post(url(component, "/predict"), json=RECORD).status_code == 503

        empty.registry.promote(MODEL, empty.versions[1], "first")

        component.wait_healthy(timeout=15)
        assert (
            httpx.post(url(component, "/predict"), json=RECORD).json()["model_version"]
            == empty.versions[1]
        )
    finally:
        component.stop()


def test_api_key_guards_the_api_but_not_health_or_metrics(home: Home, tmp_path: Path) -> None:
    component = serve(home.path, "keyed.log", serving__api_key="k3y-for-the-test-only")
    try:
        component.wait_healthy(timeout=120)
        without = httpx.post(url(component, "/predict"), json=RECORD)
        wrong = httpx.post(url(component, "/predict"), json=RECORD, headers={"X-API-Key": "nope"})
        right = httpx.post(
            url(component, "/predict"), json=RECORD, headers={"X-API-Key": "k3y-for-the-test-only"}
        )

        assert without.status_code == 401 and wrong.status_code == 401
        assert right.status_code == 200
        assert httpx.get(url(component, "/model")).status_code == 401
        for open_path in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(url(component, open_path)).status_code == 200
    finally:
        component.stop()


def test_model_swap_under_load_drops_no_request(tmp_path: Path) -> None:
    swap_home = Home(tmp_path)
    old, new = swap_home.versions
    swap_home.registry.promote(MODEL, old, "first")
    component = serve(tmp_path, "swap.log")
    component.wait_healthy(timeout=120)
    seen: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                response = client.post(url(component, "/predict"), json=RECORD)
                version = (
                    response.json().get("model_version", "") if response.status_code == 200 else ""
                )
                seen.append((time.monotonic(), response.status_code, version))

    workers = [threading.Thread(target=load) for _ in range(4)]
    try:
        for worker in workers:
            worker.start()
        eventually(lambda: len(seen) >= 30, "30 answers", timeout=60, interval=0.1)
        promoted_at = time.monotonic()
        swap_home.registry.promote(MODEL, new, "swap test")
        eventually(
            lambda: any(version == new for _, _, version in seen),
            "an answer of the new version",
            timeout=20,
            interval=0.1,
        )
        first_new = min((at for at, _, version in seen if version == new), default=promoted_at)
        eventually(
            lambda: sum(at > first_new + 1.0 for at, _, _ in seen) >= 20,
            "20 answers a second after the swap",
            timeout=60,
            interval=0.1,
        )
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=20)
        component.stop()

    assert all(status == 200 for _, status, _ in seen), {s for _, s, _ in seen}
    before = [version for at, _, version in seen if at < promoted_at]
    assert len(before) >= 30 and set(before) == {old}
    assert new in {version for _, _, version in seen}
    assert first_new - promoted_at < 10
    after = [version for at, _, version in seen if at > first_new + 1.0]
    assert len(after) >= 20 and set(after) == {new}


def test_prediction_log_on_postgresql(home: Home) -> None:
    database = f"driftloop_predlog_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    log_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    component = serve(home.path, "pg.log", storage__prediction_log_url=log_url)
    try:
        component.wait_healthy(timeout=120)
        answers = httpx.post(url(component, "/predict"), json=[RECORD] * 5).json()
        feedback = httpx.post(
            url(component, "/feedback"),
            json={"prediction_id": answers[0]["prediction_id"], "label": 0},
        )

        assert feedback.status_code == 200
        row = PredictionLog(log_url).get(answers[0]["prediction_id"])
        assert row is not None and row["true_label"] == 0 and row["features"] == RECORD
    finally:
        component.stop()
        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
        ) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_with_the_log_store_down_inference_answers_and_counts_the_drops(home: Home) -> None:
    dead_store = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    component = serve(
        home.path,
        "down.log",
        storage__prediction_log_url=dead_store,
        serving__log_queue_capacity="10",
    )
    try:
        eventually(lambda: _answers(component, "/healthz"), "/healthz to answer", timeout=120)
        responses = [httpx.post(url(component, "/predict"), json=RECORD) for _ in range(40)]
        metrics = httpx.get(url(component, "/metrics")).text

        assert all(r.status_code == 200 for r in responses)
        dropped = [
            line
            for line in metrics.splitlines()
            if line.startswith("driftloop_prediction_log_dropped_total")
        ]
        assert dropped and float(dropped[0].split()[-1]) >= 25
    finally:
        component.stop(grace_seconds=15)


def test_graceful_shutdown_writes_every_queued_prediction(home: Home, tmp_path: Path) -> None:
    log_url = f"sqlite:///{tmp_path / 'shutdown.sqlite'}"
    component = serve(home.path, "shutdown.log", storage__prediction_log_url=log_url)
    component.wait_healthy(timeout=120)
    answers = httpx.post(url(component, "/predict"), json=[RECORD] * 40).json()

    os.killpg(component.process.pid, signal.SIGTERM)
    component.process.wait(timeout=30)

    assert PredictionLog(log_url).count() == 40
    assert {a["prediction_id"] for a in answers}


def test_no_acknowledged_prediction_is_lost_when_the_worker_is_killed(
    home: Home, tmp_path: Path
) -> None:
    """kill -9 of the BentoML worker while eight clients send traffic: every prediction that was
    answered 200 is in the prediction log once the restarted worker has caught up."""
    log_url = f"sqlite:///{tmp_path / 'killed.sqlite'}"
    component = serve(home.path, "killed.log", storage__prediction_log_url=log_url)
    component.wait_healthy(timeout=120)
    acknowledged: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=5) as session:
            while not stop.is_set():
                try:
                    response = session.post(url(component, "/predict"), json=RECORD)
                except httpx.HTTPError:
                    continue  # the worker is down: nothing was acknowledged
                if response.status_code == 200:
                    acknowledged.append(response.json()["prediction_id"])

    clients = [threading.Thread(target=client) for _ in range(8)]
    try:
        for thread in clients:
            thread.start()
        eventually(lambda: len(acknowledged) >= 500, "traffic to flow", timeout=60)
        (worker,) = inference_workers(component)
        os.kill(worker, signal.SIGKILL)
        before_kill = len(acknowledged)
        eventually(
            lambda: len(acknowledged) >= before_kill + 500,
            "a restarted worker to answer again",
            timeout=120,
        )
        stop.set()
        for thread in clients:
            thread.join()

        log = PredictionLog(log_url)

        def all_logged() -> bool:
            missing = set(acknowledged) - logged_ids(log)
            assert not missing, f"{len(missing)} of {len(acknowledged)} answered predictions lost"
            return True

        eventually(all_logged, "every answered prediction in the log", timeout=60)
        assert inference_workers(component) != [worker]
    finally:
        stop.set()
        component.stop()


def inference_workers(component: Component) -> list[int]:
    """The pids of the service's worker processes (below `bentoml serve`)."""
    return [
        pid
        for pid in descendants(component.process.pid)
        if "_bentoml_impl.worker" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    ]


def logged_ids(log: PredictionLog) -> set[str]:
    return {row["id"] for row in log.rows()}


def predictions_counted(metrics: str, version: str) -> float:
    """driftloop_predictions_total of one model version, summed over labels."""
    return sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("driftloop_predictions_total{") and f'version="{version}"' in line
    )


def _answers(component: Component, path: str) -> bool:
    try:
        return httpx.get(url(component, path), timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
