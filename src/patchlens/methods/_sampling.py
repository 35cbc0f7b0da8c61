"""The template of every sampling method (RISE, LIME, KernelSHAP, Sobol): rounds, progress, adaptive stopping.

A sampling method draws all its samples up front (so the map does not depend on
how they are batched), then scores them in rounds. After each round it forms
the running map; the template hands that map to the caller's ``on_map``
(progressive display), and the maps of the two halves of the samples (even and
odd rounds) to a :class:`ConvergenceMonitor`, which stops the method once their
agreement says the map is close enough to the map it converges to
(``converge > 0``). A method supplies five small functions; the loop is written
once, here.

Without ``converge`` and without ``on_map`` all samples form one round, which
is exactly the method's plain estimator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..engine.convergence import ConvergenceMonitor
from ..errors import BudgetError
from . import _params as shared
from ._params import INTERACTIVE_CONVERGE  # noqa: F401  (declared beside the parameter; imported from here too)
from .base import Attribution, Job, Method, Prepared

#: how many running maps a convergence round shows when someone is watching (``on_map``)
PREVIEWS_PER_ROUND = 4

def stopping_rule(method: Method) -> str | None:
    """The stopping rule in words, printed before a run; None for methods that do not sample."""
    if not isinstance(method, SamplingMethod):
        return None
    if method.converge <= 0:
        return "fixed count: every sample is scored"
    return (
        f"adaptive: stops once the map's estimated rank correlation with the map that unlimited samples would give "
        f"reaches {method.converge:g} two checks in a row (one every {method.round_size} samples); --converge 0 scores every sample"
    )


@dataclass(frozen=True)
class SamplingMethod(Method):
    """Base of the sampling methods: it declares the stopping rule (``converge``, ``round_size``; a method
    may give ``round_size`` its own default) and runs the rounds. A method implements :meth:`draw`,
    :meth:`sample_count`, :meth:`score_round` and :meth:`running_maps`.
    """

    converge: float = shared.converge()
    round_size: int = shared.round_size(100)

    stochastic = True
    #: Differences under this share of a map's range count as ties when the half maps are compared: one of
    #: an overlay's 256 colour levels, a difference the picture cannot show. Where the converged map is flat
    #: (regions a model ignores, or regions of equal effect), two maps differ there only by noise, whose ranks
    #: never settle; rounded, they tie. On the photos of benchmarks/adaptive.py it moved the estimates by 1e-4.
    tie_resolution = 1 / 256

    # -- what a method supplies -------------------------------------------------
    def draw(self, job: Job) -> Any:
        """Draw every sample and return the method's state for this image."""
        raise NotImplementedError

    def sample_count(self, state: Any) -> int:
        """How many samples ``draw`` drew (the most that will be scored)."""
        raise NotImplementedError

    def sample_passes(self, state: Any) -> int:  # noqa: ARG002  (an interface: other implementations use it)
        """Forward passes one sample costs (Sobol: a design is regions + 2 passes)."""
        return 1

    def regions_of(self, state: Any) -> int | None:  # noqa: ARG002  (an interface: other implementations use it)
        """How many regions the image was cut into, for methods that cut it."""
        return None

    def score_round(self, job: Job, state: Any, start: int, stop: int) -> None:
        """Score samples ``start..stop-1`` and fold them into ``state``."""
        raise NotImplementedError

    def running_maps(self, state: Any, used: int) -> torch.Tensor:
        """The map ``(T, h, w)`` from the first ``used`` samples."""
        raise NotImplementedError

    def half_maps(self, state: Any, used: int) -> tuple[torch.Tensor, torch.Tensor, int, int] | None:  # noqa: ARG002  (an interface)
        """The maps ``(T, ...)`` from the even rounds' samples and from the odd rounds' (with their sample counts),
        None until both have samples. Only called with ``converge > 0``; see :meth:`half_of`. A method
        that cannot split its samples keeps the default, None, and then always uses every sample.
        """
        return None

    def half_of(self, start: int) -> int:
        """Which half (0: even rounds, 1: odd rounds) the samples of a round starting at ``start`` go to.

        Rounds have fixed boundaries, so the halves, like the map, do not depend on the batch size.
        """
        return (start // self.round_size) % 2

    def halves_of_rows(self, used: int, device: torch.device) -> torch.Tensor:
        """:meth:`half_of` for each of the first ``used`` samples ``(used,)``: for methods that keep samples as rows."""
        return (torch.arange(used, device=device) // self.round_size) % 2

    def settled_enough(self, state: Any, used: int) -> bool:  # noqa: ARG002  (an interface: other implementations use it)
        """Whether ``used`` samples are enough for the map to be compared with the next (LIME: more than regions)."""
        return True

    def extras(self, state: Any, used: int) -> list[dict[str, Any]]:  # noqa: ARG002  (an interface: other implementations use it)
        """Per-target extra results for the final map."""
        return []

    # -- the loop -----------------------------------------------------------------
    def prepare(self, job: Job) -> Prepared:
        """Every sample drawn, and what scoring all of them costs."""
        state = self.draw(job)
        return Prepared(state, self.sample_count(state) * self.sample_passes(state), self.regions_of(state))

    def attribute(self, job: Job, state: Any) -> Attribution:
        """Score the samples in rounds, forming the running map after each, until they are all scored or it settles."""
        total = self.sample_count(state)
        converge = self.converge
        rounds = converge > 0 or job.on_map is not None
        round_size = self.round_size if rounds else total
        # A running map is shown a few times per convergence round, so the first picture comes early;
        # convergence is still judged on whole rounds (fixed boundaries: the same at any batch size).
        step = max(1, round_size // PREVIEWS_PER_ROUND) if job.on_map is not None else round_size
        monitor = ConvergenceMonitor(converge, resolution=self.tie_resolution)
        used = 0
        maps: torch.Tensor | None = None
        stopped: BudgetError | None = None
        while used < total:
            round_end = (used // round_size + 1) * round_size  # sub-steps never cross a round's boundary
            stop = min(total, used + step, round_end)
            try:
                self.score_round(job, state, used, stop)
            except BudgetError as exc:
                if maps is None:  # not one round done: there is no map to give
                    raise
                stopped = exc  # a spent budget (a remote model's queries, a server's limit): keep the rounds done
                break
            used = stop
            maps = self.running_maps(state, used)
            if job.on_map is not None:
                job.on_map(maps, used)
            round_done = used % round_size == 0 or used == total
            if converge > 0 and round_done and self.settled_enough(state, used):
                halves = self.half_maps(state, used)
                if halves is not None and monitor.update(*halves):
                    break
                if monitor.estimate is not None:
                    job.engine.note(f"estimated rank corr. with the converged map {monitor.estimate:.3f} (stop at {converge:g})")
        assert maps is not None, f"{self.name}: drew no samples"
        extras = self.extras(state, used) or [{} for _ in range(maps.shape[0])]
        if converge > 0:
            report = monitor.report(used, total)
            extras = [{**e, "convergence": report} for e in extras]
        if stopped is not None:  # never silently: the result says it is partial, and why
            partial = {"samples_used": used, "sample_budget": total, "reason": str(stopped)}
            extras = [{**e, "partial": partial} for e in extras]
        return Attribution(maps=maps, extras=extras)
