"""Adapter for any ``torch.nn.Module``: normalisation inside, the module untouched."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from ..capabilities import Capability
from ..errors import MethodError, ModelError
from .activation import choose_activation
from .classifier import Classifier, check_kind, check_min_score
from .detections import looks_like_detections
from .outputs import primary
from .vit import TokenView, find_vit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode and give each its own flag back afterwards.

    Restoring per submodule matters: a user may keep, say, a frozen BatchNorm in
    eval inside a model in training mode, and ``model.train()`` would lose that.
    """
    flags = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag


class TorchClassifier(Classifier):
    """Wraps a module that maps a normalised batch to logits (or probabilities).

    Args:
        module: the model. It is never modified: no ``.eval()`` left behind, no
            hooks, no parameter changes, no move to another device.
        mean, std: per-channel normalisation applied to the [0, 1] input.
        input_size: ``(H, W)`` or an int for square inputs.
        labels: class names.
        activation: what turns the module's outputs into the explained scores: "softmax" (competing
            classes), "sigmoid" (independent labels: a multi-label model), "none", or "auto" (softmax).
        softmax: the older switch: True is activation "softmax", False no softmax.
        device: where to run; defaults to where the module's parameters are.
        model_id: a name recorded in results.
        amp: on a GPU, run the forward pass in this dtype under autocast
            (``torch.bfloat16`` by default on CUDA; None for float32).
        channels_last: feed inputs in channels-last layout (faster for CNNs on GPU).
        kind: "classifier", "detector" (it returns one dict of boxes, scores and labels per
            image, as torchvision's detectors do) or "auto" (its first answer decides).
        min_score: for a detector, the score a detection must reach for the targets
            ``all`` and ``label:NAME``.
    """

    #: what scores the forward passes (models/runtime.py may swap in ONNX Runtime)
    runtime = "torch"
    #: whether ``runtime="auto"`` may score with an int8 copy on CPUs with VNNI or AMX (models/int8.py): only
    #: for models whose maps were checked to survive it on typical photos (the default model)
    int8_in_auto = False

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        input_size: int | tuple[int, int] = 224,
        labels: Sequence[str] | None = None,
        activation: str = "auto",
        softmax: bool | None = None,
        device: str | torch.device | None = None,
        model_id: str | None = None,
        amp: torch.dtype | None | str = "auto",
        channels_last: bool = False,
        kind: str = "auto",
        min_score: float = 0.5,
    ) -> None:
        if not isinstance(module, torch.nn.Module):
            raise ModelError(f"{type(module).__name__}: not a torch.nn.Module")
        self._module = module
        params: list[torch.Tensor] = list(module.parameters()) or list(module.buffers())
        own_device = params[0].device if params else torch.device("cpu")
        self.device = torch.device(device) if device is not None else own_device
        if self.device != own_device and params:
            raise ModelError(
                f"{model_id or type(module).__name__}: the model's weights are on {own_device}, not {self.device}; "
                "move the model yourself (patchlens does not move your model)"
            )
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)  # type: ignore[assignment]
        self.labels = list(labels) if labels is not None else None
        self.model_id = model_id or type(module).__name__
        self.activation = choose_activation(activation, softmax, "softmax", self.model_id)
        self.outputs_probabilities = self.activation != "none"  # raw module outputs are scores, not probabilities
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._plain = bool((self._mean == 0).all() and (self._std == 1).all())
        if amp == "auto":
            amp = torch.bfloat16 if self.device.type == "cuda" else None
        self.autocast_dtype = amp  # type: ignore[assignment]
        self.channels_last = channels_last
        self.kind = check_kind(kind, self.model_id)
        self.min_score = check_min_score(min_score, self.model_id)
        #: why this runtime was chosen, set by ``load_model`` (models/runtime.py)
        self.details: dict[str, object] = {}

    @property
    def runtime_details(self) -> dict[str, object]:
        precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.autocast_dtype, str(self.autocast_dtype))
        return {"runtime": "torch", "device": str(self.device), "threads": torch.get_num_threads(), "precision": precision, **self.details}

    @property
    def module(self) -> torch.nn.Module:
        return self._module

    @property
    def capabilities(self) -> Capability:
        if isinstance(self._module, torch.jit.ScriptModule):
            # TorchScript modules take no forward hooks, so no layer can be read (CAM methods);
            # gradients still flow through them
            return Capability.SCORES | Capability.GRADIENTS
        offered = Capability.WHITE_BOX
        if find_vit(self.module, nested=False) is not None:
            return offered | Capability.TOKENS | Capability.TOKEN_DROP
        return offered | Capability.TOKENS if find_vit(self.module) is not None else offered

    def lacks(self, flag: Capability) -> str | None:
        if flag is Capability.LAYERS and isinstance(self._module, torch.jit.ScriptModule):
            return "is a TorchScript module, which takes no forward hooks (no layers to read)"
        return None

    def token_view(self, image: torch.Tensor) -> TokenView:
        vit = find_vit(self.module, nested=False)
        if vit is None:
            raise MethodError(
                f"masking='tokens': {self.model_id} is not a timm Vision Transformer called directly "
                "(a ViT inside a wrapper module cannot have its tokens dropped); use masking='pixels'"
            )
        with self.evaluating():
            return TokenView(vit, self.normalise, image.to(self.device, torch.float32), self.model_id)

    def score_tokens(self, view: TokenView, keep: torch.Tensor) -> torch.Tensor:
        with self.evaluating():
            out = view.logits(keep, self.autocast_dtype)
        return self.check_output(self.activate(out), keep.shape[0])

    def evaluating(self) -> contextlib.AbstractContextManager[None]:
        return eval_mode(self._module)

    def input_mean(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self._mean.flatten().tolist())  # type: ignore[return-value]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        if not self._plain:  # mean 0 and std 1 (a torchvision detector takes raw pixels): nothing to do
            x = (x - self._mean) / self._std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalise(x)
        if self.autocast_dtype is not None and self.device.type in ("cuda", "cpu"):
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                out = self._module(x)
        else:
            out = self._module(x)
        out = primary(out)  # (logits, aux) and HuggingFace outputs: the scores; anything else whole
        return out.float() if isinstance(out, torch.Tensor) else out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable outputs before the activation (the module's raw output).

        The gradient methods call this directly, so the model's own exceptions
        become a one-line ModelError here, as :meth:`_scores` does for scoring.
        """
        with self.evaluating():
            try:
                out = self._forward(x.to(self.device, torch.float32))
                if self.kind != "classifier" and looks_like_detections(out):  # boxes, differentiable
                    self.__dict__["_answered"] = "detector"
                    return self.check_detections(out, x.shape[0])  # type: ignore[return-value]
                return out
            except (torch.cuda.OutOfMemoryError, ModelError):
                raise  # the engine halves its batch on OOM
            except Exception as exc:
                raise ModelError(f"{self.model_id}: the model raised {type(exc).__name__}: {exc}") from exc

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        with self.evaluating():
            try:
                out = self._forward(x)
            except torch.cuda.OutOfMemoryError:
                raise
            except ModelError:
                raise
            except Exception as exc:
                raise ModelError(f"{self.model_id}: the model raised {type(exc).__name__}: {exc}") from exc
        return out  # activated and checked by Classifier.__call__
