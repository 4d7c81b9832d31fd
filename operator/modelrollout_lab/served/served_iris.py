"""The lab's tiny model, shared by its real model servers (run by their own venv's python).

A logistic regression trained at start-up on scikit-learn's iris data (shipped with the package:
nothing is downloaded). Instrumented with modelrollout_instrument: inputs (missing values are
imputed to the training mean, and counted), prediction scores, and feedback when the request
carries the true labels. A negative measurement makes the model raise, as a broken model would:
that is how tests send failing requests. IRIS_DELAY_SECONDS slows every prediction.
"""

from __future__ import annotations

import asyncio
import os

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from modelrollout_instrument import ModelMetrics

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
METRICS = ModelMetrics(features=FEATURES)
DELAY_SECONDS = float(os.environ.get("IRIS_DELAY_SECONDS", "0"))


class BrokenInput(RuntimeError):
    pass


class Iris:
    def __init__(self) -> None:
        x, y = load_iris(return_X_y=True)
        self.scale = x.max(axis=0)
        self.mean = x.mean(axis=0)
        self.model = LogisticRegression(max_iter=1000).fit(x, y)

    async def predict(self, rows, labels=None) -> list[int]:
        await asyncio.sleep(DELAY_SECONDS)
        x = np.asarray(rows, dtype=float).reshape(-1, len(FEATURES))
        missing = np.isnan(x)
        x = np.where(missing, self.mean, x)
        METRICS.inputs({f: None if gone else value / scale for f, value, gone, scale
                        in zip(FEATURES, row, gaps, self.scale)} for row, gaps in zip(x, missing))
        if (x < 0).any():
            raise BrokenInput("a negative measurement")
        proba = self.model.predict_proba(x)
        METRICS.predictions(proba.max(axis=1))
        classes = proba.argmax(axis=1)
        for predicted, label in zip(classes, labels if labels is not None else ()):
            METRICS.feedback(int(predicted) == int(label))
        return [int(c) for c in classes]
