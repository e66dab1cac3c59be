"""`driftloop init` on awkward files: each gives a usable project or a clear refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop.datasets.validation import validate_batch
from driftloop.project import load_project
from driftloop.spec_inference import InitError, infer_spec, read_sample
from tests.bundled_data import diabetes_frame, wine_frame
from tests.commands import run_driftloop as driftloop


def customers(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    """A churn table with what real exports have: ids, timestamps, free text, nulls, junk."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer_id": [f"C{100000 + i}" for i in range(rows)],
            "signed_up_at": pd.date_range("2025-01-01", periods=rows, freq="h").astype(str),
            "plan": rng.choice(["basic", "plus", "pro"], rows),
            "monthly_fee": rng.uniform(5, 80, rows).round(2),
            "support_calls": rng.integers(0, 12, rows),
            # numbers as text, one in fifty a typo: mixed types in a column
            "tenure_months": [
                "n/a" if i % 50 == 7 else str(int(v))
                for i, v in enumerate(rng.integers(1, 60, rows))
            ],
            "notes": [f"called about invoice {i}" for i in range(rows)],  # high-cardinality text
            "referrer": [None] * rows,  # all null
            "discount": np.where(rng.random(rows) < 0.2, np.nan, rng.uniform(0, 0.3, rows)),
            "churned": (rng.random(rows) < 0.2).astype(int),
        }
    )


def test_a_messy_export_gives_a_spec_its_own_rows_pass(tmp_path: Path) -> None:
    frame = customers()

    inferred = infer_spec(frame, name="customers", target="churned")

    spec = inferred.spec
    assert inferred.task == "binary" and spec["target_type"] == "binary"
    assert spec["id_column"] == "customer_id" and spec["time_column"] == "signed_up_at"
    features = {f["name"]: f for f in spec["features"]}
    assert features["plan"] == {
        "name": "plan",
        "type": "categorical",
        "categories": ["basic", "plus", "pro"],
    }
    assert features["support_calls"]["type"] == "integer"
    assert features["support_calls"]["minimum"] == 0  # not below 0: none of the data is
    assert features["monthly_fee"]["type"] == "numeric"
    assert features["monthly_fee"]["maximum"] > frame["monthly_fee"].max()  # widened
    assert features["discount"]["nullable"] is True
    assert features["tenure_months"]["type"] == "integer"  # 98 % numbers
    assert spec["ignored_columns"] == ["notes", "referrer"]
    reasons = {g.column: g.reason for g in inferred.guesses}
    assert "rows with the others (['n/a']) will be refused" in reasons["tenure_months"]
    assert "300 different strings" in reasons["notes"]
    assert reasons["referrer"] == "all null: nothing to learn its type from"

    from driftloop.datasets.spec import DatasetSpec

    audit = validate_batch(frame, DatasetSpec.model_validate(spec)).report
    failed = {check.name: check.detail for check in audit.failures}
    assert set(failed) == {"types"} and "tenure_months" in failed["types"]  # only the typos
    clean = frame[frame["tenure_months"] != "n/a"]
    assert validate_batch(clean, DatasetSpec.model_validate(spec)).report.passed


@pytest.mark.parametrize(
    ("frame", "target", "message"),
    [
        (customers().assign(churned=0), "churned", "target 'churned' has one value (0) in 300"),
        (customers().assign(churned=None), "churned", "target 'churned' is all null"),
        (customers().head(0), "churned", "the file has no rows"),
        (customers(), "churn", "no column 'churn'; the columns are customer_id"),
        (
            customers().rename(columns={"plan": "Plan Name"}),
            "churned",
            "rename them in the data first: 'Plan Name' -> 'plan_name'",
        ),
    ],
)
def test_unusable_data_is_refused_with_the_reason(
    frame: pd.DataFrame, target: str, message: str
) -> None:
    with pytest.raises(InitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        infer_spec(frame, name="customers", target=target)


def test_the_task_follows_the_target() -> None:
    assert infer_spec(wine_frame(), name="wine", target="cultivar").task == "multiclass"
    assert infer_spec(diabetes_frame(), name="diabetes", target="progression").task == "regression"
    whole_classes = wine_frame().assign(cultivar=lambda f: f["cultivar"].str[-1].astype(int))
    guessed = infer_spec(whole_classes, name="wine", target="cultivar")
    assert guessed.task == "multiclass" and guessed.spec["classes"] == ["0", "1", "2"]
    with pytest.raises(InitError, match="a binary target is 0 or 1"):
        infer_spec(wine_frame(), name="wine", target="cultivar", task="binary")


def test_a_semicolon_csv_becomes_a_project_that_loads(tmp_path: Path) -> None:
    frame = customers()
    data = tmp_path / "export.csv"
    frame.to_csv(data, sep=";", index=False)

    result = driftloop(
        "init",
        "--from",
        str(data),
        "--target",
        "churned",
        "--into",
        str(tmp_path / "proj"),
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert "customer_id" in result.stdout and "id column" in result.stdout
    assert "wrote" in result.stdout and "review both" in result.stdout
    project = load_project(tmp_path / "proj")
    model = project.model()
    assert (model.name, model.task, model.dataset) == ("export-classifier", "binary", "export")
    assert model.source == str(data)
    assert read_sample(data, 10).shape == (10, frame.shape[1])  # the delimiter was sniffed
    spec_text = (tmp_path / "proj" / "export.yaml").read_text()
    assert "# categorical: 3 different strings" in spec_text
    again = driftloop(
        "init", "--from", str(data), "--target", "churned", "--into", "proj", cwd=tmp_path
    )
    assert again.returncode == 1 and "exists: review it, or pass --force" in again.stderr


def test_a_refusal_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    customers().head(0).to_parquet(empty)

    result = driftloop("init", "--from", str(empty), "--target", "churned", cwd=tmp_path)

    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: the file has no rows" in result.stderr
    assert not (tmp_path / "driftloop.yaml").exists()
