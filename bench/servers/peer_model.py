"""The model every peer server loads: the same fitted pipeline, scored one of two ways.

Runs inside a peer's own environment (KServe's, MLServer's), which has scikit-learn, numpy,
pandas and scipy at the project's versions but not driftloop's dependencies: the pipeline comes
from a joblib file the bench exports from the BentoML store (BENCH_MODEL_FILE), and the compiled
scorer is imported from the project's ``src`` (``driftloop.scoring`` needs numpy and scipy only).

- ``compiled``: driftloop's own scoring function (``driftloop.scoring.compile_pipeline``), the
  work driftloop and the bare servers do per request;
- ``sklearn``: the records as a DataFrame into ``predict_proba``, what a user of that server
  writes out of the box.
"""

from __future__ import annotations

import os
from typing import Any

import joblib
import numpy as np
import pandas as pd


class PeerModel:
    def __init__(self, scoring: str) -> None:
        if scoring not in ("compiled", "sklearn"):
            raise SystemExit(f"BENCH_SCORING must be compiled or sklearn, not {scoring!r}")
        self.pipeline = joblib.load(os.environ["BENCH_MODEL_FILE"])
        self.compiled = None
        if scoring == "compiled":
            from driftloop.scoring import compile_pipeline

            self.compiled = compile_pipeline(self.pipeline)
            if self.compiled is None:
                raise SystemExit("the bench's model is not one the compiled path covers")

    def score(self, records: list[dict[str, Any]]) -> list[float]:
        if self.compiled is not None:
            scores: np.ndarray = self.compiled.score(records)
        else:
            scores = self.pipeline.predict_proba(pd.DataFrame.from_records(records))[:, 1]
        return scores.tolist()  # type: ignore[no-any-return]

    def score_frame(self, frame: pd.DataFrame) -> list[float]:
        """Scores of a frame a server decoded (MLServer's PandasCodec)."""
        if self.compiled is not None:
            return self.score(frame.to_dict("records"))  # type: ignore[arg-type]
        return self.pipeline.predict_proba(frame)[:, 1].tolist()  # type: ignore[no-any-return]
