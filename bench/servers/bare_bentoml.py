"""A plain BentoML service calling the same model (an async API, BentoML's own routing)."""

from __future__ import annotations

from typing import Any

import bentoml
from bench.servers.common import load_model, score


@bentoml.service(name="bare-bentoml")
class BareService:
    def __init__(self) -> None:
        self.model = load_model()

    @bentoml.api
    async def predict(self, record: dict[str, Any]) -> dict[str, float]:
        return {"score": score(self.model, record)}
