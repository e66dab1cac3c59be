"""KServe's Python model server (kserve 0.21, in its own environment) with a custom model.

    python bench/servers/kserve_server.py --http_port PORT --enable_grpc false ...

The v1 protocol: ``POST /v1/models/fraud:predict`` with ``{"instances": [record, ...]}``,
answered ``{"predictions": [score, ...]}``. BENCH_SCORING picks the scoring (see peer_model).
"""

from __future__ import annotations

import os
from typing import Any

from bench.servers.peer_model import PeerModel
from kserve import Model, ModelServer, model_server


class Fraud(Model):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.model: PeerModel | None = None
        self.load()

    def load(self) -> bool:
        self.model = PeerModel(os.environ.get("BENCH_SCORING", "compiled"))
        self.ready = True
        return True

    async def predict(
        self, payload: Any, headers: Any = None, response_headers: Any = None
    ) -> dict[str, Any]:
        assert self.model is not None
        return {"predictions": self.model.score(payload["instances"])}


if __name__ == "__main__":
    args, _ = model_server.parser.parse_known_args()
    ModelServer().start([Fraud(args.model_name)])
