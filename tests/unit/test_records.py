"""The fast check of a list of records says yes exactly where the strict record model does."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from driftloop.datasets.spec import DatasetSpec, load_spec
from driftloop.datasets.transactions import EXAMPLE_RECORD
from driftloop.records import RecordsCheck, record_model

# Values a client might send in any field: the right and wrong JSON types, categories or not.
ODD_VALUES: list[Any] = [
    0, 1, -3, 2.5, 1e300, 2**70, True, False, None, "", "x", "12", "grocery", "swipe",
    "mobile", [], {}, [1.0],
]  # fmt: skip


def with_nullable(spec: DatasetSpec) -> DatasetSpec:
    """``spec`` with every other feature nullable."""
    features = [
        feature.model_copy(update={"nullable": index % 2 == 0})
        for index, feature in enumerate(spec.features)
    ]
    return spec.model_copy(update={"features": features})


def mutated(record: dict[str, Any], rng: random.Random) -> Any:
    changed = dict(record)
    kind = rng.randrange(10)
    if kind == 0:
        del changed[rng.choice(sorted(changed))]
    elif kind == 1:
        changed["colour"] = "red"
    elif kind == 2:
        return rng.choice([[record], "record", None, 3])
    elif kind < 6:
        changed[rng.choice(sorted(changed))] = rng.choice(ODD_VALUES)
    return changed


@pytest.mark.parametrize("nullable", [False, True])
def test_the_column_check_agrees_with_the_record_model(nullable: bool) -> None:
    spec = with_nullable(load_spec("transactions")) if nullable else load_spec("transactions")
    check = RecordsCheck(spec)
    strict: TypeAdapter[list[Any]] = TypeAdapter(list[record_model(spec)])  # type: ignore[misc]
    rng = random.Random(7)
    verdicts = []
    for _ in range(4_000):
        records = [
            mutated(dict(EXAMPLE_RECORD), rng) if rng.random() < 0.3 else dict(EXAMPLE_RECORD)
            for _ in range(rng.randint(1, 3))
        ]
        try:
            strict.validate_python(records)
            valid = True
        except ValidationError:
            valid = False
        assert check(records) == valid, records
        verdicts.append(valid)
    assert 0.2 < sum(verdicts) / len(verdicts) < 0.8  # both answers were put to the test
