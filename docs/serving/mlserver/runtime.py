"""An MLServer custom runtime serving a TorchScript classifier (see model-settings.json beside it), for patchlens."""

import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class TorchClassifier(MLModel):
    async def load(self) -> bool:
        self.net = torch.jit.load(self.settings.parameters.uri).eval()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = torch.from_numpy(NumpyCodec.decode_input(payload.inputs[0]))
        with torch.no_grad():
            p = self.net(x).softmax(dim=1).numpy()
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("probabilities", p)])
