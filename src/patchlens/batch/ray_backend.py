"""The Ray backend: Ray Data ``map_batches`` over an actor class that holds the model.

Each actor builds its own model from the *spec string* (``"default"``,
``"timm:NAME"``, ``"torchscript:PATH"``, ``"onnx:PATH"``): a Python model object
cannot be shipped by the CLI, so save a custom model with ``torch.jit.save``
and pass ``torchscript:PATH``. With GPUs in the cluster there is one actor per
GPU (``num_gpus=1``); otherwise ``workers`` CPU actors, each with
``cpus_per_worker`` torch threads. Image paths must be readable by every node
(a shared filesystem). Only the driver writes the store, so the store's
atomic-part guarantees hold unchanged; the driver receives each finished
image's rows and map and writes them as the local backend does.

The work itself is :func:`patchlens.batch.work.explain_loaded`, the same
function the local backend runs, with the same per-image seed, so the same
seed gives the same maps on both backends. The plan travels as plain values;
each actor rebuilds its method from the registry, which loads installed
plug-ins (entry points of ``patchlens.methods``) in the worker too.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import ModelError, PatchlensError
from .sources import Item
from .work import Plan, RowAndMap, check_metrics, explain_loaded, prepare

#: images an actor explains per call; small, since each image is already many forward passes
IMAGES_PER_CALL = 4


class Explainer:
    """A Ray actor: one model, explaining batches of ``{"path", "label"}`` rows."""

    def __init__(
        self, model: str, device: str, plan: dict[str, Any], threads: int | None = None, runtime: str = "auto"
    ) -> None:
        import torch

        from ..api import scores_only
        from ..models import load_model

        if threads:
            torch.set_num_threads(threads)
        self.classifier = load_model(model, device=device, runtime=runtime, threads=threads)
        self.plan = Plan.from_dict(plan)
        check_metrics(self.plan.metrics, self.classifier)
        # the actor's process is its own: torch's threads are set once, for its life
        wanted = self.classifier.torch_threads
        if wanted is not None and not threads and scores_only(self.plan.request.method):
            torch.set_num_threads(wanted)
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="patchlens-decode")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        # names travel as the file system's bytes: one that is not UTF-8 cannot be an Arrow string
        items = [Item(os.fsdecode(bytes(p)), os.fsdecode(bytes(lab)) or None) for p, lab in zip(batch["path"], batch["label"])]
        rows: list[str] = []
        maps: list[bytes] = []
        dtypes: list[str] = []
        # decoding the next image overlaps with explaining this one
        for loaded in self.pool.map(prepare, items):
            for row, m in explain_loaded(self.classifier, self.plan, loaded):
                rows.append(json.dumps(row))  # one JSON column: no schema to unify across ok/failed rows
                maps.append(b"" if m is None else m.tobytes())
                dtypes.append("" if m is None else m.dtype.str)  # float16, or float32 where that cannot hold it
        return {"row": rows, "map": maps, "dtype": dtypes}


def _decode(row_json: str, data: bytes, dtype: str) -> RowAndMap:
    row = json.loads(row_json)
    if row.get("status") != "ok" or not data:
        return row, None
    return row, np.frombuffer(data, dtype=np.dtype(dtype)).reshape(int(row["height"]), int(row["width"]))


def _unwrap(exc: BaseException) -> BaseException:
    """The PatchlensError behind a Ray task error, so the CLI prints one line."""
    seen = exc
    for _ in range(5):
        cause = getattr(seen, "cause", None) or seen.__cause__
        if cause is None:
            break
        if isinstance(cause, PatchlensError):
            return cause
        seen = cause
    return exc


def _per_image(ds: Any) -> Iterator[list[RowAndMap]]:
    """The dataset's rows, decoded and grouped by image (an image's rows, one per class, arrive together),
    with a task's error raised as the PatchlensError behind it.
    """
    current: list[RowAndMap] = []
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for row_json, data, dtype in zip(batch["row"], batch["map"], batch["dtype"]):
                result = _decode(str(row_json), bytes(data), str(dtype))
                if current and current[0][0]["path"] != result[0]["path"]:
                    yield current
                    current = []
                current.append(result)
    except PatchlensError:
        raise
    except Exception as exc:
        cause = _unwrap(exc)
        if cause is not exc:
            raise cause from None
        raise
    if current:
        yield current


def ray_results(
    model: str, device: str, plan: Plan, items: Sequence[Item], workers: int, *, address: str | None = None,
    cpus_per_worker: int = 1, runtime: str = "auto",
) -> Iterator[list[RowAndMap]]:
    """Explain ``items`` on Ray; yields each image's results as it arrives (in no fixed order)."""
    if not items:
        return
    try:
        import ray
    except ImportError:
        raise ModelError("the ray backend needs Ray: pip install 'patchlens[ray]'") from None
    started = not ray.is_initialized()
    if started:
        # A local Ray (address None) or a running cluster ("auto", "ray://head:10001").
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # the run prints its own progress and summary
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the run has its own bar
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if device.startswith("cuda") and not gpus:
            raise ModelError(f"{device}: the Ray cluster has no GPUs (use --device cpu)")
        use_gpu = gpus > 0 and device != "cpu"
        actors = min(workers, gpus) if use_gpu and workers else (gpus if use_gpu else max(1, workers))
        # "" for none: a column of one type
        rows = [{"path": os.fsencode(i.path), "label": os.fsencode(i.label or "")} for i in items]
        ds: Any = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), len(rows) // IMAGES_PER_CALL)))
        ds = ds.map_batches(
            Explainer,
            fn_constructor_kwargs={"model": model, "device": "cuda" if use_gpu else "cpu", "plan": plan.to_dict(),
                                   "threads": None if use_gpu else cpus_per_worker, "runtime": runtime},
            batch_size=IMAGES_PER_CALL,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=1 if use_gpu else 0,
            num_cpus=1 if use_gpu else cpus_per_worker,
        )
        yield from _per_image(ds)
    finally:
        if started:
            ray.shutdown()

