"""The one-pass readers of a /predict body say yes exactly where parsing it (orjson, as every
body was read before) and checking it with the strict record model does."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter, ValidationError

from driftloop.datasets.spec import DatasetSpec, load_spec
from driftloop.datasets.transactions import EXAMPLE_RECORD
from driftloop.records import record_model, record_readers

# Values a client might send in any field: the right and wrong JSON types, categories or not,
# integers beyond 64 bits (orjson reads them as floats), numbers beyond a float's range.
ODD_VALUES: list[Any] = [
    0, 1, -3, 2.5, 1e300, 2**63 - 1, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 2**70, 10**400,
    True, False, None, "", "x", "12", "grocery", "swipe", "mobile", [], {}, [1.0],
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


def accepted_before(strict: TypeAdapter[list[Any]], body: bytes) -> bool:
    try:
        strict.validate_python(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError):
        return False
    return True


@pytest.mark.parametrize("nullable", [False, True])
def test_the_one_pass_readers_agree_with_parsing_and_the_record_model(nullable: bool) -> None:
    spec = with_nullable(load_spec("transactions")) if nullable else load_spec("transactions")
    one, many = record_readers(spec)
    strict: TypeAdapter[list[Any]] = TypeAdapter(list[record_model(spec)])  # type: ignore[misc]
    rng = random.Random(7)
    verdicts = []
    for _ in range(3_000):
        records = [
            mutated(dict(EXAMPLE_RECORD), rng) if rng.random() < 0.3 else dict(EXAMPLE_RECORD)
            for _ in range(rng.randint(1, 3))
        ]
        body = json.dumps(records).encode()
        valid = accepted_before(strict, body)
        try:
            read = many.validate_json(body)
        except ValidationError:
            read = None
        assert (read is not None) == valid, records
        if isinstance(records[0], dict):
            single = json.dumps(records[0]).encode()
            try:
                one.validate_json(single)
                alone = True
            except ValidationError:
                alone = False
            assert alone == accepted_before(strict, b"[" + single + b"]"), records[0]
        verdicts.append(valid)
    assert 0.2 < sum(verdicts) / len(verdicts) < 0.8  # both answers were put to the test
