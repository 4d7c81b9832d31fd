"""KServe ModelServer for the lab's iris model: `python kserve_iris.py --http_port P`.

V1 protocol: POST /v1/models/iris:predict {"instances": [[4 floats or null]], "labels": [...]}.
"""

from __future__ import annotations

import kserve
from served_iris import METRICS, Iris

from modelrollout_instrument.kserve import instrument_model


@instrument_model(METRICS)
class IrisModel(kserve.Model):
    def load(self) -> bool:
        self.iris = Iris()
        self.ready = True
        return self.ready

    async def predict(self, payload, headers=None):
        classes = await self.iris.predict(payload["instances"], payload.get("labels"))
        return {"predictions": classes}


if __name__ == "__main__":
    model = IrisModel("iris")
    model.load()
    kserve.ModelServer().start([model])
