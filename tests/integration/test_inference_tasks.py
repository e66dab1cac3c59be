"""A multiclass and a regression model under `bentoml serve`: answers, OpenAPI, feedback.

Each service serves a project (DRIFTLOOP_PROJECT) the repository does not ship, built from
scikit-learn's bundled wine and diabetes data (tests/bundled_data.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from driftloop.prediction_log import PredictionLog
from driftloop.project import ProjectModel, load_project
from driftloop.registry import BatchLineage, ModelRegistry
from driftloop.serving import frame_records
from driftloop.stack.processes import Component, free_port
from driftloop.stack.servers import start_inference_server
from driftloop.training import split_frame, train_model
from tests.bundled_data import diabetes_frame, wine_frame, write_project

CODE = Path(__file__).resolve().parents[2]


def served(folder: Path, model: ProjectModel, estimator: str) -> Component:
    """Train ``model`` with ``estimator``, make it production in a registry under ``folder``,
    and `bentoml serve` the project there."""
    registry = ModelRegistry(
        Path(os.environ["BENTOML_HOME"]), f"sqlite:///{folder / 'registry.sqlite'}"
    )
    frame = pd.read_csv(model.source)
    params = model.train_params(estimator=estimator, max_iter=40)
    trained = train_model(split_frame(frame, model.spec, params, None), model.spec, params)
    version = registry.register_trained(
        model.name,
        trained,
        spec=model.spec,
        data_commit="d" * 64,
        git_sha="test",
        batches=[BatchLineage("b1", "c" * 64, len(frame), None)],
    )
    registry.promote(model.name, version.version, "test")
    return start_inference_server(
        host="127.0.0.1",
        port=free_port(),
        log_path=folder / "inference.log",
        env={"DRIFTLOOP_HOME": str(folder), "DRIFTLOOP_PROJECT": str(model.root)},
        cwd=CODE,
    )


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Component]]:
    """Three services: wine (multiclass, gradient boosting), diabetes with gradient boosting
    (compiled scoring applies) and with ridge (scikit-learn)."""
    started: dict[str, Component] = {}
    try:
        for key, frame, dataset, target, estimator in (
            ("wine", wine_frame(), "wine", "cultivar", "hist_gradient_boosting"),
            ("diabetes", diabetes_frame(), "diabetes", "progression", "hist_gradient_boosting"),
            ("diabetes-ridge", diabetes_frame(), "diabetes", "progression", "ridge"),
        ):
            folder = tmp_path_factory.mktemp(key)
            project = load_project(
                write_project(folder, {f"{dataset}-model": (frame, dataset, target)})
            )
            started[key] = served(folder, project.model(), estimator)
        for component in started.values():
            component.wait_healthy(timeout=120)
        yield started
    finally:
        for component in started.values():
            component.stop()


def url(component: Component, path: str) -> str:
    return component.health_url.removesuffix("/readyz") + path


WINE_RECORDS = frame_records(wine_frame().iloc[[0, 70, 150]], list(wine_frame().columns[:-1]))
DIABETES_RECORDS = frame_records(diabetes_frame().head(3), list(diabetes_frame().columns[:-1]))


def test_a_multiclass_model_answers_the_class_and_every_class_probability(
    services: dict[str, Component],
) -> None:
    wine = services["wine"]

    answers = httpx.post(url(wine, "/predict"), json=WINE_RECORDS).json()
    one = httpx.post(url(wine, "/predict"), json=WINE_RECORDS[0]).json()

    assert [a["class"] for a in answers] == ["class_0", "class_1", "class_2"]
    assert set(one) == {"prediction_id", "class", "probabilities", "model_version"}
    assert list(one["probabilities"]) == ["class_0", "class_1", "class_2"]
    assert sum(one["probabilities"].values()) == pytest.approx(1.0)
    assert one["probabilities"]["class_0"] == max(one["probabilities"].values())
    described = httpx.get(url(wine, "/model")).json()
    assert described["task"] == "multiclass" and described["scoring"] == "scikit-learn"
    assert {"macro_f1", "accuracy", "log_loss"} <= set(described["metrics"])

    document = httpx.get(url(wine, "/openapi.json")).json()
    post = document["paths"]["/predict"]["post"]["responses"]["200"]["content"]
    single = post["application/json"]["schema"]["oneOf"][0]
    assert single["properties"]["class"]["enum"] == ["class_0", "class_1", "class_2"]
    feedback = document["paths"]["/feedback"]["post"]["requestBody"]["content"]
    label = feedback["application/json"]["schema"]["properties"]["label"]
    assert label == {"type": "string", "enum": ["class_0", "class_1", "class_2"]}


def test_multiclass_feedback_takes_a_class_of_the_spec(
    services: dict[str, Component], tmp_path_factory: pytest.TempPathFactory
) -> None:
    wine = services["wine"]
    answer = httpx.post(url(wine, "/predict"), json=WINE_RECORDS[1]).json()
    given = {"prediction_id": answer["prediction_id"]}

    wrong = [
        httpx.post(url(wine, "/feedback"), json={**given, "label": bad})
        for bad in ("class_7", 1, None)
    ]
    right = httpx.post(url(wine, "/feedback"), json={**given, "label": "class_2"})
    conflict = httpx.post(url(wine, "/feedback"), json={**given, "label": "class_1"})

    for response in wrong:
        assert response.status_code == 422 and response.json()["field"] == "label"
        assert "one of the classes class_0, class_1, class_2" in response.json()["detail"]
    assert right.status_code == 200 and conflict.status_code == 409
    home = Path(services["wine"].log_path).parent
    row = PredictionLog(f"sqlite:///{home / 'predictions.sqlite'}").get(answer["prediction_id"])
    assert row is not None and (row["label"], row["true_label"]) == (1, 2.0)


def test_a_regression_model_answers_a_value_and_takes_numbers_as_feedback(
    services: dict[str, Component],
) -> None:
    diabetes = services["diabetes"]

    answers = httpx.post(url(diabetes, "/predict"), json=DIABETES_RECORDS).json()

    assert [set(a) for a in answers] == [{"prediction_id", "value", "model_version"}] * 3
    assert all(25 < a["value"] < 346 for a in answers)  # the target's range in the data
    given = {"prediction_id": answers[0]["prediction_id"]}
    for bad in ("151", True, None, "NaN"):
        refused = httpx.post(url(diabetes, "/feedback"), json={**given, "label": bad})
        assert refused.status_code == 422 and refused.json()["field"] == "label"
        assert "a finite number" in refused.json()["detail"]
    assert httpx.post(url(diabetes, "/feedback"), json={**given, "label": 151.5}).status_code == 200
    home = Path(diabetes.log_path).parent
    row = PredictionLog(f"sqlite:///{home / 'predictions.sqlite'}").get(given["prediction_id"])
    assert row is not None and row["true_label"] == 151.5
    assert row["score"] == answers[0]["value"]

    document = httpx.get(url(diabetes, "/openapi.json")).json()
    single = document["paths"]["/predict"]["post"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]["oneOf"][0]
    assert single["required"] == ["prediction_id", "value", "model_version"]
    unknown = httpx.post(
        url(diabetes, "/feedback"), json={"prediction_id": str(uuid.uuid4()), "label": 3}
    )
    assert unknown.status_code == 404


def test_compiled_scoring_applies_where_its_check_passes(services: dict[str, Component]) -> None:
    boosted = httpx.get(url(services["diabetes"], "/model")).json()
    ridge = httpx.get(url(services["diabetes-ridge"], "/model")).json()

    assert (boosted["task"], boosted["scoring"]) == ("regression", "compiled")
    assert ridge["scoring"] == "scikit-learn"
    same = [
        httpx.post(url(services[key], "/predict"), json=DIABETES_RECORDS).json()
        for key in ("diabetes", "diabetes-ridge")
    ]
    assert all(isinstance(a["value"], float) for answers in same for a in answers)
