"""Ultralytics YOLO models (``ultralytics:<weights.pt>``), when the ``ultralytics`` package is installed.

The model is called as a black box: a batch of [0, 1] images (sides a multiple
of 32, as YOLO needs) goes to ``YOLO.predict``, and each ``Results`` object's
boxes (``xyxy`` in the input's pixels), confidences and classes come back in
torchvision's form. Detections are kept down to a confidence of 0.001 so that
weak matches still count for D-RISE; ``all`` and ``label:`` still use the
model's ``min_score``. YOLO reports one class per box, so D-RISE weighs each
match by its confidence (no class vectors, no proposals before suppression).
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import ModelError
from ..black_box import CallableClassifier

#: the confidence YOLO keeps detections down to
LOW_CONFIDENCE = 0.001


class UltralyticsDetector(CallableClassifier):
    """A YOLO model from the ultralytics package, as a black-box detector."""

    runtime = "ultralytics"

    def __init__(self, yolo: Any, *, input_size: int | tuple[int, int] = 640, device: str | torch.device = "cpu",
                 model_id: str | None = None, labels: Any = None, min_score: float = 0.5) -> None:
        side = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if any(int(s) % 32 for s in side):
            raise ModelError(f"{model_id or 'ultralytics'}: input_size={side}: YOLO needs sides that are multiples of 32")
        names = getattr(yolo, "names", None) or {}
        if labels is None and names:
            labels = [str(names[i]) for i in range(max(names) + 1)] if isinstance(names, dict) else list(names)
        self.yolo = yolo
        self.where = str(device)
        super().__init__(self._detect, input_size=side, labels=labels, device=device, kind="detector",  # type: ignore[arg-type]
                         model_id=model_id or "ultralytics", min_score=min_score)
        self.outputs_probabilities = False

    def _detect(self, batch: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        results = self.yolo.predict(batch, verbose=False, conf=LOW_CONFIDENCE, imgsz=list(self.input_size), device=self.where)
        out = []
        for r in results:
            boxes = r.boxes
            out.append({"boxes": torch.as_tensor(boxes.xyxy).float().cpu(), "scores": torch.as_tensor(boxes.conf).float().cpu(),
                        "labels": torch.as_tensor(boxes.cls).long().cpu()})
        return out


def load_ultralytics(weights: str, *, device: str | torch.device = "cpu", **options: Any) -> UltralyticsDetector:
    try:
        from ultralytics import YOLO
    except ImportError:
        raise ModelError(f"ultralytics:{weights}: the ultralytics package is not installed (pip install 'patchlens[ultralytics]')") from None
    try:
        yolo = YOLO(weights)
    except Exception as exc:  # noqa: BLE001  third-party code (a loader, an exporter, a runtime) may raise anything: one ModelError or a fallback
        raise ModelError(f"ultralytics:{weights}: cannot load ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    options.setdefault("model_id", f"ultralytics:{weights}")
    return UltralyticsDetector(yolo, device=device, **options)
