"""timm and torchvision models by name. Weights only where the machine can fetch them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any
from urllib.parse import urlsplit

import torch

from ..errors import ModelError
from .imagenet import imagenet_labels
from .torch_module import IMAGENET_MEAN, IMAGENET_STD, TorchClassifier
from .weights import seeded_init
from .weights import weights_error as _weights_error


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub's host (``HF_ENDPOINT``) accepts a connection within ``timeout`` seconds."""
    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def offline_unless_reachable() -> Iterator[None]:
    """Hugging Face Hub offline mode while the Hub cannot be reached.

    Offline, huggingface_hub retries each weight file five times with back-off
    (59 s for ``timm:resnet18`` on the CI machine) before it fails; in offline
    mode it takes cached weights at once and fails at once without them.
    """
    try:
        from huggingface_hub import constants
    except ImportError:  # timm without the hub: nothing to switch
        yield
        return
    if constants.HF_HUB_OFFLINE or hub_reachable():
        yield
        return
    constants.HF_HUB_OFFLINE = True  # read at each request (constants.is_offline_mode)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


def load_timm(
    name: str, *, pretrained: bool = True, seed: int = 0, device: str | torch.device = "cpu", **options: object
) -> TorchClassifier:
    """A timm model; with ``pretrained=False`` its random weights are drawn from ``seed``."""
    try:
        import timm
    except ImportError:
        raise ModelError(f"timm:{name}: timm is not installed (pip install 'patchlens[timm]')") from None
    if not timm.list_models(name) and name not in timm.list_models(pretrained=False):
        raise ModelError(f"timm:{name}: timm has no model of that name (see timm.list_models())")
    model_kwargs = dict(options.pop("model_kwargs", {}) or {})  # type: ignore[call-overload]
    try:
        with offline_unless_reachable() if pretrained else seeded_init(seed):
            module = timm.create_model(name, pretrained=pretrained, **model_kwargs)
    except Exception as exc:  # noqa: BLE001  third-party code (a loader, an exporter, a runtime) may raise anything: one ModelError or a fallback
        if pretrained:
            raise _weights_error(f"timm:{name}", exc) from None
        raise ModelError(f"timm:{name}: {type(exc).__name__}: {exc}") from None
    module = module.eval().to(device)
    cfg = getattr(module, "pretrained_cfg", {}) or {}
    size = cfg.get("input_size", (3, 224, 224))[1:]
    num_classes = getattr(module, "num_classes", 1000)
    labels = imagenet_labels() if num_classes == 1000 else None
    opts: dict[str, Any] = dict(
        mean=cfg.get("mean", IMAGENET_MEAN),
        std=cfg.get("std", IMAGENET_STD),
        input_size=tuple(size),
        labels=labels,
        model_id=f"timm:{name}",
        kind="classifier",
    )
    opts.update(options)
    return TorchClassifier(module, **opts)


def load_torchvision(
    name: str, *, pretrained: bool = True, seed: int = 0, device: str | torch.device = "cpu", **options: object
) -> TorchClassifier:
    """A torchvision model; with ``pretrained=False`` its random weights are drawn from ``seed``."""
    try:
        import torchvision
    except ImportError:
        raise ModelError(f"torchvision:{name}: torchvision is not installed (pip install torchvision)") from None
    if name not in torchvision.models.list_models():
        raise ModelError(f"torchvision:{name}: torchvision has no model of that name (see torchvision.models.list_models())")
    from .detectors import load_torchvision_detector, torchvision_detectors

    if name in torchvision_detectors():
        return load_torchvision_detector(name, pretrained=pretrained, seed=seed, device=device, **options)  # type: ignore[arg-type]
    try:
        with nullcontext() if pretrained else seeded_init(seed):
            module = torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None)
    except Exception as exc:  # noqa: BLE001  third-party code (a loader, an exporter, a runtime) may raise anything: one ModelError or a fallback
        if pretrained:
            raise _weights_error(f"torchvision:{name}", exc) from None
        raise ModelError(f"torchvision:{name}: {type(exc).__name__}: {exc}") from None
    module = module.eval().to(device)
    labels = None
    if pretrained:
        meta = torchvision.models.get_model_weights(name).DEFAULT.meta
        labels = meta.get("categories")
    elif getattr(module, "fc", None) is not None and getattr(module.fc, "out_features", 0) == 1000:
        labels = list(imagenet_labels())
    opts: dict[str, Any] = dict(labels=labels, model_id=f"torchvision:{name}", kind="classifier")
    opts.update(options)
    return TorchClassifier(module, **opts)
