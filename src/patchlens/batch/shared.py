"""The local backend with several images in flight: their masks share one stream of full batches.

One image explained at a time sends a short batch whenever its masks run out
before the batch is full (every RISE round's end, every small job). Here
``images`` threads explain images at once, each through its own view of one
:class:`~patchlens.engine.shared_batches.SharedBatches` stream: a model thread
fills each forward pass with rows from any image, and the threads compose their
masked inputs meanwhile. Results still come out in the input order, so the
store, resume and the writer's checks see what the one-at-a-time path gives.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from ..api import scores_only
from ..capabilities import Capability
from ..engine import Hooks, measured_batch_size
from ..engine.shared_batches import SharedBatches
from ..models import Classifier
from .sources import Item
from .work import Loaded, Plan, RowAndMap, explain_loaded, prepare


def can_share(plan: Plan) -> bool:
    """Whether the method and metrics only score inputs: gradients, module hooks and
    token views must not run for several images at once on one model.
    """
    if not scores_only(plan.request.method):
        return False
    from ..metrics import get_metrics

    chosen = get_metrics(list(plan.metrics)) if plan.metrics else []  # checked against the model already (run_batch)
    return all(m.requires in (None, Capability.SCORES) for m in chosen)


def shared_results(classifier: Classifier, plan: Plan, items: Sequence[Item], workers: int, images: int) -> Iterator[list[RowAndMap]]:
    """Explain ``items`` with ``images`` of them in flight at once; their results in input order."""
    batch = plan.request.batch_size or measured_batch_size(classifier)  # measured once here, not by each image's engine
    ahead = images + 2 * max(1, workers)
    stream = SharedBatches(classifier, batch)

    def explain(loading: Future[Loaded]) -> list[RowAndMap]:
        loaded = loading.result()  # a caller joins the stream only once its image is decoded
        with stream.caller() as forward:
            return explain_loaded(classifier, plan, loaded, Hooks(forward=forward))

    decode = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="patchlens-decode")
    explainers = ThreadPoolExecutor(max_workers=images, thread_name_prefix="patchlens-image")
    try:
        queue: deque[Future[list[RowAndMap]]] = deque()
        for item in items:
            queue.append(explainers.submit(explain, decode.submit(prepare, item)))
            if len(queue) >= ahead:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()
    finally:
        # on Ctrl-C or an error: images still running stop at their next batch (Cancelled), the rest never start
        stream.close()
        decode.shutdown(wait=False, cancel_futures=True)
        explainers.shutdown(wait=True, cancel_futures=True)
        decode.shutdown(wait=True)
