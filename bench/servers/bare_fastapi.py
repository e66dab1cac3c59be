"""Bare FastAPI + uvicorn calling the same model: the baseline the target is measured against."""

from __future__ import annotations

from typing import Any

from bench.servers.common import load_model, score
from fastapi import FastAPI

app = FastAPI()
MODEL = load_model()


@app.post("/predict")
async def predict(record: dict[str, Any]) -> dict[str, float]:
    return {"score": score(MODEL, record)}


@app.post("/predict/many")
async def predict_many(records: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Many records in one request: scored in one call, as driftloop scores a list."""
    return [{"score": value} for value in MODEL.score(records).tolist()]
