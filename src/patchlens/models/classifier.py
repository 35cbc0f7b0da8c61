"""The one model interface that every method and metric uses.

A :class:`Classifier` takes a float32 batch ``(N, 3, H, W)`` with values in
[0, 1] at its ``input_size`` and returns the model's answer for it: for a
classifier, class scores ``(N, C)`` with the model's declared activation
applied (see :mod:`.activation`). Normalisation and any other preprocessing
live inside it, so methods compose masks in plain pixel space and never need
to know the model's conventions. What a score *is* (a class, a label, a
detection) is not the adapter's business: an objective (:mod:`patchlens.objectives`)
turns the answer into one score per target.

An object detector answers with boxes instead (:class:`~patchlens.models.detections.Detections`).
An adapter declares which kind of answer its model gives (``kind``); a module or
function loaded without saying is ``"auto"``: its first answer decides, and
:meth:`Classifier.settle_kind` asks it once when something must know before then.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..capabilities import Capability, ModelKind
from ..errors import MethodError, ModelError
from ..images import resize
from .activation import activate
from .detections import as_detections, looks_like_detections
from .outputs import primary

if TYPE_CHECKING:
    from .vit import TokenView

#: Batch sizes an engine on the CPU tries (each twice, on real work) before it
#: settles. On the 2-core benchmark machine EfficientNet-Lite0 ran 39 % faster
#: at batch 1 than at 32 (activations of big batches fall out of the caches),
#: while tiny models gain from large batches: only measuring tells.
CPU_CANDIDATES = (1, 4, 16, 32)


@dataclass
class BatchSizePolicy:
    """How engines choose a classifier's batch size; one per classifier, kept for its life.

    On a CPU the first engine measures ``candidates`` on its real work and writes
    the winner to ``chosen``; later engines use it, so a model measured once
    stays measured. An engine that runs out of memory records the size that
    fitted (``fits``), which caps every later engine and batch mode's shared stream.
    """

    candidates: tuple[int, ...] = CPU_CANDIDATES
    chosen: int | None = None
    #: the largest batch known to fit in the device's memory, once a larger one ran out of it (None: no limit met)
    fits: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, size: int) -> None:
        """The batch size measured fastest."""
        with self._lock:
            self.chosen = size

    def record_fit(self, size: int) -> None:
        """A batch of twice ``size`` (or more) ran out of memory: nothing larger than ``size`` is tried again."""
        with self._lock:
            self.fits = size if self.fits is None else min(self.fits, size)

    def cap(self, size: int) -> int:
        """``size``, or the largest that fits when that is smaller."""
        return size if self.fits is None else max(1, min(size, self.fits))


#: what ``kind=`` accepts
KINDS = ("auto", "classifier", "detector")


def check_kind(kind: str, model: str) -> str:
    """``kind`` if it is one of :data:`KINDS`, else a ModelError naming ``model``."""
    if kind not in KINDS:
        raise ModelError(f"{model}: kind={kind!r}: use one of {', '.join(KINDS)}")
    return kind


def check_min_score(value: float, model: str) -> float:
    """``value`` as a float if it is a number (not a bool, not NaN), else a ModelError naming ``model``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value == value:
        raise ModelError(f"{model}: min_score={value!r}: must be a number")
    return float(value)


class Classifier:
    """Base class of model adapters. Subclasses implement :meth:`_scores`."""

    #: ``(height, width)`` the model expects.
    input_size: tuple[int, int] = (224, 224)
    #: one name per class, or None when the model did not say.
    labels: Sequence[str] | None = None
    #: where inputs must live for the model.
    device: torch.device = torch.device("cpu")
    #: a short identifier written into every result ("default", "timm:resnet50", ...).
    model_id: str = "model"
    #: matrix dtype for the forward pass on GPUs (None: full float32).
    autocast_dtype: torch.dtype | None = None
    #: whether the scores are class probabilities (titles say "p") or plain scores ("score").
    outputs_probabilities: bool = True
    #: what :meth:`activate` applies to the raw class scores: "softmax", "sigmoid" or "none"
    #: (declared once, by the adapter, from ``load_model(..., activation=...)``).
    activation: str = "none"
    #: what runs the forward passes ("torch", "onnxruntime", "callable", "remote"), recorded on every result.
    runtime: str = "unknown"
    #: torch's thread count while only scores are asked of this model, when another runtime runs them
    #: (ONNX Runtime: torch then only composes masks); None leaves torch's own (see ``models/runtime.py``).
    torch_threads: int | None = None
    #: what kind of answer the model gives: "classifier" (scores), "detector" (boxes) or "auto"
    #: (its first answer decides: a module or function loaded without ``kind=``)
    kind: str = "classifier"
    #: for a detector: the score a detection must reach for the targets ``all`` and ``label:NAME``
    min_score: float = 0.5

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The model's answer (class scores ``(N, C)``, float32, activated) for a batch ``(N, 3, H, W)`` in [0, 1]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ModelError(f"{self.model_id}: expected a batch of shape (N, 3, H, W), got {tuple(x.shape)}")
        x = resize(x.to(self.device, torch.float32), self.input_size)
        with torch.inference_mode():
            out = self._scores(x)
        return self.check_output(self.activate(primary(out)), x.shape[0])

    # -- to implement ---------------------------------------------------------
    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        """The model's raw answer for a batch at the input size, before the activation."""
        raise NotImplementedError

    # -- the answer ------------------------------------------------------------------
    def activate(self, out: object) -> object:
        """``out`` with the declared :attr:`activation` applied: the one place any adapter's scores are activated."""
        return activate(self.activation, out)

    @property
    def softmax(self) -> bool:
        """Whether the activation is a softmax (the option's name before ``activation`` existed)."""
        return self.activation == "softmax"

    @softmax.setter
    def softmax(self, value: bool) -> None:  # adapters written before ``activation`` set this flag
        self.activation = "softmax" if value else "none"

    @property
    def model_kind(self) -> ModelKind:
        """What kind of answer the model gives: boxes (a detector), independent labels under a sigmoid,
        competing classes otherwise.
        """
        if self.kind == "detector" or self.__dict__.get("_answered") == "detector":
            return ModelKind.DETECTOR
        return ModelKind.MULTI_LABEL if self.activation == "sigmoid" else ModelKind.CLASSIFIER

    @property
    def cam_layer(self) -> str | None:
        """What ``layer="auto"`` means for CAM methods on this model; None: the last spatial output of the pass."""
        return None

    @property
    def kind_settled(self) -> bool:
        """Whether :attr:`model_kind` is known for sure: declared, or seen in an answer."""
        return self.kind != "auto" or "_answered" in self.__dict__

    def settle_kind(self) -> ModelKind:
        """The model's kind, asking it once (one forward pass of a grey image) if it was neither declared nor seen.

        Checks that depend on the kind call this only when the assumed kind
        (a classifier) fails them, so a classifier is never asked twice.
        """
        if not self.kind_settled:
            self(torch.full((1, 3, *self.input_size), 0.5, device=self.device))
        return self.model_kind

    # -- what this model offers ----------------------------------------------------
    @property
    def capabilities(self) -> Capability:
        """What methods may ask of this model (see :mod:`patchlens.capabilities`)."""
        return Capability.SCORES

    def lacks(self, flag: Capability) -> str | None:  # noqa: ARG002  (an interface: other implementations use it)
        """Why this model does not offer ``flag``, when the generic reason would mislead (None: the generic one)."""
        return None

    @property
    def runtime_details(self) -> dict[str, object]:
        """What runs the forward passes, with its settings, for a result's record; adapters add theirs."""
        return {"runtime": self.runtime}

    @property
    def batch_policy(self) -> BatchSizePolicy:
        """How engines choose this model's batch size; created on first use, kept for the model's life."""
        policy: BatchSizePolicy = self.__dict__.setdefault("_batch_policy", BatchSizePolicy())
        return policy

    # -- white-box access (torch modules only) ---------------------------------
    @property
    def module(self) -> torch.nn.Module | None:
        """The wrapped ``torch.nn.Module`` for gradient methods, or None for a black box."""
        return None

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG002  (an interface: other implementations use it)
        """Differentiable pre-softmax outputs; only for classifiers that wrap a module."""
        raise ModelError(f"{self.model_id}: a black-box model has no gradients")

    def evaluating(self) -> contextlib.AbstractContextManager[None]:
        """Context in which the model is in inference mode; restores it afterwards."""
        return contextlib.nullcontext()

    # -- token access (timm ViTs only) --------------------------------------------
    def token_view(self, image: torch.Tensor) -> TokenView:  # noqa: ARG002  (an interface: other implementations use it)
        """``image`` (3, H, W) embedded once, ready for :meth:`score_tokens`; ViTs only."""
        raise MethodError(f"masking='tokens': {self.model_id} is not a timm Vision Transformer; use masking='pixels'")

    def score_tokens(self, view: TokenView, keep: torch.Tensor) -> torch.Tensor:  # noqa: ARG002  (an interface: other implementations use it)
        """The model's answer (class scores ``(n, C)``, activated) for the image of ``view`` with only the patch tokens in ``keep``
        ``(n, patches)`` bool, through the same checks as :meth:`__call__`.
        """
        raise MethodError(f"masking='tokens': {self.model_id} is not a timm Vision Transformer; use masking='pixels'")

    def input_mean(self) -> tuple[float, float, float]:
        """The pixel colour that the model's normalisation maps to zero (black when it takes raw pixels).

        Reference protocols that work on the normalised tensor (RISE's deletion
        to zeros) need it.
        """
        return (0.0, 0.0, 0.0)

    # -- helpers ---------------------------------------------------------------
    @property
    def num_classes(self) -> int | None:
        """How many classes the model has, when its labels say (None otherwise)."""
        return len(self.labels) if self.labels is not None else None

    def label(self, index: int) -> str:
        """The name of class ``index``, or ``"class N"`` when the model has no labels."""
        if self.labels is not None and 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class {index}"

    def check_output(self, out: object, n: int) -> torch.Tensor:
        """The model's answer for a batch of ``n``, checked: a classifier's is :meth:`check_scores`, a
        detector's :class:`~patchlens.models.detections.Detections` (:meth:`check_detections`).

        The engine only counts and passes the answer on; objectives read it.
        """
        if self.kind != "classifier" and looks_like_detections(out):
            self.__dict__["_answered"] = "detector"
            return self.check_detections(out, n)  # type: ignore[return-value]
        if self.kind == "detector":
            raise ModelError(
                f"{self.model_id}: returned {type(out).__name__}; a detector returns one dict of boxes, scores and "
                "labels per image"
            )
        scores = self.check_scores(out, n)
        self.__dict__.setdefault("_answered", "classifier")
        return scores

    def check_detections(self, out: object, n: int) -> object:
        """A detector's answer as :class:`~patchlens.models.detections.Detections`, boxes as fractions of the input."""
        # on the model's device: a black box or YOLO may answer on the CPU while the masks are on a GPU
        return as_detections(out, n, self.input_size, self.model_id).to(self.device)

    def check_scores(self, out: object, n: int) -> torch.Tensor:
        """``out`` as float32 scores ``(n, C)``, or a ModelError saying what is wrong with it."""
        out = primary(out)
        if not isinstance(out, torch.Tensor):
            try:
                out = torch.as_tensor(out)
            except Exception:  # noqa: BLE001  torch.as_tensor raises many kinds for what a model may return
                raise ModelError(
                    f"{self.model_id}: model returned {type(out).__name__}, expected scores of shape (N, C)"
                ) from None
        if out.ndim != 2 or out.shape[0] != n:
            raise ModelError(
                f"{self.model_id}: model returned shape {tuple(out.shape)} for a batch of {n}, expected ({n}, C)"
            )
        if self.labels is not None and out.shape[1] != len(self.labels):
            raise ModelError(
                f"{self.model_id}: model returned {out.shape[1]} classes but has {len(self.labels)} labels"
            )
        # The first answer fixes the number of classes: a model whose count changes between
        # calls would otherwise fail later with an IndexError deep inside a method.
        seen = self.__dict__.setdefault("_classes_seen", out.shape[1])
        if out.shape[1] != seen:
            raise ModelError(f"{self.model_id}: model returned {out.shape[1]} classes, but {seen} on an earlier call")
        out = out.float()
        if not torch.isfinite(out).all():
            raise ModelError(f"{self.model_id}: model returned NaN or infinite scores")
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_id!r}, input_size={self.input_size}, device={self.device})"
