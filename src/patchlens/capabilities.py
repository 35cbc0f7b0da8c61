"""What a model offers and what a method requires, declared as data and checked in one place.

A :class:`~patchlens.models.Classifier` declares its :class:`Capability` flags
(a black box offers only scores; a torch module also gradients and layers; a
timm ViT also tokens). A method declares the flags it requires, and
:func:`check` turns a mismatch into one :class:`~patchlens.errors.MethodError`
naming the methods that would work. The API, the CLI, the web page, batch mode
and the benchmark all call :func:`check`, so every front-end gives the same
one-line error, before any forward pass.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Protocol

from .errors import MethodError


class Capability(enum.Flag):
    """What a model can be asked for."""

    #: class scores for a batch of images (every model).
    SCORES = enum.auto()
    #: differentiable logits, so gradients with respect to the input (torch modules).
    GRADIENTS = enum.auto()
    #: named inner layers whose activations can be read (torch modules).
    LAYERS = enum.auto()
    #: a Vision Transformer's patch tokens, to read (attention rollout): a timm ViT, also inside a wrapper module.
    TOKENS = enum.auto()
    #: a Vision Transformer whose hidden patches' tokens can be dropped (masking="tokens"): a timm ViT
    #: that the model calls directly, since its forward pass is rebuilt token by token.
    TOKEN_DROP = enum.auto()

    #: what a torch module offers.
    WHITE_BOX = SCORES | GRADIENTS | LAYERS


class ModelKind(enum.Flag):
    """What kind of answer a model gives, which decides what a target is (see :mod:`patchlens.objectives`).

    A model declares its kind; a method declares the kinds it explains
    (:attr:`patchlens.methods.Method.models`, every kind unless it says
    otherwise), and :func:`check` compares the two like capabilities.
    """

    #: one score per class, the classes competing (softmax) or plain scores: a target is a class
    CLASSIFIER = enum.auto()
    #: one probability per label, each on its own (sigmoid): several labels may be present at once
    MULTI_LABEL = enum.auto()
    #: boxes with a score and a class each (an object detector): a target is one detection
    DETECTOR = enum.auto()


#: each kind of model in the user's words (``patchlens methods``, errors)
KIND_NAMES = {
    ModelKind.CLASSIFIER: "classifiers",
    ModelKind.MULTI_LABEL: "multi-label classifiers",
    ModelKind.DETECTOR: "object detectors",
}


def every_kind() -> ModelKind:
    """Every kind of model patchlens knows (what a method explains unless it declares less)."""
    out = ModelKind(0)
    for kind in ModelKind:
        out |= kind
    return out


def kind_names(kinds: ModelKind) -> list[str]:
    """The user's words for each kind in ``kinds``."""
    return [KIND_NAMES.get(k, str(k.name).lower()) for k in ModelKind if k in kinds]


#: why a model may lack a capability, in the user's words.
_MISSING = {
    Capability.SCORES: "returns no class scores",
    Capability.GRADIENTS: "is a black box (no gradients: it is not a PyTorch module)",
    Capability.LAYERS: "is a black box (no layers to read: it is not a PyTorch module)",
    Capability.TOKENS: "is not a timm Vision Transformer (no patch tokens)",
    Capability.TOKEN_DROP: "is not a timm Vision Transformer called directly (no patch tokens to drop)",
}


def names(flags: Capability) -> list[str]:
    """The lower-case names of the single flags in ``flags``, e.g. ``["scores", "gradients"]``."""
    return [f.name.lower().replace("_", " ") for f in Capability if f.name and f in flags and f is not Capability.WHITE_BOX]


class _Requiring(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def models(self) -> ModelKind: ...

    def requirements(self) -> Capability: ...

    def instead(self, lack: Capability) -> tuple[str, str] | None: ...


class _Offering(Protocol):
    @property
    def model_id(self) -> str: ...

    @property
    def capabilities(self) -> Capability: ...

    @property
    def model_kind(self) -> ModelKind: ...

    def lacks(self, flag: Capability) -> str | None: ...


def missing(required: Capability, offered: Capability) -> Capability:
    """The flags of ``required`` that ``offered`` lacks."""
    return required & ~offered


def check(method: _Requiring, classifier: _Offering, alternatives: Iterable[_Requiring] = ()) -> None:
    """Raise one MethodError when ``classifier`` lacks something ``method`` requires.

    ``alternatives`` are candidate method values; the error names those whose
    requirements the model does meet.
    """
    kind = classifier.model_kind
    if not kind & method.models:
        usable = [m.name for m in alternatives if kind & m.models and not missing(m.requirements(), classifier.capabilities)]
        hint = f"; use one of {', '.join(usable)}" if usable else ""
        raise MethodError(
            f"{method.name}: explains {' and '.join(kind_names(method.models))}, "
            f"but {classifier.model_id} is one of the {kind_names(kind)[0]}{hint}"
        )
    lack = missing(method.requirements(), classifier.capabilities)
    if not lack:
        return
    first = next(f for f in Capability if f in lack and f is not Capability.WHITE_BOX)
    usable = [m.name for m in alternatives if kind & m.models and not missing(m.requirements(), classifier.capabilities)]
    cause = method.instead(lack)  # a parameter value that asks for the capability, and its fix
    what = f" {cause[0]}" if cause else ""
    hint = f"; {cause[1]}" if cause else f"; use one of {', '.join(usable)}" if usable else ""
    why = classifier.lacks(first) or _MISSING[first]  # the model's own reason, when it knows a better one
    raise MethodError(f"{method.name}:{what} needs {' and '.join(names(lack))}, but {classifier.model_id} {why}{hint}")
