"""A BentoML 1.4 service for the lab's iris model: `bentoml serve bentoml_iris:Iris --port P`.

POST /predict {"instances": [[4 floats or null]], "labels": [...] or null}.
"""

from __future__ import annotations

import bentoml
from served_iris import METRICS, Iris as IrisModel

from modelrollout_instrument.bentoml import counted_api


@bentoml.service
class Iris:
    def __init__(self) -> None:
        self.iris = IrisModel()

    @bentoml.api
    @counted_api(METRICS)
    async def predict(self, instances: list[list[float | None]], labels: list[int] | None = None) -> list[int]:
        return await self.iris.predict(instances, labels)
