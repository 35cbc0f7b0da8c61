"""The perturbation engine: score many perturbed copies of an image, in batches.

Every black-box method is *propose masks -> compose masked inputs -> score ->
combine*. Methods own the first and last steps (a :class:`MaskSource` and a
combination of the scores); this module owns the middle: it builds each batch
on the model's device, runs the model under inference mode, counts forward
passes and time, picks the batch size, and halves it on out-of-memory without
losing the batches already scored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from tqdm.auto import tqdm

from ..errors import MethodError
from ..models.classifier import Classifier

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
    # On a CPU larger batches stop paying off early and cost memory; on a GPU
    # we start big and let the out-of-memory back-off find the limit.
    return 256 if device.type == "cuda" else 32


#: Batch sizes an engine on the CPU tries (each twice, on real work) before it
#: settles. On the 2-core benchmark machine EfficientNet-Lite0 ran 39 % faster
#: at batch 1 than at 32 (activations of big batches fall out of the caches),
#: while tiny models gain from large batches: only measuring tells.
CPU_CANDIDATES = (1, 4, 16, 32)


def measured_batch_size(classifier: Classifier) -> int:
    """The batch size an engine settles on for ``classifier`` (measured once on a CPU, on random inputs)."""
    tuned = getattr(classifier, "_tuned_batch_size", None)
    if tuned is None and classifier.device.type == "cpu":
        Engine(classifier).score_inputs(
            lambda a, b: torch.rand(b - a, 3, *classifier.input_size, device=classifier.device), 2 * sum(CPU_CANDIDATES)
        )
        tuned = getattr(classifier, "_tuned_batch_size", None)
    return int(tuned or default_batch_size(classifier.device))


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    cause = exc.__cause__
    return isinstance(cause, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


@dataclass
class Engine:
    """Scores perturbed inputs with a classifier. One engine serves one explanation.

    Args:
        classifier: the model.
        batch_size: images per forward pass; None picks one for the device.
        progress: show a progress bar (appears only if the work takes over a second).
    """

    classifier: Classifier
    batch_size: int | None = None
    progress: bool = False
    forward_passes: int = 0
    seconds: float = 0.0
    description: str = "scoring"

    def __post_init__(self) -> None:
        self._trials: list[int] = []
        self._rates: dict[int, float] = {}
        if self.batch_size is None:
            tuned = getattr(self.classifier, "_tuned_batch_size", None)
            if tuned is None and self.classifier.device.type == "cpu":
                # Try each candidate twice (the first call at a new shape pays set-up costs).
                self._trials = [b for b in CPU_CANDIDATES for _ in range(2)]
            self.batch_size = tuned or default_batch_size(self.classifier.device)
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: must be at least 1")

    def back_off(self, exc: BaseException, size: int) -> bool:
        """After a batch of ``size`` raised ``exc``: on out-of-memory, halve the batch size
        and return True (retry the same batch; what is already scored is kept).
        Anything else returns False, for the caller to re-raise."""
        if not (_is_oom(exc) and size > 1):
            return False
        self._trials = []
        self.batch_size = max(1, size // 2)
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
            try:
                self.classifier._tuned_batch_size = self.batch_size  # type: ignore[attr-defined]
            except AttributeError:
                pass

    @property
    def device(self) -> torch.device:
        return self.classifier.device

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.classifier(batch)
        self.forward_passes += batch.shape[0]
        return out

    def score_inputs(
        self,
        make: Callable[[int, int], torch.Tensor],
        total: int,
        targets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores of ``total`` inputs that ``make(start, stop)`` builds on demand.

        Returns ``(total, T)`` probabilities of ``targets`` (all classes when None),
        on the device. Inputs are built one batch at a time, so memory is bounded
        by the batch size whatever ``total`` is.
        """
        start_time = time.perf_counter()
        results: list[torch.Tensor] = []
        bar = tqdm(total=total, desc=self.description, unit="pass", delay=1.0, disable=not self.progress, leave=False)
        done = 0
        try:
            while done < total:
                size = self._next_size()
                stop = min(total, done + size)
                tick = time.perf_counter()
                try:
                    probs = self._forward(make(done, stop))
                except Exception as exc:
                    if self.back_off(exc, size):
                        continue
                    raise
                if self._trials and stop - done == size:  # only full batches say anything about speed
                    self._record_trial(size, time.perf_counter() - tick)
                results.append(probs if targets is None else probs[:, targets])
                bar.update(stop - done)
                done = stop
        finally:
            bar.close()
            self.seconds += time.perf_counter() - start_time
        if not results:
            n_t = 0 if targets is None else len(targets)
            return torch.zeros(0, n_t, device=self.device)
        return torch.cat(results)

    def score_masks(
        self,
        image: torch.Tensor,
        baseline: torch.Tensor,
        source: MaskSource,
        targets: torch.Tensor,
        masking: str = "pixels",
    ) -> torch.Tensor:
        """Scores ``(source.total, T)`` of ``image * m + baseline * (1 - m)`` for each mask ``m``.

        ``masking="pixels"`` blends pixels with the baseline; ``"tokens"`` (ViTs
        whose patch grid matches the masks) drops the hidden patch tokens instead.
        """
        if masking == "tokens":
            from .tokens import score_tokens  # late import: tokens.py imports this module

            return score_tokens(self, image, baseline, source, targets)
        if masking != "pixels":
            raise MethodError(f"masking={masking!r}: use 'pixels' or 'tokens'")
        delta = image - baseline

        def make(start: int, stop: int) -> torch.Tensor:
            m = source.masks(start, stop)
            return torch.addcmul(baseline, m, delta)  # baseline + m * (image - baseline)

        return self.score_inputs(make, source.total, targets)

    def score_one(self, image: torch.Tensor) -> torch.Tensor:
        """All class probabilities ``(C,)`` for one image ``(3, H, W)``."""
        return self.score_inputs(lambda a, b: image[None], 1)[0]


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
