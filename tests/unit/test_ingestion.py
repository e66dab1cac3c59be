"""Pure parts of ingestion: batch ids, paths, metadata, Parquet round trip."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from driftloop.datasets.spec import load_spec
from driftloop.datasets.transactions import generate_transactions
from driftloop.ingestion import (
    batch_path,
    check_batch_id,
    commit_metadata,
    derive_batch_id,
    ingest_branch,
    to_parquet,
)


def test_batch_ids_follow_content() -> None:
    frame = generate_transactions(100, seed=1)

    assert derive_batch_id(frame, "transactions") == derive_batch_id(frame.copy(), "transactions")
    assert derive_batch_id(frame, "transactions") != derive_batch_id(frame.head(99), "transactions")
    assert derive_batch_id(frame, "transactions").startswith("transactions-")


@pytest.mark.parametrize("bad", ["a/b", "a.b", "", "-x", "with space"])
def test_batch_ids_must_make_valid_branch_names(bad: str) -> None:
    with pytest.raises(ValueError, match="batch id"):
        check_batch_id(bad)


def test_paths_branches_and_metadata_follow_the_design() -> None:
    spec = load_spec("transactions")

    metadata = commit_metadata(spec, "2026-11-26", 42, "builtin", "http://prefect/runs/1")

    assert (
        batch_path("transactions", "2026-11-26")
        == "datasets/transactions/batches/2026-11-26.parquet"
    )
    assert ingest_branch("2026-11-26") == "ingest-2026-11-26"
    assert metadata == {
        "driftloop.batch_id": "2026-11-26",
        "driftloop.dataset": "transactions",
        "driftloop.rows": "42",
        "driftloop.schema_sha256": spec.schema_sha256(),
        "driftloop.source": "builtin",
        "::lakefs::Prefect::url[url:ui]": "http://prefect/runs/1",
    }


def test_parquet_round_trip_keeps_values_and_types() -> None:
    frame = generate_transactions(300, seed=2)

    back = pd.read_parquet(io.BytesIO(to_parquet(frame)))

    pd.testing.assert_frame_equal(back, frame, check_dtype=True)
