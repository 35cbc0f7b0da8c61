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
from dataclasses import dataclass, field
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
    _bar: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.batch_size is None:
            self.batch_size = default_batch_size(self.classifier.device)
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: must be at least 1")

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
                stop = min(total, done + int(self.batch_size or 1))
                try:
                    probs = self._forward(make(done, stop))
                except Exception as exc:
                    if _is_oom(exc) and (self.batch_size or 1) > 1:
                        # Halve and retry this batch; what is already scored is kept.
                        self.batch_size = max(1, int(self.batch_size or 1) // 2)
                        if self.device.type == "cuda":
                            torch.cuda.empty_cache()
                        continue
                    raise
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
