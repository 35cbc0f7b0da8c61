"""Whether ONNX Runtime's threads should spin: decided on the real work, and decided again when the load changes.

ONNX Runtime's threads can wait for work by spinning (fast: no wake-up between
the many small operators of a network like EfficientNet-Lite0) or by blocking
(safe: they leave the cores to others). On a quiet machine spinning is the
faster one (the issue measured ONNX Runtime's default, spinning, at 368
images/s against 199 blocking on a quiet 2-core machine); on a busy one it
halved the speed (benchmarks/RESULTS.md, "Runtimes": 10.2 against 21.2
images/s), because a spinning thread holds a core that another process
wants. Neither setting is right everywhere, and which one is right changes
while a long job runs.

So a classifier keeps one session of each kind and lets the work decide:
once a batch size repeats (the engine has finished choosing it), a few of the
real batches run on each session in turn; the faster per image wins, spinning
only by a clear margin. While spinning, every batch is still timed, and a
spinning session that becomes slower than the blocking one measured (another
job started) is left at once; the blocking one is tried against it again
every half minute. ``PATCHLENS_SPINNING=on|off`` fixes the choice.

What was decided, on which figures, is kept in :attr:`SpinningChoice.record`,
which goes into every result's runtime record, and logged at debug level.
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("patchlens")

#: environment variable fixing the choice: ``on`` (always spin), ``off`` (never), ``auto`` (measure; the default)
SPINNING_ENV = "PATCHLENS_SPINNING"
#: consecutive calls at one batch size before a trial starts (the engine's batch-size trials run each size twice)
STEADY = 3
#: timed batches of each session in a trial (after one untimed warm-up batch of the spinning session)
PROBES = 2
#: spinning is chosen only when it takes less than this share of the blocking session's time per image
MARGIN = 0.9
#: seconds after which the blocking session's choice is put to a new trial
RECHECK_S = 30.0
#: batches of a spinning session's recent times that are averaged to notice a new load
WINDOW = 3


def spinning_setting() -> str:
    """``$PATCHLENS_SPINNING``: ``on``, ``off`` or ``auto``; anything else is a one-line error."""
    from ..errors import ModelError

    value = os.environ.get(SPINNING_ENV, "auto").strip().lower() or "auto"
    if value not in ("on", "off", "auto"):
        raise ModelError(f"{SPINNING_ENV}={value!r}: use on, off or auto")
    return value


class SpinningChoice:
    """Chooses, batch by batch, between a blocking session and a spinning one (see the module's notes).

    Args:
        make_blocking: builds the session whose threads block when idle (safe under contention), on first need.
        make_spinning: builds the session whose threads spin, on first need.
        setting: ``on``, ``off`` or ``auto``.
        clock: for tests.
    """

    def __init__(
        self, make_blocking: Callable[[], Any], make_spinning: Callable[[], Any], setting: str = "auto",
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._make = {False: make_blocking, True: make_spinning}
        self._sessions: dict[bool, Any] = {}
        self.setting = setting
        self.clock = clock
        self.lock = threading.Lock()
        self.spinning = setting == "on"  # the session in use outside trials
        self._last_size: int | None = None
        self._repeats = 0
        self._plan: list[tuple[bool, str]] = []  # a trial's remaining batches: (spinning?, "warm-up" or "trial")
        self._size = 0  # the batch size trials and checks are timed at
        self._times: dict[bool, list[float]] = {True: [], False: []}  # seconds per image in the current trial
        self._blocking_rate: float | None = None  # seconds per image of the blocking session, last measured
        self._recent: list[float] = []  # the spinning session's latest seconds per image (while it is chosen)
        self._decided_at: float | None = None
        self._in_flight = 0
        #: what was measured and chosen, for the result's runtime record
        self.record: dict[str, Any] = {"spinning": self.spinning, "setting": setting}

    # -- the session for the next batch ---------------------------------------------------
    def session(self, spinning: bool) -> Any:
        """The session of that kind, opened on first use (a machine that never tries spinning never opens it)."""
        if spinning not in self._sessions:
            with self.lock:
                if spinning not in self._sessions:
                    self._sessions[spinning] = self._make[spinning]()
        return self._sessions[spinning]

    def next_batch(self, size: int) -> tuple[bool, str | None]:
        """``(spinning?, why timed)`` for a batch of ``size`` images about to run: ``"trial"``, ``"watch"`` or None."""
        with self.lock:
            self._in_flight += 1
            if self.setting != "auto":
                return self.spinning, None
            self._repeats = self._repeats + 1 if size == self._last_size else 1
            self._last_size = size
            if not self._plan and self._repeats >= STEADY and self._due():
                # one untimed batch first: a session's first run at a new shape pays for its allocations
                self._plan = [(True, "warm-up")] + [(s, "trial") for _ in range(PROBES) for s in (True, False)]
                self._size, self._times = size, {True: [], False: []}
            if self._plan and size == self._size:
                spinning, kind = self._plan.pop(0)
                return spinning, kind if kind == "trial" else None
            return self.spinning, "watch" if self.spinning and size == self._size else None

    def _due(self) -> bool:
        """Whether a trial should start: none has run yet, or the blocking choice has stood for a while."""
        if self._decided_at is None:
            return True
        return not self.spinning and self.clock() - self._decided_at >= RECHECK_S

    def timed(self, spinning: bool, size: int, seconds: float, kind: str | None) -> None:
        """A batch of ``size`` images took ``seconds``; ``kind`` as :meth:`next_batch` said."""
        with self.lock:
            alone = self._in_flight == 1  # concurrent batches (a web server's requests) time each other
            self._in_flight -= 1
            if kind == "trial":
                if not alone:
                    self._plan.insert(0, (spinning, "trial"))  # measure it again, alone
                    return
                self._times[spinning].append(seconds / size)
                if all(len(t) == PROBES for t in self._times.values()):
                    self._decide()
            elif kind == "watch" and alone and self.spinning:
                self._watch(seconds / size)

    def _decide(self) -> None:
        spin, block = (statistics.median(self._times[s]) for s in (True, False))
        self.spinning = spin < MARGIN * block
        self._blocking_rate, self._recent, self._decided_at = block, [], self.clock()
        why = "faster on this machine now" if self.spinning else "spinning was not faster by a clear margin: the machine is busy"
        self._note(spin, block, why)

    def _watch(self, per_image: float) -> None:
        """While spinning: leave it as soon as it is slower than the blocking session measured (a load appeared)."""
        self._recent = (self._recent + [per_image])[-WINDOW:]
        if len(self._recent) == WINDOW and self._blocking_rate is not None and min(self._recent) > self._blocking_rate:
            self.spinning, self._decided_at = False, self.clock()
            self._note(statistics.median(self._recent), self._blocking_rate, "spinning became slower than not spinning: a load appeared")

    def _note(self, spin: float, block: float, why: str) -> None:
        self.record = {
            "spinning": self.spinning,
            "setting": self.setting,
            "batch": self._size,
            "images_per_s": {"spinning": round(1 / spin, 1), "blocking": round(1 / block, 1)},
            "why": why,
            "decisions": int(self.record.get("decisions", 0)) + 1,
        }
        log.debug("patchlens: ONNX Runtime threads %s: %s (batch %d: %.1f images/s spinning, %.1f blocking)",
                  "spin" if self.spinning else "block", why, self._size, 1 / spin, 1 / block)
