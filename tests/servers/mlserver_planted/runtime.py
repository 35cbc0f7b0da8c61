"""The planted numpy model as an MLServer 1.7 custom runtime (see model-settings.json beside it)."""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from planted_numpy import planted


class PlantedRuntime(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        pixels = NumpyCodec.decode_input(payload.inputs[0])
        if payload.inputs[0].name == "boom":  # a buggy model: a 500 with a body
            raise TypeError("float() argument must be a string or a real number, not 'dict'")
        scores = planted(pixels)
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("probabilities", scores)])
