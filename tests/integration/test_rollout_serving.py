"""A rollout's challenger under `bentoml serve`: a shadow scores a copy of every request and
answers nobody; a canary answers its share of records, sticky per entity; withdrawn, it stops.
(The live judge that decides between them is tested in test_rollout.py.)"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from scipy.stats import binom

from driftloop.datasets.transactions import generate_transactions
from driftloop.prediction_log import PredictionLog
from driftloop.project import example_project
from driftloop.serving import frame_records, load_version
from driftloop.stack.processes import Component
from tests.integration.test_inference import MODEL, SPEC, Home, serve, url
from tests.polling import eventually

SHARE = 0.1


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    found = Home(tmp_path_factory.mktemp("rollout-home"))
    found.registry.promote(MODEL, found.versions[0], "test")
    found.registry.start_rollout(MODEL, found.versions[1], "shadow", "test")
    return found


@pytest.fixture(scope="module")
def server(home: Home, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Component]:
    # The example project, its model rolled out as a canary keyed on the amount (nearly one
    # value per transaction: the share holds per record, and a record sent again is sticky).
    project = tmp_path_factory.mktemp("rollout-project")
    shutil.copytree(example_project("transactions").root, project, dirs_exist_ok=True)
    declared = project / "driftloop.yaml"
    declared.write_text(
        declared.read_text()
        + f"    rollout: {{mode: canary, share: {SHARE}, entity_key: amount}}\n"
    )
    component = serve(home.path, "inference.log", project=str(project))
    try:
        component.wait_healthy(timeout=120)
        yield component
    finally:
        component.stop()


def records(count: int, seed: int) -> list[dict[str, object]]:
    return frame_records(generate_transactions(count, seed=seed), SPEC.feature_names)


def predict(server: Component, sent: list[dict[str, object]]) -> list[dict[str, object]]:
    answers: list[dict[str, object]] = []
    for start in range(0, len(sent), 100):
        answer = httpx.post(url(server, "/predict"), json=sent[start : start + 100], timeout=30)
        assert answer.status_code == 200, answer.text
        answers += answer.json()
    return answers


def logged(home: Home, ids: list[str]) -> dict[str, dict[str, object]]:
    """Rows of the prediction log: by id, and the shadow rows by the id they pair with."""
    url = f"sqlite:///{home.path / 'predictions.sqlite'}"
    engine = sa.create_engine(url)
    written = sa.inspect(engine).has_table("prediction_groups")
    engine.dispose()
    if not written:  # nothing written yet (creating the tables here would race the service's)
        return {}
    prediction_log = PredictionLog(url)
    wanted = set(ids)
    try:
        found = {}
        for row in prediction_log.rows():
            if row["id"] in wanted or row["paired_with"] in wanted:
                paired = row["paired_with"] if row["role"] == "shadow" else row["id"]
                found[paired + (row["role"] or "")] = row
        return found
    finally:
        prediction_log.dispose()


def role_of(server: Component) -> str | None:
    rollout = httpx.get(url(server, "/model")).json()["rollout"]
    return rollout["role"]  # type: ignore[no-any-return]


def test_a_shadow_scores_every_request_off_the_path_and_answers_nobody(
    server: Component, home: Home
) -> None:
    champion, challenger = home.versions
    sent = records(300, seed=21)

    answers = predict(server, sent)
    ids = [str(answer["prediction_id"]) for answer in answers]
    rows = eventually(
        lambda: (found := logged(home, ids)) and len(found) == 600 and found,
        "every champion prediction and its shadow copy in the log",
        timeout=30,
    )
    model = httpx.get(url(server, "/model")).json()
    metrics = httpx.get(url(server, "/metrics")).text

    assert {answer["model_version"] for answer in answers} == {champion}
    assert model["version"] == champion
    assert model["rollout"]["role"] == "shadow" and model["rollout"]["challenger"] == challenger
    expected = load_version(f"{MODEL}:{challenger}").score(sent).tolist()
    for prediction_id, score in zip(ids, expected, strict=True):
        shadow = rows[prediction_id + "shadow"]
        assert shadow["model_version"] == challenger and shadow["role"] == "shadow"
        assert shadow["score"] == pytest.approx(score)
        assert rows[prediction_id]["role"] is None  # the champion's own row
    shadow_counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("driftloop_predictions_total{") and 'role="shadow"' in line
    )
    assert shadow_counted == 300
    # A client's feedback names the champion's prediction; the shadow's row pairs with it.
    feedback = httpx.post(url(server, "/feedback"), json={"prediction_id": ids[0], "label": 1})
    assert feedback.status_code == 200


def test_a_canary_answers_its_share_sticky_per_entity_then_is_withdrawn(
    server: Component, home: Home
) -> None:
    champion, challenger = home.versions
    home.registry.start_rollout(MODEL, challenger, "canary", "test")
    eventually(lambda: role_of(server) == "canary", "the canary on live traffic", timeout=30)
    sent = records(3000, seed=22)

    first = predict(server, sent)
    again = predict(server, sent[:500])
    by_canary = sum(answer["model_version"] == challenger for answer in first)
    low, high = binom.interval(0.99, len(sent), SHARE)
    home.registry.withdraw(MODEL, challenger, "test")
    eventually(lambda: role_of(server) is None, "the canary withdrawn", timeout=30)
    after = predict(server, sent[:500])

    assert low <= by_canary <= high, (by_canary, low, high)
    assert {answer["model_version"] for answer in first} == {champion, challenger}
    assert [a["model_version"] for a in again] == [a["model_version"] for a in first[:500]]
    assert {answer["model_version"] for answer in after} == {champion}
    canary_ids = [str(a["prediction_id"]) for a in first if a["model_version"] == challenger]
    rows = eventually(
        lambda: (found := logged(home, canary_ids)) and len(found) == len(canary_ids) and found,
        "the canary's predictions in the log",
        timeout=30,
    )
    assert {row["role"] for row in rows.values()} == {"canary"}
