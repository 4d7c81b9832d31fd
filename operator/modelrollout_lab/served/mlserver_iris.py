"""MLServer runtime for the lab's iris model: `implementation: mlserver_iris.IrisRuntime`.

Inputs (V2 protocol): `features` (FP64, shape [n, 4]) and optionally `labels` (INT64, [n]).
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from served_iris import METRICS, Iris

from modelrollout_instrument.mlserver import instrument_runtime


@instrument_runtime(METRICS)
class IrisRuntime(MLModel):
    async def load(self) -> bool:
        self.iris = Iris()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inputs = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        classes = await self.iris.predict(inputs["features"], inputs.get("labels"))
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output("classes", np.asarray(classes))])
