"""A black-box Classifier whose scores come from a server over HTTP.

One engine batch is split into requests of ``request_batch`` images, sent
``in_flight`` at a time, and put back together in order, so the scores (and
the maps) are the same whatever the concurrency, the retries or the split.
Identical inputs (the unmasked photo, a repeated mask) are sent once: scores
are cached by the input's bytes. ``max_queries`` caps the images sent; when
it would be passed the call raises :class:`QueryBudgetError` before sending.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np
import torch
from tqdm.auto import tqdm

from ...errors import ModelError, QueryBudgetError
from ..activation import choose_activation
from ..classifier import Classifier, check_kind, check_min_score
from .http import HttpClient
from .protocols import MAX_CLASSES, Protocol

#: largest JSON answer while the number of classes is unknown (a 200 MB answer would cost ~3 GB to parse)
UNKNOWN_ANSWER_LIMIT = 64 * 1024 * 1024


class ScoresWarning(UserWarning):
    """The server's scores do not look like probabilities."""


class RemoteClassifier(Classifier):
    """Scores from a model behind an HTTP endpoint; see :func:`patchlens.models.remote.load_remote`."""

    runtime = "remote"

    def __init__(
        self,
        client: HttpClient,
        protocol: Protocol,
        *,
        input_size: int | tuple[int, int] | None = None,
        labels: Sequence[str] | None = None,
        activation: str = "auto",
        softmax: bool | None = None,
        in_flight: int = 4,
        request_batch: int | None = None,
        max_queries: int | None = None,
        cache_size: int = 4096,
        progress: bool = False,
        device: str | torch.device = "cpu",
        model_id: str | None = None,
        kind: str = "classifier",
        min_score: float = 0.5,
    ) -> None:
        if in_flight < 1 or (request_batch is not None and request_batch < 1):
            raise ModelError(f"{client.url}: in_flight (--in-flight) and request_batch (--request-batch) must be at least 1")
        if max_queries is not None and max_queries < 1:
            raise ModelError(f"{client.url}: max_queries={max_queries} (--max-queries) must be at least 1")
        self.client = client
        self.protocol = protocol
        layout = protocol.describe(client)
        size = input_size or layout.input_size
        if size is None:
            raise ModelError(f"{client.url}: the server does not state its input size; give it with input_size= (--input-size)")
        self.input_size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.labels = list(labels) if labels is not None else layout.labels
        self.activation = choose_activation(activation, softmax, "none", client.url)
        self.kind = check_kind(kind, client.url)  # a custom JSON decode() may return detections
        self.min_score = check_min_score(min_score, client.url)
        self.in_flight = in_flight
        # The server's own largest batch wins over our default of 8 (a JSON body of
        # 8 images at 224x224 is ~10 MB: bigger bodies gain little and stall longer).
        self.request_batch = request_batch or min(layout.max_batch or 8, 64)
        if layout.max_batch and self.request_batch > layout.max_batch:
            raise ModelError(
                f"{client.url}: request_batch={self.request_batch} (--request-batch) is over the server's max batch {layout.max_batch}"
            )
        self.max_queries = max_queries
        self.device = torch.device(device)
        self.model_id = model_id or client.url
        self.server = layout.server
        # The engine's batch: one round of every request in flight, full. Set, not measured: a
        # remote model's speed is the network's, and trial batches would spend queries.
        self.batch_policy.record(self.request_batch * self.in_flight)
        self.queries = 0  # images sent to the server (retries of a request are not counted again)
        if max_queries is None:  # a budget is precious: with one, binary tensors only where the server lists them (or --binary)
            self.queries += protocol.settle(client, self.input_size)
        elif getattr(protocol, "binary", False) is None:
            protocol.binary = False  # type: ignore[attr-defined]
        self.cache_hits = 0
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._warned = False
        # A second line under the engine's bar: what the network is doing (appears after a second).
        self._bar = tqdm(desc="remote", unit="img", delay=1.0, leave=False, disable=not progress)

    def __repr__(self) -> str:
        return f"RemoteClassifier({self.model_id!r}, protocol={self.protocol.name}, input_size={self.input_size})"

    #: what scores the forward passes: a server, over the network
    runtime = "remote"

    @property
    def runtime_details(self) -> dict[str, object]:
        """For every result's record (and the run's header): the protocol, the server, the encoding."""
        details: dict[str, object] = {"runtime": "remote", "protocol": self.protocol.name, "server": self.server}
        if getattr(self.protocol, "binary", None) is not None:
            details["tensors"] = "binary" if self.protocol.binary else "JSON"  # type: ignore[attr-defined]
        return details

    @property
    def traffic(self) -> str:
        """A short line on what was sent: for progress and reports."""
        t = self.client.traffic
        budget = f" of {self.max_queries}" if self.max_queries else ""
        return f"{self.queries}{budget} images sent in {t.requests} requests ({t.retries} retries), {self.cache_hits} from cache"

    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.detach().to("cpu", torch.float32).contiguous().numpy()
        keys = [hashlib.blake2b(img.tobytes(), digest_size=16).digest() for img in batch]
        with self._lock:
            found = {k: self._cache[k] for k in keys if k in self._cache}
            todo = list(dict.fromkeys(k for k in keys if k not in found))  # first occurrence of each, in order
            self.cache_hits += len(keys) - len(todo)
            self._spend(len(todo))
        rows = {k: i for i, k in reversed(list(enumerate(keys)))}  # first index of each key
        if todo:
            chunks = [todo[i : i + self.request_batch] for i in range(0, len(todo), self.request_batch)]
            pool = self._executor()
            sent = [pool.submit(self._send, batch[[rows[k] for k in c]]) for c in chunks]
            try:
                answers = [f.result() for f in sent]
            except BaseException as exc:
                # The other requests of this call are not needed any more. Those not yet sent are dropped; those
                # under way (retrying, perhaps) finish first, so that none of them redraws the progress line
                # under the message the caller is about to print. Ctrl-C does not wait for them.
                for f in sent:
                    f.cancel()
                if isinstance(exc, Exception):
                    wait(sent)
                self._bar.clear()  # no stale progress line left above the error message
                raise
            with self._lock:
                for chunk, scores in zip(chunks, answers):
                    for key, row in zip(chunk, scores):
                        found[key] = row
                        self._remember(key, row)
        answers = [found[k] for k in keys]
        if answers and not isinstance(answers[0], np.ndarray):  # a detector's dicts: checked by Classifier.check_output
            return answers
        return torch.from_numpy(np.stack(answers))  # activated by Classifier.__call__

    def _spend(self, n: int) -> None:
        if self.max_queries is not None and self.queries + n > self.max_queries:
            raise QueryBudgetError(
                f"{self.client.url}: query budget too small: the next requests need {n} images, only "
                f"{self.max_queries - self.queries} of max_queries={self.max_queries} are left ({self.queries} used); "
                "the explanation stopped unfinished (partial)"
            )
        self.queries += n

    def _remember(self, key: bytes, row: np.ndarray) -> None:
        self._cache[key] = row
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="patchlens-remote")
        return self._pool

    def _show(self, done: int = 0) -> None:
        t = self.client.traffic
        self._bar.set_postfix_str(f"{t.in_flight} requests in flight, {t.retries} retries", refresh=False)
        self._bar.update(done)

    def _send(self, batch: np.ndarray) -> np.ndarray:
        body, headers = self.protocol.body(batch)
        self._show()
        try:
            answer_headers, data = self.client.exchange("POST", self.protocol.infer_path, body, headers, limit=self.answer_limit(len(batch)))
        finally:
            self._show(batch.shape[0])
        scores = self.protocol.read(data, answer_headers, batch.shape[0], self.client)
        if isinstance(scores, list):  # a detector's answers (custom JSON decode), one dict per image
            return scores
        if self.labels is not None and scores.shape[1] != len(self.labels):
            raise ModelError(f"{self.client.url}: the server returned {scores.shape[1]} scores per image for {len(self.labels)} labels")
        self._check_probabilities(scores)
        return scores

    def answer_limit(self, n: int) -> int:
        """Most bytes an answer for ``n`` images may have: ~26 characters per JSON number, when the classes are known."""
        classes = self.num_classes or self.__dict__.get("_classes_seen")
        if classes is None:
            return max(UNKNOWN_ANSWER_LIMIT, n * 26 * 1000 + 65536)
        return n * 26 * min(int(classes), MAX_CLASSES) + 65536

    def _check_probabilities(self, scores: np.ndarray) -> None:
        if self.activation != "none" or self._warned:
            return
        sums = scores.sum(axis=1)
        if scores.min() < -1e-4 or np.abs(sums - 1).max() > 1e-2:
            self._warned = True
            self.outputs_probabilities = False  # titles and descriptions say "score", not "p"
            warnings.warn(
                f"{self.client.url}: the scores do not look like probabilities (row sums {sums.min():.3g}..{sums.max():.3g}, "
                f"min {scores.min():.3g}); pass softmax=True (--softmax, --activation softmax) if the model returns logits, "
                "--activation sigmoid if it returns logits of independent labels",
                ScoresWarning,
                stacklevel=2,
            )

    def close(self) -> None:
        self._bar.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        self.client.close()
