"""Serve a TorchScript classifier with KServe (Open Inference Protocol v2), for patchlens.

    python kserve_torch.py model.pt mynet 224 --http_port 8080    # http://HOST:8080/v2/models/mynet

The model takes pixels in [0, 1], shape (N, 3, SIZE, SIZE), and normalises
them itself; patchlens reads the input's name, type and size from
get_input_types() and explains the softmax of the model's outputs.
"""

import sys

import kserve
import torch
from kserve import InferOutput, InferRequest, InferResponse


class TorchClassifier(kserve.Model):
    def __init__(self, name: str, path: str, size: int):
        super().__init__(name)
        self.net = torch.jit.load(path).eval()
        self.size = size
        with torch.no_grad():  # the number of classes, from one forward pass
            self.classes = self.net(torch.zeros(1, 3, size, size)).shape[1]
        self.ready = True

    def get_input_types(self):
        return [{"name": "pixels", "datatype": "FP32", "shape": [-1, 3, self.size, self.size]}]

    def get_output_types(self):
        return [{"name": "probabilities", "datatype": "FP32", "shape": [-1, self.classes]}]

    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        x = torch.from_numpy(payload.inputs[0].as_numpy())
        with torch.no_grad():
            p = self.net(x).softmax(dim=1).numpy()
        out = InferOutput(name="probabilities", shape=list(p.shape), datatype="FP32", data=p)
        return InferResponse(response_id=payload.id, model_name=self.name, infer_outputs=[out])


if __name__ == "__main__":
    path, name, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    kserve.ModelServer(enable_grpc=False).start([TorchClassifier(name, path, size)])  # port: --http_port
