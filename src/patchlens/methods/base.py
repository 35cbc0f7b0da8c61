"""Methods as frozen values, and the registry that the CLI, web page and batch mode read.

A method is a frozen dataclass of its hyper-parameters. It holds no model, no
hooks and no caches, so one value can be shared between threads, written into
a manifest and rebuilt from it. Each hyper-parameter is declared with
:func:`param`, which records its help text, choices and bounds; the CLI options
and web form are generated from those declarations.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from .._discovery import import_submodules, load_plugins
from ..capabilities import Capability, ModelKind, every_kind, kind_names, names
from ..engine import Engine
from ..errors import MethodError
from ..models.classifier import Classifier
from ..objectives import Objective

#: Where a method's parameters are given: the Python API, the ``explain``, ``batch`` and ``compare``
#: commands, and the web page. A parameter may declare another default for some of them (``param``).
FRONT_ENDS = ("python", "explain", "batch", "compare", "web")


def param(
    default: Any,
    help: str,
    *,
    choices: Iterable[Any] | None = None,
    low: float | None = None,
    high: float | None = None,
    group: str = "",
    front_ends: dict[str, Any] | None = None,
    cost: bool = False,
) -> Any:
    """Declare a method hyper-parameter: its default, what it means, and its valid range.

    ``group`` names a shared declaration (see ``methods/_params.py``): parameters
    of one group mean the same thing in every method that takes them.
    ``front_ends``: the default in the front-ends of :data:`FRONT_ENDS` where it
    differs from ``default`` (the Python API's), declared here so that every
    listing, help text and form shows what that front-end really uses.
    ``cost``: the parameter is a count of samples, steps or channels, each a
    forward pass, so a budget sets it (``patchlens.metrics.budgeted``) and a
    server refuses one over its pass limit before anything is drawn.
    """
    unknown = set(front_ends or {}) - set(FRONT_ENDS)
    if unknown:
        raise ValueError(f"front_ends: {sorted(unknown)} are not front-ends ({', '.join(FRONT_ENDS)})")
    meta = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "low": low,
        "high": high,
        "group": group,
        "front_ends": dict(front_ends or {}),
        "cost": cost,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ParamInfo:
    """A declared parameter, as the CLI and web form see it."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    low: float | None
    high: float | None
    group: str = ""
    #: defaults that differ from ``default`` in some front-ends (see :data:`FRONT_ENDS`)
    front_ends: dict[str, Any] = field(default_factory=dict)
    #: a count of samples, steps or channels that a budget sets (see :func:`param`)
    cost: bool = False

    def default_for(self, front_end: str = "python") -> Any:
        """The value this parameter takes in ``front_end`` when it is not given."""
        if front_end not in FRONT_ENDS:
            raise ValueError(f"{front_end!r}: not a front-end ({', '.join(FRONT_ENDS)})")
        return self.front_ends.get(front_end, self.default)

    def to_dict(self, front_end: str = "python") -> dict[str, Any]:
        """JSON-ready; ``default`` is ``front_end``'s, ``defaults`` every front-end's when they differ."""
        out = {
            "group": self.group or None,
            "name": self.name,
            "type": self.type.__name__,
            "default": self.default_for(front_end),
            "help": self.help,
            "choices": list(self.choices) if self.choices else None,
            "min": self.low,
            "max": self.high,
        }
        if self.front_ends:
            out["defaults"] = {f: self.default_for(f) for f in FRONT_ENDS}
        return out


@dataclass
class Job:
    """What a method needs to explain one image.

    A method scores inputs with ``objective`` (through ``engine``, or by
    calling it on the model's differentiable output for gradients) and never
    looks inside the model's output: what a target is (a class, a label, a
    detection) is the objective's business.
    """

    classifier: Classifier
    image: torch.Tensor  # (3, H, W) in [0, 1] at the model's input size, on its device
    objective: Objective  # the model's output -> scores (n, T), one column per target
    reference: torch.Tensor  # (T,) the objective's scores on the unmasked image
    engine: Engine
    generator: torch.Generator  # on the device; the only source of randomness
    #: called by sampling methods after each round with the running maps ``(T, h, w)``
    #: and the samples used so far (progressive maps for the web page and scripts)
    on_map: Callable[[torch.Tensor, int], None] | None = None


@dataclass
class Prepared:
    """What :meth:`Method.prepare` returns: the method's state for one job, and what the rest will cost.

    Attributes:
        state: whatever :meth:`Method.attribute` needs (drawn samples, the image's regions...).
        passes: the forward passes :meth:`Method.attribute` will run on the job, exactly, when it runs to the
            end (a sampling method that converges early runs fewer); None when the method does not say.
            Budgets, progress bars and a server's limits are checked against it before the work starts.
        regions: how many regions the image was cut into, for methods that cut it (a server's limit).
    """

    state: Any = None
    passes: int | None = None
    regions: int | None = None


@dataclass
class Attribution:
    """A method's output: one map per target, at any resolution, plus extras.

    ``extras`` holds per-target extra results (a ranking, curves, convergence),
    as a list with one dict per target.
    """

    maps: torch.Tensor  # (T, h, w)
    extras: list[dict[str, Any]] = field(default_factory=list)


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}

#: Most samples (masks, noisy copies, coalitions, path points) a method may draw: each is a forward
#: pass, and its bookkeeping (a mask grid, a row of a design matrix) is held until the map is made.
MAX_SAMPLES = 100_000
#: Longest window or stride in pixels: the longest image side patchlens reads (``images.SIDE_LIMIT``).
MAX_SIDE = 65_535


@dataclass(frozen=True)
class Method:
    """Base of all methods. Subclasses set the class variables and implement ``attribute``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: what the model must offer (black-box methods need only scores).
    requires: ClassVar[Capability] = Capability.SCORES
    #: the kinds of model it explains: every kind unless it says otherwise, since a method sees a
    #: model only through the objective of its targets (:mod:`patchlens.objectives`).
    models: ClassVar[ModelKind] = every_kind()
    #: whether the map depends on the target; False for a method that gives one map per image
    #: (the same for every class or label explained).
    target_specific: ClassVar[bool] = True
    #: whether the method draws random numbers (seed matters).
    stochastic: ClassVar[bool] = False
    #: parameters added after results were first stored, with the value those older results were
    #: made with, so that a stored record without them still reads (and resumes) as what it was.
    added_params: ClassVar[dict[str, Any]] = {}

    @classmethod
    def kind(cls) -> str:
        """A label for listings: "black-box", "white-box" or "vit", derived from :attr:`requires`."""
        if Capability.TOKENS in cls.requires:
            return "vit"
        return "black-box" if cls.requires == Capability.SCORES else "white-box"

    def requirements(self) -> Capability:
        """What this value needs of the model: the class's :attr:`requires` (a parameter may add to it)."""
        return self.requires

    def instead(self, lack: Capability) -> tuple[str, str] | None:  # noqa: ARG002  (an interface: other implementations use it)
        """When a parameter value is why this method needs ``lack``: that value and how to do without it."""
        return None

    def __post_init__(self) -> None:
        for info in self.parameters():
            value = getattr(self, info.name)
            if info.type is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, info.name, float(value))
                value = float(value)
            if info.type in (int, float) and (isinstance(value, bool) or not isinstance(value, info.type)):
                raise MethodError(f"{self.name}: {info.name}={value!r} must be a number ({info.type.__name__})")
            if info.type is float and not math.isfinite(value):  # NaN passes every comparison with a bound
                raise MethodError(f"{self.name}: {info.name}={value!r} must be a finite number")
            if info.type is str and not isinstance(value, str):
                raise MethodError(f"{self.name}: {info.name}={value!r} must be text")
            if info.choices and value not in info.choices:
                raise MethodError(
                    f"{self.name}: {info.name}={value!r} is not one of {', '.join(map(str, info.choices))}"
                )
            if info.low is not None and value < info.low:
                raise MethodError(f"{self.name}: {info.name}={value!r} must be at least {info.low:g}")
            if info.high is not None and value > info.high:
                raise MethodError(f"{self.name}: {info.name}={value!r} must be at most {info.high:g}")
        self.validate()

    def validate(self) -> None:
        """Checks that involve more than one parameter; raise MethodError."""

    @classmethod
    def with_defaults(cls, params: dict[str, Any], front_end: str) -> dict[str, Any]:
        """``params`` completed with the defaults ``front_end`` declares for parameters not given.

        Parameters whose default is the same everywhere are left out, so a stored
        record keeps the parameters the user chose plus those the front-end chose.
        """
        if front_end not in FRONT_ENDS:
            raise ValueError(f"{front_end!r}: not a front-end ({', '.join(FRONT_ENDS)})")
        filled = {p.name: p.front_ends[front_end] for p in cls.parameters() if p.name not in params and front_end in p.front_ends}
        return {**params, **filled}

    @classmethod
    def parameters(cls) -> list[ParamInfo]:
        """The declared hyper-parameters: the method's own first, then those its base classes declare
        (masking, the sampling template's stopping rule), so a method's help starts with what is its own.
        """
        inherited = {f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)}
        fields = sorted(dataclasses.fields(cls), key=lambda f: f.name in inherited)
        hints = {f.name: f.type for f in fields}
        out = []
        for f in fields:
            t = hints[f.name]
            t = _TYPES.get(t, t) if isinstance(t, str) else t
            out.append(
                ParamInfo(
                    name=f.name,
                    type=t if isinstance(t, type) else str,
                    default=f.default,
                    help=f.metadata.get("help", ""),
                    choices=f.metadata.get("choices"),
                    low=f.metadata.get("low"),
                    high=f.metadata.get("high"),
                    group=f.metadata.get("group", ""),
                    front_ends=dict(f.metadata.get("front_ends", {})),
                    cost=f.metadata.get("cost", False),
                )
            )
        return out

    def param_values(self) -> dict[str, Any]:
        """This value's hyper-parameters, for provenance (in the order of :meth:`parameters`)."""
        return {p.name: getattr(self, p.name) for p in self.parameters()}

    def variant(self, seed: int | None = 0) -> str:
        """The parameters (and seed) that are no front-end's default, short enough for a file name.

        ``"n_masks2000_grid5"``, ``"seed3"``, or ``""`` for a run with defaults; past 40
        characters a hash of them (``"p1a2b3c4d"``), so two runs differ in name exactly
        when they differ in what was chosen.
        """
        parts = []
        for info in self.parameters():
            value = getattr(self, info.name)
            if value == info.default or value in info.front_ends.values():
                continue
            parts.append(f"{info.name}{value:g}" if isinstance(value, float) else f"{info.name}{value}")
        if self.stochastic and seed:
            parts.append(f"seed{seed}")
        text = "_".join(parts)
        if len(text) > 40:
            return "p" + hashlib.sha1(text.encode()).hexdigest()[:8]
        return text

    def prepare(self, job: Job) -> Prepared:  # noqa: ARG002  (an interface: other implementations use it)
        """Everything this method decides before its forward passes (samples drawn, the image cut into
        regions...), and the passes :meth:`attribute` will then run, exactly (see :class:`Prepared`).

        Called once per job, before any of the method's passes, so budgets and
        progress are checked against what the job will really cost. A method
        that states no cost (``passes`` None) still runs, where no limit applies.
        """
        return Prepared()

    def attribute(self, job: Job, state: Any) -> Attribution:
        """The maps for ``job``, from the ``state`` that :meth:`prepare` returned."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"two methods are named {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> dict[str, type[Method]]:
    """Every registered method class by name: this package's modules, then installed plug-ins (entry points
    of the group ``patchlens.methods``, see :mod:`patchlens._discovery`).
    """
    import_submodules(__package__ or "patchlens.methods", [str(Path(__file__).parent)])
    load_plugins("patchlens.methods")
    return dict(sorted(_REGISTRY.items()))


def catalogue(front_end: str = "python") -> dict[str, dict[str, Any]]:
    """The registered methods: ``{name: {"summary", "kind", "requires", "models", "per_target", "stochastic", "parameters"}}``.

    ``models``: the kinds of model it explains (classifiers, multi-label classifiers...);
    ``per_target``: whether each target gets its own map; each parameter's ``default``
    is the one ``front_end`` uses (the web page lists the web's).
    """
    return {
        name: {
            "summary": cls.summary,
            "kind": cls.kind(),
            "requires": names(cls.requires),
            "models": kind_names(cls.models),
            "per_target": cls.target_specific,
            "stochastic": cls.stochastic,
            "parameters": [p.to_dict(front_end) for p in cls.parameters()],
        }
        for name, cls in registry().items()
    }


def get_method(name: str) -> type[Method]:
    """The registered method class called ``name``; a MethodError naming the registered ones if there is none."""
    methods = registry()
    if name not in methods:
        close = difflib.get_close_matches(str(name).strip().lower(), list(methods), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise MethodError(f"{name}: unknown method{hint}; available: {', '.join(methods)}")
    return methods[name]


def recorded_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as a stored record of method ``name`` gives them, completed with :attr:`Method.added_params`.

    A record made before a parameter existed was made with that parameter's old
    behaviour, not with today's default.
    """
    cls = registry().get(name)
    return {**cls.added_params, **params} if cls is not None else dict(params)


def make_method(name: str, **params: Any) -> Method:
    """An instance of method ``name`` with ``params`` (unknown names are a clear error)."""
    cls = get_method(name)
    known = {p.name for p in cls.parameters()}
    unknown = sorted(set(params) - known)
    if unknown:
        raise MethodError(
            f"{name}: unknown parameter(s) {', '.join(unknown)}; it takes {', '.join(sorted(known)) or 'none'}"
        )
    try:
        return cls(**params)
    except TypeError as exc:
        raise MethodError(f"{name}: {exc}") from None
