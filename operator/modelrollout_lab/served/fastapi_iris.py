"""A plain FastAPI server for the lab's iris model: `python fastapi_iris.py PORT`.

POST /predict {"instances": [[4 floats or null]], "labels": [...]}; GET /healthz; GET /metrics.
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from served_iris import METRICS, Iris

from modelrollout_instrument.fastapi import instrument_app

app = FastAPI()
iris = Iris()
instrument_app(app, METRICS, counted=lambda path: path == "/predict")


@app.get("/healthz")
async def healthz() -> dict:
    return {"ok": True}


@app.post("/predict")
async def predict(payload: dict) -> dict:
    return {"predictions": await iris.predict(payload["instances"], payload.get("labels"))}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
