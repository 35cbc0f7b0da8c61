"""The planted numpy model as a KServe 0.21 model server, on 127.0.0.1 only: ``python kserve_planted.py PORT``.

Answers both KServe protocols: v1 (``/v1/models/planted:predict``, HWC
instances) and v2 (``/v2/models/planted/infer``). ``POST`` with the input
named ``boom`` raises in predict(), as a buggy model would (a 500 with a body).
"""

from __future__ import annotations

import sys

import kserve
import numpy as np
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse
from planted_numpy import LABELS, SIZE, planted


class _Loopback(uvicorn.Config):
    """KServe 0.21 hard-codes host 0.0.0.0; a test server must listen on loopback only."""

    def __init__(self, *args, **kwargs):
        kwargs["host"] = "127.0.0.1"
        super().__init__(*args, **kwargs)


uvicorn.Config = _Loopback  # type: ignore[misc]


class Planted(kserve.Model):
    def __init__(self) -> None:
        super().__init__("planted")
        self.load()

    def get_input_types(self):
        return [{"name": "pixels", "datatype": "FP32", "shape": [-1, 3, SIZE, SIZE]}]

    def get_output_types(self):
        return [{"name": "probabilities", "datatype": "FP32", "shape": [-1, len(LABELS)]}]

    def predict(self, payload, headers=None):
        if isinstance(payload, InferRequest):  # v2
            tensor = payload.inputs[0]
            if tensor.name == "boom":
                raise TypeError("float() argument must be a string or a real number, not 'dict'")
            scores = planted(tensor.as_numpy())
            out = InferOutput(name="probabilities", shape=list(scores.shape), datatype="FP32", data=scores)
            return InferResponse(response_id=payload.id, model_name=self.name, infer_outputs=[out])
        x = np.asarray(payload["instances"], dtype=np.float32).transpose(0, 3, 1, 2)  # v1: (N, H, W, 3)
        return {"predictions": planted(x).tolist()}


if __name__ == "__main__":
    port = int(sys.argv[1])
    kserve.ModelServer(http_port=port, enable_grpc=False, workers=1, timeout_keep_alive=int(sys.argv[2]) if len(sys.argv) > 2
                       else 5).start([Planted()])
