"""Object detectors as patchlens models: torchvision's by name or module, ultralytics YOLO when installed.

Any other module or function that returns torchvision's form (one dict of
``boxes``, ``scores``, ``labels`` per image) needs no adapter of its own: it is
recognised by its first answer, or declared with ``kind="detector"`` (see
:mod:`patchlens.models.detections`).
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import ModelError
from .torchvision import LOW_SCORE, SCORE_KEYWORDS, TorchvisionDetector, coco_labels, is_torchvision_detector

__all__ = ["TorchvisionDetector", "coco_labels", "is_torchvision_detector", "load_torchvision_detector", "torchvision_detectors"]


def torchvision_detectors() -> list[str]:
    """Torchvision's detection model names."""
    import torchvision
    from torchvision.models import detection

    return list(torchvision.models.list_models(module=detection))


def load_torchvision_detector(
    name: str, *, pretrained: bool = True, seed: int = 0, device: str | torch.device = "cpu",
    model_kwargs: dict[str, Any] | None = None, **options: Any,
) -> TorchvisionDetector:
    """``torchvision:<name>`` for a detection model: COCO weights, or random ones drawn from ``seed`` with
    ``pretrained=False`` (the same detector on every load, in every Ray worker, as for classifiers).

    Random weights never download anything: the backbone's ImageNet weights
    (``weights_backbone``) are left out too.
    """
    import torchvision

    from ..weights import seeded_init, weights_error

    kwargs = dict(model_kwargs or {})
    family = next((k for k in sorted(SCORE_KEYWORDS, key=len, reverse=True) if name.startswith(k)), None)
    if family is not None:
        kwargs.setdefault(SCORE_KEYWORDS[family], LOW_SCORE)
    try:
        if pretrained:
            module = torchvision.models.get_model(name, weights="DEFAULT", **kwargs)
        else:
            with seeded_init(seed):
                module = torchvision.models.get_model(name, weights=None, weights_backbone=None, **kwargs)
    except Exception as exc:  # noqa: BLE001  third-party code (a loader, an exporter, a runtime) may raise anything: one ModelError or a fallback
        if pretrained:
            raise weights_error(f"torchvision:{name}", exc) from None
        raise ModelError(f"torchvision:{name}: {type(exc).__name__}: {exc}") from None
    module = module.eval().to(device)
    if "labels" not in options and "num_classes" not in kwargs:  # COCO's categories, kept with the weights' description
        options["labels"] = list(torchvision.models.get_model_weights(name).DEFAULT.meta["categories"])
    return TorchvisionDetector(module, model_id=f"torchvision:{name}", **options)
