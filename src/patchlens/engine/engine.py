"""The engine: the one loop that runs a model over many inputs, in batches.

Every method is *propose inputs -> run the model on them -> combine*. Methods
own the first and last steps; this module owns the middle, once, for every
kind of step: scoring masked pixels, scoring a ViT with tokens dropped, taking
input gradients. What a score is, the engine does not know: the method hands
it the job's objective (:mod:`patchlens.objectives`), which turns each batch of
the model's output, whatever its shape, into scores ``(n, T)``. :meth:`Engine.run` chunks the work, chooses the batch size
(measured on a CPU), halves it on out-of-memory without losing what is done,
shows progress, counts forward passes and time, honours cancellation and
stops a job that would exceed its forward-pass budget. Methods never touch
the counters: they hand the engine a *step* and read the results.

Front-ends watch and steer a run through :class:`Hooks` (cancellation,
progress, a lock shared with other users of the model, where forward passes
run); none of them wraps the model to do it, and no other module handles
out-of-memory errors: the engine halves its batch and records the size that
fitted on the model's :class:`~patchlens.models.classifier.BatchSizePolicy`,
where every other user of the model reads it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
from tqdm.auto import tqdm

from ..errors import BudgetError, Cancelled, MethodError
from ..models.classifier import Classifier
from ..objectives import Objective

T = TypeVar("T")

#: masks are combined in chunks of this many, whatever the batch size, so that
#: results are bit-for-bit independent of ``batch_size``.
COMBINE_CHUNK = 256


class MaskSource(Protocol):
    """A deterministic, indexable set of masks (1 = keep the pixel, 0 = baseline)."""

    total: int

    def masks(self, start: int, stop: int) -> torch.Tensor:
        """Masks ``start..stop-1`` as a float tensor ``(n, 1, H, W)`` on the device."""
        ...


def default_batch_size(device: torch.device) -> int:
    """Images per forward pass when nothing was measured or asked for: small on a CPU, larger on a GPU."""
    # On a CPU larger batches stop paying off early and cost memory; on a GPU
    # we start big and let the out-of-memory back-off find the limit.
    return 256 if device.type == "cuda" else 32


def measured_batch_size(classifier: Classifier) -> int:
    """The batch size an engine settles on for ``classifier`` (measured once on a CPU, on random inputs)."""
    policy = classifier.batch_policy
    if policy.chosen is None and classifier.device.type == "cpu":
        engine = Engine(classifier)
        engine.run_inputs(
            lambda a, b: torch.rand(b - a, 3, *classifier.input_size, device=classifier.device),
            2 * sum(policy.candidates),
        )
    return policy.cap(int(policy.chosen or default_batch_size(classifier.device)))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the device ran out of memory (torch's own error, or one that wraps it)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    cause = exc.__cause__
    return isinstance(cause, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


@dataclass(frozen=True)
class Hooks:
    """How a caller watches and steers one run; every field is optional.

    Attributes:
        cancelled: checked before every batch; when it returns True the run
            stops with :class:`~patchlens.errors.Cancelled`.
        on_passes: called after every batch with the forward passes it ran
            (a web job adds them up over its methods and metrics).
        on_map: called by sampling methods after each round with the running
            maps ``(T, h, w)`` and the samples used so far (progressive maps).
        lock: held around every forward pass, so that other users of the same
            model (a web server's other jobs and what-if calls) never run it at
            the same moment.
        forward: where the forward passes of masked inputs run, instead of the
            classifier itself (batch mode's shared batches); scores only.
        progress: show a progress bar (appears only if the work takes over a second).
    """

    cancelled: Callable[[], bool] | None = None
    on_passes: Callable[[int], None] | None = None
    on_map: Callable[[torch.Tensor, int], None] | None = None
    lock: contextlib.AbstractContextManager[Any] | None = None
    forward: Callable[[torch.Tensor], Any] | None = None
    progress: bool = False


@dataclass
class Engine:
    """Runs a classifier over many inputs. One engine serves one explanation.

    Args:
        classifier: the model.
        batch_size: images per forward pass; None picks one for the device
            (measured on a CPU, see :class:`BatchSizePolicy`).
        description: the progress bar's label.
        max_passes: a hard budget; a batch that would take the total over it
            raises :class:`~patchlens.errors.BudgetError` instead of running.
        hooks: the caller's cancellation, progress, lock and forward path (see :class:`Hooks`).
    """

    classifier: Classifier
    batch_size: int | None = None
    description: str = "scoring"
    max_passes: int | None = None
    hooks: Hooks = field(default_factory=Hooks)

    def __post_init__(self) -> None:
        self._passes = 0
        self._seconds = 0.0
        self._expected: int | None = None
        self._trials: list[int] = []
        self._rates: dict[int, float] = {}
        self._bar: tqdm | None = None
        self._lock = self.hooks.lock if self.hooks.lock is not None else contextlib.nullcontext()
        if self.batch_size is None:
            policy = self.classifier.batch_policy
            if policy.chosen is None and self.classifier.device.type == "cpu":
                # Try each candidate twice (the first call at a new shape pays set-up costs).
                self._trials = [b for b in policy.candidates if policy.cap(b) == b for _ in range(2)]
            self.batch_size = policy.cap(policy.chosen or default_batch_size(self.classifier.device))
        if self.batch_size < 1:
            raise MethodError(f"batch_size={self.batch_size}: must be at least 1")

    # -- what the engine reports ---------------------------------------------------
    @property
    def forward_passes(self) -> int:
        """Images the model has been run on (each counts once, forward and backward together)."""
        return self._passes

    @property
    def seconds(self) -> float:
        """Time spent inside :meth:`run`."""
        return self._seconds

    @property
    def device(self) -> torch.device:
        """Where the model's inputs live."""
        return self.classifier.device

    def expect(self, passes: int) -> None:
        """The passes the whole run will take, once its method has counted them (the progress bar's total)."""
        self._expected = passes
        if self._bar is not None:
            self._bar.total = passes
            self._bar.refresh()

    # -- the loop --------------------------------------------------------------------
    def back_off(self, exc: BaseException, size: int) -> bool:
        """After a batch of ``size`` raised ``exc``: on out-of-memory, halve the batch size
        and return True (retry the same batch; what is already scored is kept).
        Anything else returns False, for the caller to re-raise.
        """
        if not (is_out_of_memory(exc) and size > 1):
            return False
        self._trials = []
        self.batch_size = max(1, size // 2)
        self.classifier.batch_policy.record_fit(self.batch_size)  # every other user of the model learns it too
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return True

    def _next_size(self) -> int:
        """The batch size for the next batch: a trial size while tuning, else the chosen one."""
        return self._trials[0] if self._trials else int(self.batch_size or 1)

    def _record_trial(self, size: int, seconds: float) -> None:
        self._trials.pop(0)
        if size not in self._trials:  # the second run at this size: keep its rate
            self._rates[size] = size / max(seconds, 1e-9)
        if not self._trials:
            self.batch_size = max(self._rates, key=self._rates.__getitem__)
            self.classifier.batch_policy.record(self.batch_size)

    def _before_batch(self, size: int) -> None:
        if self.hooks.cancelled is not None and self.hooks.cancelled():
            raise Cancelled("the job was cancelled")
        if self.max_passes is not None and self._passes + size > self.max_passes:
            raise BudgetError(
                f"{self.description}: {self._passes + size:,} forward passes would exceed the budget of "
                f"{self.max_passes:,}; lower the method's sample count (or raise the budget)"
            )

    def _after_batch(self, count: int) -> None:
        self._passes += count
        if self._bar is not None:
            self._bar.update(count)
        if self.hooks.on_passes is not None:
            self.hooks.on_passes(count)

    def run(self, step: Callable[[int, int], tuple[T, int]], total: int, *, tune: bool = True) -> list[T]:
        """Run ``step`` over items ``0..total-1`` in batches; the steps' results, in order.

        ``step(start, stop)`` runs the model on items ``start..stop-1`` and returns
        ``(result, consumed)``; a step may consume fewer items than offered (the
        token path groups rows of equal length). Each consumed item counts as one
        forward pass. ``tune=False`` keeps batch-size trials away from steps whose
        speed says nothing about the model's (gradients).
        """
        start_time = time.perf_counter()
        results: list[T] = []
        if self._bar is None and self.hooks.progress:
            # one bar for the whole job when its cost was announced (a sampling method's rounds share it)
            bar_total = self._expected if self._expected is not None else self._passes + total
            self._bar = tqdm(total=bar_total, desc=self.description, unit="pass", delay=1.0, leave=False)
            self._bar.update(self._passes)
        done = 0
        try:
            while done < total:
                size = self._next_size() if tune else int(self.batch_size or 1)
                stop = min(total, done + size)
                self._before_batch(stop - done)
                tick = time.perf_counter()
                try:
                    with self._lock:
                        value, consumed = step(done, stop)
                except Exception as exc:
                    if self.back_off(exc, size):
                        continue
                    raise
                if not 1 <= consumed <= stop - done:
                    raise RuntimeError(f"a step consumed {consumed} of {stop - done} items")
                if tune and self._trials and consumed == size:  # only full batches say anything about speed
                    self._record_trial(size, time.perf_counter() - tick)
                results.append(value)
                self._after_batch(consumed)
                done += consumed
        finally:
            self._seconds += time.perf_counter() - start_time
            if self._expected is None or self._passes >= self._expected:
                self.close()
        return results

    def note(self, text: str) -> None:
        """Show ``text`` beside the progress bar (a sampling method's convergence, say)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        """Close the progress bar (a job that stops early never reaches its announced total)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def run_once(self, fn: Callable[[], T]) -> T:
        """One forward pass (and backward, if ``fn`` takes gradients) of one image, counted and timed."""
        return self.run(lambda _a, _b: (fn(), 1), 1, tune=False)[0]

    def _forward(self, x: torch.Tensor) -> Any:
        """The model's answer for a batch of inputs: the classifier's own, or through the caller's ``forward``."""
        return self.hooks.forward(x) if self.hooks.forward is not None else self.classifier(x)

    # -- pixel scoring -------------------------------------------------------------
    def run_inputs(self, make: Callable[[int, int], torch.Tensor], total: int) -> None:
        """Run the model on ``total`` inputs that ``make(start, stop)`` builds, keeping nothing (batch-size measurement)."""

        def step(start: int, stop: int) -> tuple[None, int]:
            self._forward(make(start, stop))
            return None, stop - start

        self.run(step, total)

    def score_inputs(self, make: Callable[[int, int], torch.Tensor], total: int, objective: Objective) -> torch.Tensor:
        """Scores ``(total, T)`` of ``objective`` on ``total`` inputs that ``make(start, stop)`` builds on demand.

        Inputs are built one batch at a time, so memory is bounded by the batch
        size whatever ``total`` is; the scores stay on the device.
        """
        # The scores go straight into one tensor allocated at the first batch. Kept as many small
        # tensors, they sat between the batches' large freed buffers on the heap, and the process's
        # memory grew with the number of batches (glibc: 16,000 RISE masks, +250 MB).
        out: list[torch.Tensor] = []

        def step(start: int, stop: int) -> tuple[None, int]:
            chosen = objective(self._forward(make(start, stop)))
            if not out:
                out.append(torch.empty(total, chosen.shape[1], dtype=chosen.dtype, device=chosen.device))
            out[0][start:stop] = chosen
            return None, stop - start

        self.run(step, total)
        if not out:
            return torch.zeros(0, len(objective), device=self.device)
        return out[0]

    def score_masks(
        self,
        image: torch.Tensor,
        baseline: torch.Tensor,
        source: MaskSource,
        objective: Objective,
        masking: str = "pixels",
    ) -> torch.Tensor:
        """Scores ``(source.total, T)`` of ``objective`` on ``image * m + baseline * (1 - m)`` for each mask ``m``.

        ``masking="pixels"`` blends pixels with the baseline; ``"tokens"`` (ViTs
        whose patch grid matches the masks) drops the hidden patch tokens instead.
        """
        if masking == "tokens":
            return self.score_tokens(image, baseline, source, objective)
        if masking != "pixels":
            raise MethodError(f"masking={masking!r}: use 'pixels' or 'tokens'")
        delta = image - baseline

        def make(start: int, stop: int) -> torch.Tensor:
            m = source.masks(start, stop)
            return torch.addcmul(baseline, m, delta)  # baseline + m * (image - baseline)

        return self.score_inputs(make, source.total, objective)

    def output_of(self, image: torch.Tensor) -> object:
        """The model's whole answer for one image ``(3, H, W)``, as a batch of one (class scores ``(1, C)``
        for a classifier); one counted pass. Objectives are resolved from it.
        """
        return self.run(lambda _a, _b: (self._forward(image[None]), 1), 1)[0]

    def score_one(self, image: torch.Tensor) -> object:
        """The model's answer for one image ``(3, H, W)`` (a classifier's class scores ``(C,)``); one counted pass."""
        return self.output_of(image)[0]  # type: ignore[index]

    # -- token scoring (ViTs) --------------------------------------------------------
    def score_tokens(
        self, image: torch.Tensor, baseline: torch.Tensor, source: MaskSource, objective: Objective
    ) -> torch.Tensor:
        """Scores ``(source.total, T)`` of ``objective`` with each mask's hidden patch tokens dropped.

        The classifier embeds the image once (:meth:`Classifier.token_view`) and
        scores each batch of kept-token sets through its own call path. Masks are
        run in order of how many tokens they keep, so each padded batch wastes
        little; a mask that keeps nothing is scored as the baseline image.
        """
        with self._lock:  # the embedding runs the model's first layers
            view = self.classifier.token_view(image)
        # one chunk of pixel masks at a time: memory is bounded whatever the mask count
        parts = [view.keep_vectors(source.masks(a, min(source.total, a + COMBINE_CHUNK))) for a in range(0, source.total, COMBINE_CHUNK)]
        keep = torch.cat(parts) if parts else torch.zeros(0, view.layout.num_patches, dtype=torch.bool, device=self.device)
        counts = keep.sum(1)
        out = torch.empty(source.total, len(objective), device=self.device)
        empty = (counts == 0).nonzero()[:, 0]
        if len(empty):
            out[empty] = self.score_inputs(lambda _a, _b: baseline[None], 1, objective)
        order = counts.argsort(stable=True)[len(empty) :]  # fewest tokens first: little padding per batch

        def step(start: int, stop: int) -> tuple[None, int]:
            rows = order[start:stop]
            if not view.padded:  # blocks without attention masks need rows of one length
                rows = rows[counts[rows] == counts[rows[0]]]
            out[rows] = objective(self.classifier.score_tokens(view, keep[rows]))
            return None, len(rows)

        self.run(step, len(order))
        return out


def combine_masks(source: MaskSource, weights: torch.Tensor) -> torch.Tensor:
    """``sum_i weights[i, t] * mask_i`` for each target t: ``(T, H, W)``.

    Masks are regenerated in fixed chunks (:data:`COMBINE_CHUNK`) so the sum is
    the same whatever batch size scored them.
    """
    total = min(source.total, weights.shape[0])
    acc: torch.Tensor | None = None
    for start in range(0, total, COMBINE_CHUNK):
        stop = min(total, start + COMBINE_CHUNK)
        m = source.masks(start, stop).float()
        flat = m.reshape(m.shape[0], -1)
        part = weights[start:stop].float().T @ flat
        acc = part if acc is None else acc + part
        shape = m.shape[-2:]
    assert acc is not None, "combine_masks needs at least one mask"
    return acc.reshape(-1, *shape)
