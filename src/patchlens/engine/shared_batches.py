"""Several explanations feeding one model: a dynamic batcher, as an inference server has.

An engine explaining one image sends batches of at most its batch size, and
short ones at every round's end (RISE's 250-mask rounds leave 26 over at batch
32; a 20-mask job is one short batch). With several images explained at once,
each image's engine sends its forward passes to the stream (:meth:`SharedBatches.caller`
gives it the function, which it takes as its ``Hooks.forward``); one model
thread concatenates whatever rows are waiting, from any image, into batches of
the best size, runs one forward pass and hands each caller its rows. A request
may be split between two batches, so batches are full whenever enough rows wait.

The callers compose their inputs (masking, resizing, moving to the device) on
their own threads; the model thread only runs forward passes. Each image's
engine still counts its passes, checks its budget, honours cancellation and
backs off when the device runs out of memory, as it does on a plain classifier:
the stream changes where rows run, never how many. An error in a shared batch
is handed to the callers whose rows were in it (each caller's rows are run
again alone first, so one image's bad input fails that image only); an
out-of-memory error thus reaches the engines, which halve their batches and
record the size that fits on the model's batch policy, which the stream reads
before every batch.

Which rows share a batch depends on thread timing, so a map equals the one
explained alone exactly when the model scores a row the same whatever else is
in its batch. The default model does, on ONNX Runtime's CPU provider and on
torch (measured on this project's 2-core AVX2 CPU: a batch of 32 and the same
rows in smaller batches, 20 + 12 on both, 8 x 4 on torch, 32 x 1 on ONNX
Runtime, give bit-identical scores, and RISE maps come out bit-identical), as
do the tests' small torch CNNs. Kernels that pick their blocking by batch size
may change a float32 score's last bits (about 1e-7 of it); a RISE map is a
weighted mean of scores, so it moves by at most that share of the largest
score, thousands of times below the float16 step of the store. A GPU with
reduced precision (autocast) can differ by more, up to that precision: where
bit-identical reruns matter there, use ``images_in_flight=1``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import Cancelled, ModelError
from ..images import resize
from ..models import outputs
from ..models.classifier import Classifier

#: how long (seconds) the oldest waiting row may wait for a fuller batch while a caller is still
#: composing its next request, at least ...
MAX_WAIT = 0.01
#: ... or this share of a full batch's time, when longer: waiting then costs the model at most a tenth
#: of its time, however slow a batch is (~90 ms for 32 rows of the default model on a quiet 2-core CPU,
#: ten times that when other jobs share the cores, and so do the callers composing their rows)
WAIT_SHARE = 0.1


@dataclass(eq=False)
class _Request:
    """One caller's batch: its rows, how many are handed to the model so far, and its answer."""

    rows: torch.Tensor
    arrived: float = field(default_factory=time.monotonic)
    taken: int = 0  # rows already put in a batch
    parts: list[Any] = field(default_factory=list)  # the model's answers for its rows, batch by batch
    scored: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class SharedBatches:
    """One model thread that runs the forward passes of many callers in shared batches.

    Args:
        classifier: the model; only the model thread calls it.
        batch_size: rows per forward pass (the model's best batch; less once the
            model's batch policy knows that fewer fit in memory).
        max_wait: seconds the oldest waiting row may wait for a fuller batch while
            some caller is still composing its next request (None: :data:`MAX_WAIT`),
            or :data:`WAIT_SHARE` of a full batch's measured time when that is longer.
            A batch runs at once when it is full or when every caller is waiting for the model.

    Use as a context manager; :meth:`caller` gives each image its forward function.
    """

    def __init__(self, classifier: Classifier, batch_size: int, max_wait: float | None = None) -> None:
        if batch_size < 1:
            raise ModelError(f"batch_size={batch_size}: must be at least 1")
        self.classifier, self.batch_size = classifier, batch_size
        self.max_wait = MAX_WAIT if max_wait is None else max_wait
        self._full_batch_seconds = 0.0  # measured on the last batch, scaled to a full one
        self._pending: deque[_Request] = deque()
        self._callers = 0
        self._closed = False
        self._changed = threading.Condition()
        #: rows per forward pass, in order (for benchmarks and tests: they show whether batches are full)
        self.batch_sizes: list[int] = []
        self._thread = threading.Thread(target=self._serve, name="patchlens-model", daemon=True)
        self._thread.start()

    # -- the callers' side --------------------------------------------------------
    @contextlib.contextmanager
    def caller(self) -> Iterator[Callable[[torch.Tensor], Any]]:
        """The forward function of one caller thread (for its engine's ``Hooks.forward``); while it is open,
        the model thread counts on its rows.
        """
        with self._changed:
            self._callers += 1
        try:
            yield self.score
        finally:
            with self._changed:
                self._callers -= 1
                self._changed.notify_all()  # the others may now be all that the model waits for

    def score(self, x: torch.Tensor) -> Any:
        """The model's answer for a batch ``x`` ``(n, 3, H, W)``, from shared batches.

        The caller's thread moves and resizes its rows, so the model thread only runs the model.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ModelError(f"{self.classifier.model_id}: expected a batch of shape (N, 3, H, W), got {tuple(x.shape)}")
        rows = resize(x.to(self.classifier.device, torch.float32), self.classifier.input_size)
        request = _Request(rows)
        with self._changed:
            if self._closed:
                raise Cancelled("the shared model stream was closed")
            self._pending.append(request)
            self._changed.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return outputs.join_rows(request.parts)  # class scores are concatenated, a detector's Detections joined

    # -- the model thread ------------------------------------------------------------
    def _waiting_rows(self) -> int:
        return sum(len(r.rows) - r.taken for r in self._pending)

    @property
    def rows_per_batch(self) -> int:
        """Rows per forward pass now: the batch size, or fewer once the model is known to hold no more."""
        return self.classifier.batch_policy.cap(self.batch_size)

    def _ready(self) -> bool:
        if not self._pending:
            return False
        if self._closed or self._waiting_rows() >= self.rows_per_batch or len(self._pending) >= self._callers:
            return True  # full, or nobody else can add rows before this batch runs
        return time.monotonic() - self._pending[0].arrived >= self._wait_limit()

    def _wait_limit(self) -> float:
        return max(self.max_wait, WAIT_SHARE * self._full_batch_seconds)

    def _take(self) -> list[tuple[_Request, int, int]]:
        """Slices ``(request, start, stop)`` for the next batch, oldest rows first."""
        slices, room = [], self.rows_per_batch
        for request in self._pending:
            if room == 0:
                break
            n = min(room, len(request.rows) - request.taken)
            if n:
                slices.append((request, request.taken, request.taken + n))
                request.taken += n
                room -= n
        while self._pending and self._pending[0].taken == len(self._pending[0].rows):
            self._pending.popleft()  # wholly taken; the request still waits for its scores
        return slices

    def _serve(self) -> None:
        try:
            while True:
                with self._changed:
                    while not self._ready():
                        if self._closed and not self._pending:
                            return
                        wait = None if not self._pending else self._wait_limit() - (time.monotonic() - self._pending[0].arrived)
                        self._changed.wait(None if wait is None else max(wait, 1e-4))
                    slices = self._take()
                self._run(slices)
        except BaseException as exc:  # a bug here must not leave the callers waiting for ever
            with self._changed:
                self._closed = True
                waiting = list(self._pending)
            for request in waiting:
                self._fail(request, exc)
            raise

    def _run(self, slices: list[tuple[_Request, int, int]]) -> None:
        rows = [r.rows[a:b] for r, a, b in slices]
        start = time.perf_counter()
        try:
            scores = self.classifier(rows[0] if len(rows) == 1 else torch.cat(rows))
        except BaseException as exc:  # noqa: BLE001  whatever the model raised goes to the callers waiting for this batch
            if len(slices) == 1:
                self._fail(slices[0][0], exc)
                return
            # Whose rows made the batch fail? Run each caller's rows alone, so one image's
            # bad input (NaN scores, say) fails that image only, as it would on its own.
            for s in slices:
                self._run([s])
            return
        count = outputs.batch_length(scores)
        self.batch_sizes.append(count)
        self._full_batch_seconds = (time.perf_counter() - start) * self.rows_per_batch / count
        at = 0
        for request, a, b in slices:
            if request.error is None:
                request.parts.append(outputs.rows(scores, at, at + b - a))
                request.scored += b - a
                if request.scored == len(request.rows):
                    request.done.set()
            at += b - a

    def _fail(self, request: _Request, exc: BaseException) -> None:
        with self._changed:
            request.error = exc
            if request in self._pending:  # rows not yet taken are not scored
                self._pending.remove(request)
        request.done.set()

    # -- life cycle --------------------------------------------------------------------
    def close(self) -> None:
        """Finish what is queued, then stop the model thread; later requests raise Cancelled."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()

    def __enter__(self) -> SharedBatches:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
