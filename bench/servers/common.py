"""What every baseline server does per request: score the record with driftloop's loaded model.

The model is loaded exactly as the inference service loads it (``driftloop.serving.load_version``,
so with the same compiled scoring path), so every server does the same scoring work and the
comparison measures what each server adds around it.
"""

from __future__ import annotations

import os
from typing import Any

from driftloop.serving import LoadedModel, load_version


def load_model() -> LoadedModel:
    """The model named by BENCH_MODEL_TAG from the BentoML store."""
    return load_version(os.environ["BENCH_MODEL_TAG"])


def score(model: LoadedModel, record: dict[str, Any]) -> float:
    return float(model.score([record])[0])
