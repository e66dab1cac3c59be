"""Batch validation: every check, the report, and the canonical form of a good batch."""

from __future__ import annotations

import pandas as pd
import pytest

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.datasets.validation import validate_batch

SPEC = load_spec("transactions")


def failed(frame: pd.DataFrame) -> dict[str, str]:
    report = validate_batch(frame, SPEC).report
    return {check.name: check.detail for check in report.failures}


@pytest.fixture
def batch() -> pd.DataFrame:
    return generate_transactions(500, seed=4)


def test_a_generated_batch_passes_and_is_canonical_as_given(batch: pd.DataFrame) -> None:
    audit = validate_batch(batch, SPEC)

    assert audit.report.passed, audit.report.summary()
    assert audit.as_given
    assert [c.name for c in audit.report.checks] == [
        "schema",
        "row count",
        "types",
        "nulls",
        "ranges",
        "categories",
        "duplicates",
        "label share",
    ]


def test_missing_and_unexpected_columns(batch: pd.DataFrame) -> None:
    problems = failed(batch.drop(columns=["channel"]).assign(colour="red"))

    assert "missing columns: channel" in problems["schema"]
    assert "unexpected columns: colour" in problems["schema"]


def test_types_from_a_csv_are_converted_and_bad_ones_named(batch: pd.DataFrame) -> None:
    text = batch.astype(str)
    good = validate_batch(text, SPEC)
    text.loc[4, "amount"] = "twelve"
    text.loc[6, "hour"] = "3.5"

    problems = failed(text)

    assert good.report.passed and not good.as_given
    assert good.canonical["hour"].dtype == "int64" and good.canonical["is_foreign"].dtype == bool
    assert "amount: 1 values are not numbers" in problems["types"] and "twelve" in problems["types"]
    assert "hour: 1 values are not whole numbers" in problems["types"]


def test_nulls_ranges_and_categories(batch: pd.DataFrame) -> None:
    batch.loc[1, "distance_from_home_km"] = None
    batch.loc[2, "customer_age"] = 7
    batch.loc[3, "amount"] = -1.0
    batch.loc[5, "channel"] = "carrier pigeon"

    problems = failed(batch)

    assert "distance_from_home_km (1 nulls)" in problems["nulls"]
    assert "customer_age: 1 values outside [18.0, 100.0]" in problems["ranges"]
    assert "amount" in problems["ranges"]
    assert "carrier pigeon" in problems["categories"]


def test_duplicate_ids_and_row_count_and_label_share(batch: pd.DataFrame) -> None:
    batch.loc[10, "transaction_id"] = batch.loc[11, "transaction_id"]
    small = batch.head(20)
    no_fraud = batch.assign(is_fraud=0)
    bad_labels = batch.assign(is_fraud=2)

    assert "1 repeated transaction_id" in failed(batch)["duplicates"]
    assert "20 rows" in failed(small)["row count"]
    assert "0.00% fraud" in failed(no_fraud)["label share"]
    assert "labels are not 0 or 1" in failed(bad_labels)["types"]


def test_every_failure_is_reported_at_once_with_a_markdown_table(batch: pd.DataFrame) -> None:
    batch.loc[0, "hour"] = 30
    batch.loc[1, "device"] = "toaster"
    report = validate_batch(batch.drop(columns=["customer_age"]), SPEC).report

    assert {c.name for c in report.failures} == {"schema", "ranges", "categories"}
    assert report.summary().startswith("3 of 8 checks failed on 500 rows:")
    markdown = report.to_markdown("Validation of batch x")
    assert "| ranges | **FAIL** |" in markdown and "**rejected**" in markdown


def test_breast_cancer_without_id_column_checks_repeated_rows() -> None:
    from driftloop.datasets.sources import breast_cancer_frame

    frame = breast_cancer_frame()
    doubled = pd.concat([frame, frame.head(3)], ignore_index=True)

    assert validate_batch(frame, load_spec("breast_cancer")).report.passed
    report = validate_batch(doubled, load_spec("breast_cancer")).report
    assert (
        "3 rows repeat an earlier row" in {c.name: c.detail for c in report.failures}["duplicates"]
    )
