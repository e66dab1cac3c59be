"""Dataset specs, the transaction generator and batch sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftloop.datasets.sources import SourceError, load_batch
from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import SCENARIOS, generate_transactions


def test_both_shipped_specs_load_and_describe_their_columns() -> None:
    transactions, cancer = load_spec("transactions"), load_spec("breast_cancer")

    assert transactions.target == "is_fraud" and transactions.id_column == "transaction_id"
    assert len(transactions.features) == 10
    assert {f.type for f in transactions.features} == {
        "numeric",
        "integer",
        "categorical",
        "boolean",
    }
    assert cancer.target == "malignant" and len(cancer.features) == 30
    assert transactions.schema_sha256() != cancer.schema_sha256()


def test_unknown_example_is_refused() -> None:
    with pytest.raises(ValueError, match="no example project 'imagenet'; examples: breast_cancer"):
        load_spec("imagenet")


def test_generator_is_deterministic_by_seed() -> None:
    first = generate_transactions(2000, seed=7)
    again = generate_transactions(2000, seed=7)
    other = generate_transactions(2000, seed=8)

    pd.testing.assert_frame_equal(first, again)
    assert not first["amount"].equals(other["amount"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_has_two_to_five_percent_fraud(scenario: str) -> None:
    frame = generate_transactions(20_000, seed=1, scenario=scenario)  # type: ignore[arg-type]

    assert 0.02 <= frame["is_fraud"].mean() <= 0.05
    assert list(frame.columns) == load_spec("transactions").columns


def test_covariate_shift_moves_amounts_and_merchant_mix() -> None:
    base = generate_transactions(20_000, seed=1)
    shifted = generate_transactions(20_000, seed=1, scenario="covariate_shift")

    assert shifted["amount"].median() > 2 * base["amount"].median()
    online_share = (shifted["merchant_category"] == "online_retail").mean()
    assert online_share > 2 * (base["merchant_category"] == "online_retail").mean()


def test_concept_drift_changes_who_the_fraudsters_are() -> None:
    base = generate_transactions(40_000, seed=1)
    drifted = generate_transactions(40_000, seed=1, scenario="concept_drift")

    def fraud_median_amount(frame: pd.DataFrame) -> float:
        return float(frame.loc[frame["is_fraud"] == 1, "amount"].median())

    assert fraud_median_amount(drifted) < fraud_median_amount(base) / 3
    assert drifted["txn_count_24h"].mean() > 1.5 * base["txn_count_24h"].mean()


def test_customer_age_carries_no_fraud_signal() -> None:
    frame = generate_transactions(100_000, seed=3)

    correlation = np.corrcoef(frame["customer_age"], frame["is_fraud"])[0, 1]

    assert abs(correlation) < 0.02
    assert load_spec("transactions").feature("customer_age").signal == "none"


def test_builtin_source_takes_generator_options() -> None:
    spec = load_spec("transactions")

    frame = load_batch("builtin:?rows=300&seed=5&scenario=covariate_shift&start=2026-03-01", spec)

    assert len(frame) == 300
    assert frame["event_time"].min() >= pd.Timestamp("2026-03-01", tz="UTC")
    pd.testing.assert_frame_equal(
        frame,
        generate_transactions(
            300, seed=5, scenario="covariate_shift", start=pd.Timestamp("2026-03-01", tz="UTC")
        ),
    )


def test_builtin_breast_cancer_is_the_bundled_data() -> None:
    spec = load_spec("breast_cancer")

    full = load_batch("builtin", spec)
    sample = load_batch("builtin:?rows=100&seed=1", spec)

    assert len(full) == 569 and list(full.columns) == spec.columns
    assert full["malignant"].sum() == 212
    assert len(sample) == 100


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("builtin:?rows=ten", "'rows' must be an integer"),
        ("builtin:?scenario=apocalypse", "unknown scenario"),
        ("builtin:?colour=red", "unknown source options"),
        ("/no/such/file.parquet", "does not exist"),
    ],
)
def test_bad_sources_say_why(source: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        load_batch(source, load_spec("transactions"))


def test_files_and_folders_of_csv_and_parquet(tmp_path: Path) -> None:
    spec = load_spec("transactions")
    frame = generate_transactions(200, seed=2)
    frame.iloc[:120].to_parquet(tmp_path / "a.parquet")
    frame.iloc[120:].to_csv(tmp_path / "b.csv", index=False)
    (tmp_path / "notes.txt").write_text("ignored")

    from_folder = load_batch(str(tmp_path), spec)
    from_file = load_batch(str(tmp_path / "a.parquet"), spec)

    assert len(from_folder) == 200 and len(from_file) == 120
    assert from_folder["transaction_id"].tolist() == frame["transaction_id"].tolist()
