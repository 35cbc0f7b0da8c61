"""What a run is asked to do: one value that every front-end builds and the API runs.

The Python API, the command line, the web server and batch mode all explain
images with a method, a target, a seed, a batch size and a budget. They build
one :class:`RunRequest` and hand it on, so the options have one name, one
check and one meaning everywhere, and batch mode ships the same value (as plain
data, :meth:`RunRequest.to_dict`) to its Ray workers.

How a caller *watches* a run (progress, cancellation, running maps, a shared
lock) is not part of the request: that is :class:`patchlens.engine.Hooks`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Any

from .errors import MethodError
from .methods import Method, make_method
from .objectives import TargetSpec

#: Seeds are whole numbers from 0 to 2**63 - 1: torch takes 64 bits, the batch store's seed column is int64.
MAX_SEED = 2**63 - 1


def check_seed(seed: Any) -> int | None:
    """``seed`` as an int (None stays None), or a one-line MethodError naming it."""
    if seed is None:
        return None
    try:
        value = operator.index(seed)  # ints and numpy ints; not floats, bools count as ints
    except TypeError:
        raise MethodError(f"seed={seed!r}: must be a whole number from 0 to 2**63 - 1") from None
    if isinstance(seed, bool) or not 0 <= value <= MAX_SEED:
        raise MethodError(f"seed={seed!r}: must be a whole number from 0 to 2**63 - 1")
    return value


def as_method(method: str | Method, params: dict[str, Any] | None = None) -> Method:
    """A method value from a registered name and parameters (or a value, returned as is)."""
    params = params or {}
    if isinstance(method, Method):
        if params:
            raise MethodError(f"{method.name}: pass parameters either in the method value or as keywords, not both")
        return method
    if not isinstance(method, str):
        raise MethodError(f"{method!r}: a method is a name (see patchlens.list_methods()) or a Method value")
    return make_method(method, **params)


@dataclass(frozen=True)
class RunRequest:
    """One run's method and options, the same for every image it explains.

    Attributes:
        method: the method value (its parameters included).
        target: ``"top1"``, ``"topk:K"``, a class index or name, ``"present"``,
            a list of those; batch mode also takes ``"label"`` (each image's own).
        seed: seeds the method's own ``torch.Generator`` (None: 0).
        batch_size: images per forward pass (None: chosen for the device).
        max_passes: a hard budget of forward passes per image (None: no limit).
    """

    method: Method
    target: TargetSpec = "top1"
    seed: int | None = 0
    batch_size: int | None = None
    max_passes: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.method, Method):
            raise MethodError(f"{self.method!r}: a run's method is a Method value (see RunRequest.of for a name)")
        if isinstance(self.target, list):
            object.__setattr__(self, "target", tuple(self.target))  # a frozen value holds no list
        for name in ("batch_size", "max_passes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise MethodError(f"{name}={value!r}: must be a whole number of at least 1 (or None)")
        object.__setattr__(self, "seed", check_seed(self.seed))

    @classmethod
    def of(cls, method: str | Method, params: dict[str, Any] | None = None, **options: Any) -> RunRequest:
        """A request for method ``method`` (a name with ``params``, or a value) and the run ``options``."""
        return cls(as_method(method, params), **options)

    @property
    def generator_seed(self) -> int:
        """The seed the method's generator gets."""
        return 0 if self.seed is None else int(self.seed)

    def with_target(self, target: TargetSpec) -> RunRequest:
        """The same request for another target (batch mode's per-image labels)."""
        return replace(self, target=target)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the method by name and parameters), for Ray workers and manifests."""
        target = list(self.target) if isinstance(self.target, tuple) else self.target
        return {"method": self.method.name, "params": self.method.param_values(), "target": target, "seed": self.seed,
                "batch_size": self.batch_size, "max_passes": self.max_passes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRequest:
        """The request :meth:`to_dict` described (the method rebuilt from the registry, plug-ins included)."""
        options = {k: data[k] for k in ("target", "seed", "batch_size", "max_passes") if k in data}
        return cls.of(data["method"], data.get("params") or {}, **options)
