"""A batch of scores goes into a Prometheus histogram as the same series one observe per score
would give (the inference service counts a request's rows, and a shadow's batches, at once)."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from driftloop.serving import observe_many

BUCKETS = (0.01, 0.05, 0.1, 0.5, 0.9, 1.0)


def exposition(values: list[float], batched: bool) -> str:
    registry = CollectorRegistry()
    histogram = Histogram("scores", "Scores.", ["role"], buckets=BUCKETS, registry=registry)
    child = histogram.labels("champion")
    if batched:
        observe_many(child, values[:1])  # one value: the plain observe
        observe_many(child, values[1:])
    else:
        for value in values:
            child.observe(value)
    lines = generate_latest(registry).decode().splitlines()
    return "\n".join(line for line in lines if "_created" not in line)


def test_a_batch_fills_the_buckets_count_and_sum_as_one_observe_each_would() -> None:
    noise = random.Random(7)
    # Values on the bucket bounds (observe puts a value into the bucket of its own bound), below
    # the first, between, and beyond the last finite bound (+Inf).
    values = [*BUCKETS, 0.0, 0.01, 0.0100001, 0.3, 1.0, 3.5, 1e9]
    values += [noise.random() for _ in range(500)]

    assert exposition(values, batched=True) == exposition(values, batched=False)
    assert 'scores_bucket{le="0.05",role="champion"}' in exposition(values, batched=True)


def test_an_empty_batch_changes_nothing() -> None:
    assert exposition([0.2], batched=True) == exposition([0.2], batched=False)
    registry = CollectorRegistry()
    child = Histogram("scores", "Scores.", buckets=BUCKETS, registry=registry)
    observe_many(child, [])
    assert "scores_count 0.0" in generate_latest(registry).decode()
