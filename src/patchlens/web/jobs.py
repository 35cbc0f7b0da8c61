"""A bounded job queue for long explanations, with progress and cancellation.

A small pool of worker threads takes jobs from a queue of limited length; a
full queue is refused (the web app answers 429) instead of piling up work.
Progress and cancellation are the engine's (:class:`patchlens.engine.Hooks`):
a job's :meth:`WebJob.hooks` counts the forward passes of every engine that
works for it and stops them at their next batch once the job is cancelled,
and holds the server's one model lock around each forward pass, so the cheap
what-if predictions interleave with a long job batch by batch instead of
waiting for the whole queue, and a model that is not thread-safe is never run
twice at once.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ..engine import Hooks
from ..errors import Cancelled


class QueueFull(Exception):
    """The queue already holds as many waiting jobs as it may."""


@dataclass
class WebJob:
    """One submitted computation and what is known about it so far."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    work: Callable[[WebJob], Any] | None = None
    total: int | None = None  # forward passes expected, when known
    done: int = 0
    status: str = "queued"  # queued, running, done, error, cancelled
    result: Any = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel_flag: threading.Event = field(default_factory=threading.Event)
    #: the running map of a sampling method while it forms: what it is, and its picture
    preview: dict[str, Any] | None = None
    preview_png: bytes | None = field(default=None, repr=False)
    #: forward passes of the faithfulness metrics after the maps, counted apart: ``total`` is the methods' passes
    scoring: int = 0

    def count(self, passes: int) -> None:
        """``passes`` more forward passes of the job's methods ran (counted against its stated ``total``)."""
        self.done += passes

    def count_scoring(self, passes: int) -> None:
        """``passes`` more forward passes of the job's metrics ran (not in its stated total: counted apart)."""
        self.scoring += passes

    def hooks(
        self, lock: Any, on_map: Callable[[torch.Tensor, int], None] | None = None, count: Callable[[int], None] | None = None
    ) -> Hooks:
        """What every engine working for this job runs with: counted (by ``count``, :meth:`count` unless
        given), cancellable, behind the server's ``lock``.
        """
        return Hooks(cancelled=self.cancel_flag.is_set, on_passes=count or self.count, on_map=on_map, lock=lock)

    def show_preview(self, png: bytes, **about: Any) -> None:
        """Replace the running map; ``version`` counts replacements, so the page fetches each once."""
        version = (self.preview or {}).get("version", 0) + 1
        self.preview_png, self.preview = png, {**about, "version": version}

    def to_dict(self) -> dict[str, Any]:
        fraction = None
        if self.status == "done":
            fraction = 1.0
        elif self.total:
            fraction = min(1.0, self.done / self.total)
        # the total is stated before the run; should a method run more passes than it stated, the
        # total grows with them rather than showing "635 of 503"
        total = max(self.total, self.done) if self.total is not None else None
        return {
            "id": self.id,
            "status": self.status,
            "progress": {"done": self.done, "total": total, "fraction": fraction, "scoring_passes": self.scoring},
            "preview": self.preview if self.status == "running" else None,
            "error": self.error,
            "seconds": round((self.finished or time.time()) - self.started, 3) if self.started else None,
        }


class JobQueue:
    """``workers`` threads running jobs from a queue of at most ``max_queued`` waiting jobs.

    Finished jobs are kept (newest ``keep`` of them) so their results can be fetched.
    """

    def __init__(self, workers: int = 1, max_queued: int = 8, keep: int = 64) -> None:
        if workers < 1 or max_queued < 1:
            raise ValueError("a job queue needs at least one worker and room for one job")
        self.max_queued, self.keep = max_queued, keep
        self._jobs: collections.OrderedDict[str, WebJob] = collections.OrderedDict()
        self._waiting: collections.deque[WebJob] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"patchlens-job-{i}", daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, work: Callable[[WebJob], Any], total: int | None = None, *, job: WebJob | None = None) -> WebJob:
        """Queue ``work(job)`` (``job``: one made beforehand, whose hooks have already counted); raises
        :class:`QueueFull` when the queue is full.
        """
        with self._cond:
            if len(self._waiting) >= self.max_queued:
                raise QueueFull(f"{len(self._waiting)} jobs are already waiting (the limit is {self.max_queued})")
            job = job or WebJob()
            job.work, job.total = work, total
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._forget_old()
            self._cond.notify()
        return job

    @property
    def full(self) -> bool:
        """Whether a job submitted now would be refused."""
        with self._cond:
            return len(self._waiting) >= self.max_queued

    def get(self, job_id: str) -> WebJob | None:
        with self._cond:
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> WebJob | None:
        """Ask a job to stop: a waiting job is dropped now, a running one at its next batch."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            job.cancel_flag.set()
            if job.status == "queued":
                self._waiting.remove(job)
                job.status, job.finished = "cancelled", time.time()
        return job

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Cancel everything and stop the workers."""
        with self._cond:
            self._stopping = True
            for job in list(self._jobs.values()):
                job.cancel_flag.set()
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.status in ("done", "error", "cancelled")]
        for job in finished[: max(0, len(finished) - self.keep)]:
            del self._jobs[job.id]

    def _worker(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._waiting.popleft()
                job.status, job.started = "running", time.time()
            try:
                assert job.work is not None
                result = job.work(job)
                status, error = "done", None
            except Cancelled:
                result, status, error = None, "cancelled", None
            except Exception as exc:  # noqa: BLE001  reported to the user; the worker must survive
                result, status = None, "error"
                error = str(exc) if _is_user_error(exc) else f"internal error: {type(exc).__name__}: {exc}"
            with self._cond:
                job.result, job.status, job.error, job.finished = result, status, error, time.time()


def _is_user_error(exc: BaseException) -> bool:
    from ..errors import PatchlensError

    return isinstance(exc, PatchlensError)


@contextlib.contextmanager
def holding(lock: threading.RLock, hold: bool) -> Iterator[None]:
    """Hold ``lock`` for a whole block when ``hold`` (methods that hook into the model)."""
    if hold:
        with lock:
            yield
    else:
        yield
