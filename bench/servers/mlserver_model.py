"""MLServer (1.7.1, in its own environment) with a custom runtime: the same model.

The V2 protocol: ``POST /v2/models/fraud/infer`` with one input per feature and
``"parameters": {"content_type": "pd"}``, decoded by MLServer's PandasCodec into a frame, answered
with one FP64 output ``score``. The bench writes settings.json and model-settings.json and runs
``mlserver start`` on that folder. BENCH_SCORING picks the scoring (see peer_model).
"""

from __future__ import annotations

import os

from bench.servers.peer_model import PeerModel
from mlserver import MLModel
from mlserver.codecs import PandasCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class Fraud(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        self.model = PeerModel(os.environ.get("BENCH_SCORING", "compiled"))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        scores = self.model.score_frame(PandasCodec.decode_request(payload))
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                ResponseOutput(name="score", shape=[len(scores)], datatype="FP64", data=scores)
            ],
        )
