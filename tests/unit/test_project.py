"""driftloop projects: driftloop.yaml, the specs it names, and errors that say where."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from driftloop.documents import DocumentError
from driftloop.gate import GatePolicy
from driftloop.project import ProjectError, example_names, find_project, load_project
from driftloop.settings import MonitorSettings

SPEC = """\
name: churn
target: churned
positive_label: churned
id_column: customer_id
features:
  - name: tenure_months
    type: integer
    minimum: 0
  - name: plan
    type: categorical
    categories: [basic, plus, pro]
"""


def project(folder: Path, document: str, spec: str = SPEC) -> Path:
    """A project folder with ``document`` as its driftloop.yaml and ``spec`` as churn.yaml."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "driftloop.yaml").write_text(textwrap.dedent(document))
    (folder / "churn.yaml").write_text(spec)
    return folder


ONE_MODEL = """\
    models:
      - name: churn-model
        dataset: churn.yaml
        source: data/sample.csv
    """


def test_the_examples_are_projects_with_one_model_each() -> None:
    assert example_names() == ["breast_cancer", "transactions"]
    fraud = find_project(None, cwd=Path("/")).model()  # no driftloop.yaml there: the example

    assert fraud.name == "transactions-classifier" and fraud.dataset == "transactions"
    assert fraud.task == "binary" and fraud.spec.target == "is_fraud"
    assert fraud.source == "builtin:?seed=1"


def test_a_project_declares_models_with_their_specs_and_overrides(tmp_path: Path) -> None:
    folder = project(
        tmp_path / "churn",
        """\
        models:
          - name: churn-model
            dataset: churn.yaml
            estimator: logistic_regression
            source: data/sample.csv
            train: {seed: 7, threshold: 0.4}
            gate: {margin: 0.02, floor: {roc_auc: 0.6}}
            monitor: {window_rows: 1000, drift_share_threshold: 0.5}
        """,
    )

    model = load_project(folder).model("churn-model")

    assert model.spec.name == "churn" and model.spec.feature_names == ["tenure_months", "plan"]
    assert model.source == str(folder / "data" / "sample.csv")  # relative to the project
    params = model.train_params(seed=None, holdout="newest_batch")
    assert (params.estimator, params.seed, params.threshold, params.holdout) == (
        "logistic_regression",
        7,
        0.4,
        "newest_batch",
    )
    gate = model.gate_policy(GatePolicy())
    assert gate.margin == 0.02 and gate.floor == {"roc_auc": 0.6}
    assert gate.primary_metric == "roc_auc"  # not overridden: the setting's
    monitor = model.monitor_settings(MonitorSettings(consecutive_windows=5))
    assert (monitor.window_rows, monitor.drift_share_threshold) == (1000, 0.5)
    assert monitor.consecutive_windows == 5


def test_the_project_is_the_setting_else_the_working_directorys(tmp_path: Path) -> None:
    folder = project(tmp_path / "churn", ONE_MODEL)

    assert find_project(None, cwd=folder).file == folder / "driftloop.yaml"
    assert find_project(folder / "driftloop.yaml", cwd=tmp_path).root == folder
    assert find_project(folder, cwd=tmp_path).names == ["churn-model"]
    with pytest.raises(ProjectError, match="DRIFTLOOP_PROJECT=.*nowhere: no such file"):
        find_project(tmp_path / "nowhere")
    with pytest.raises(ProjectError, match="no driftloop project at"):
        load_project(tmp_path)


def test_a_wrong_spec_stops_with_its_file_line_and_field(tmp_path: Path) -> None:
    spec = SPEC.replace("    type: integer", "    type: float")
    folder = project(tmp_path / "churn", ONE_MODEL, spec)

    with pytest.raises(DocumentError) as raised:
        load_project(folder)

    error = raised.value
    assert (error.path, error.line, error.field) == (folder / "churn.yaml", 7, "features[0].type")
    assert str(error).startswith(f"{folder / 'churn.yaml'}:7: features[0].type: Input should be")
    assert "(got 'float')" in str(error)


@pytest.mark.parametrize(
    ("spec", "line", "field", "message"),
    [
        # a feature without its name: the line of the feature that lacks it
        (SPEC.replace("  - name: plan\n    type", "  - type"), 9, "features[1].name", "required"),
        # a typo in a key
        (
            SPEC.replace("positive_label", "positive_lable"),
            3,
            "positive_lable",
            "unknown field; did you mean positive_label?",
        ),
        # a check across fields: the feature it is about
        (
            SPEC.replace("    categories: [basic, plus, pro]\n", ""),
            9,
            "features[1]",
            "needs categories",
        ),
        # a categorical target without its classes
        (
            SPEC.replace("positive_label: churned\n", "target_type: categorical\n"),
            1,
            "(document)",
            "a categorical target needs `classes`",
        ),
        # a dataset name that cannot be a lakeFS folder
        (SPEC.replace("name: churn\n", "name: Churn Data\n"), 1, "name", "should match pattern"),
    ],
)
def test_spec_mistakes_are_located(
    tmp_path: Path, spec: str, line: int, field: str, message: str
) -> None:
    folder = project(tmp_path / "churn", ONE_MODEL, spec)

    with pytest.raises(DocumentError) as raised:
        load_project(folder)

    assert (raised.value.line, raised.value.field) == (line, field), str(raised.value)
    assert message in raised.value.message


@pytest.mark.parametrize(
    ("document", "line", "field", "message"),
    [
        (
            "models:\n  - name: churn-model\n    dataset: churn.yaml\n    tsk: binary\n",
            4,
            "models[0].tsk",
            "unknown field",
        ),
        (
            "models:\n  - name: churn-model\n    dataset: churn.yaml\n    task: ranking\n",
            4,
            "models[0].task",
            "'binary', 'multiclass' or 'regression'",
        ),
        (
            "models:\n  - name: churn-model\n    dataset: churn.yaml\n"
            "    gate: {primary_metric: auc}\n",
            4,
            "models[0].gate.primary_metric",
            "'auc' is not a holdout metric",
        ),
        (
            "models:\n  - name: churn-model\n    dataset: churn.yaml\n    estimator: xgboost\n",
            4,
            "models[0].estimator",
            "neither a built-in estimator",
        ),
        (
            "models:\n  - name: churn-model\n    dataset: missing.yaml\n",
            3,
            "models[0].dataset",
            "no dataset spec at",
        ),
        ("models:\n  - name: [churn\n", 3, None, "not valid YAML"),
        ("models: []\n", 1, "models", "at least 1 item"),
        (
            "models:\n  - {name: a, dataset: churn.yaml}\n  - {name: a, dataset: churn.yaml}\n",
            1,
            "models",
            "two models are named 'a'",
        ),
        (
            "models:\n  - name: churn-model\n    dataset: churn.yaml\n    task: regression\n",
            4,
            "models[0].task",
            "regression does not fit the target of churn.yaml (churned is binary: a binary task)",
        ),
        (
            "models:\n  - name: churn-model\n    dataset: churn.yaml\n    estimator: ridge\n",
            4,
            "models[0].estimator",
            "ridge is not a binary estimator; choose hist_gradient_boosting, logistic_regression",
        ),
        (
            "models:\n  - name: churn-model\n    dataset: churn.yaml\n"
            "    gate: {primary_metric: r2}\n",
            4,
            "models[0].gate",
            "the gate names r2, which a binary model does not record",
        ),
        ("model:\n  - name: a\n", 1, "model", "unknown field; did you mean models?"),
        ("models:\n  - {name: a, dataset: churn.yaml}\nowner: me\n", 3, "owner", "known: models"),
    ],
)
def test_project_file_mistakes_are_located(
    tmp_path: Path, document: str, line: int, field: str | None, message: str
) -> None:
    folder = project(tmp_path / "churn", document)

    with pytest.raises(DocumentError) as raised:
        load_project(folder)

    error = raised.value
    assert error.path == folder / "driftloop.yaml"
    assert (error.line, error.field) == (line, field), str(error)
    assert message in error.message, str(error)


def test_several_models_need_a_name(tmp_path: Path) -> None:
    folder = project(
        tmp_path / "two",
        """\
        models:
          - {name: churn-a, dataset: churn.yaml}
          - {name: churn-b, dataset: churn.yaml, task: binary}
        """,
    )
    loaded = load_project(folder)

    assert loaded.model("churn-b").name == "churn-b"
    with pytest.raises(ProjectError, match=r"declares 2 models \(churn-a, churn-b\): say which"):
        loaded.model()
    with pytest.raises(ProjectError, match="declares no model 'churn-c'"):
        loaded.model("churn-c")


def test_a_model_declares_its_rollout_by_name_or_in_full(tmp_path: Path) -> None:
    folder = project(
        tmp_path / "churn",
        """\
        models:
          - name: churn-model
            dataset: churn.yaml
            rollout: shadow
          - name: churn-canary
            dataset: churn.yaml
            rollout: {mode: canary, share: 0.2, entity_key: plan, min_labels: 500}
          - name: churn-direct
            dataset: churn.yaml
        """,
    )

    loaded = load_project(folder)

    assert loaded.model("churn-model").config.rollout.mode == "shadow"
    canary = loaded.model("churn-canary").config.rollout
    assert (canary.mode, canary.share, canary.entity_key, canary.min_labels) == (
        "canary",
        0.2,
        "plan",
        500,
    )
    assert loaded.model("churn-direct").config.rollout.mode == "direct"


@pytest.mark.parametrize(
    ("rollout", "message"),
    [
        ("{mode: canary, entity_key: customer}", "entity_key customer is not a feature"),
        ("{mode: canary, share: 1.5}", "share"),
        ("blue-green", "mode"),
    ],
)
def test_a_wrong_rollout_is_refused_naming_the_field(
    tmp_path: Path, rollout: str, message: str
) -> None:
    folder = project(
        tmp_path / "churn",
        f"""\
        models:
          - name: churn-model
            dataset: churn.yaml
            rollout: {rollout}
        """,
    )

    with pytest.raises(DocumentError, match=message) as refused:
        load_project(folder)
    assert "models[0].rollout" in str(refused.value)
