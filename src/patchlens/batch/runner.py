"""``run_batch``: explain every image of a source into a resumable store, on the local or the Ray backend.

The local backend keeps the model busy: worker threads read, hash and decode
the next images while the model explains the current ones (one model, on one
device), and for score-only methods several images in flight share the model's
batches (:mod:`patchlens.batch.shared`), so no image's last masks run as a short batch. Results go to the store in small atomic parts (see
:mod:`patchlens.batch.store`), at most ``chunk_size`` images or
``flush_seconds`` apart, so a killed run loses at most one part's worth of
work and ``resume=True`` carries on where it stopped. Memory stays flat: only
the look-ahead images and one part's maps are held at a time.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..api import scores_only
from ..errors import ModelError, ServerUnavailableError, TargetError
from ..extras import require
from ..methods import get_method, recorded_params
from ..models import Classifier, load_model
from ..models.runtime import scoring_threads
from ..objectives import TrueLabel, parse_targets
from ..request import RunRequest, check_seed
from ..validation import check_target, validate_run
from .shared import can_share, shared_results
from .sources import Item, read_source, region_columns, resolved, same_file, true_labels
from .store import Store, StoreError, file_paths, lost_maps
from .work import Loaded, Plan, RowAndMap, check_metrics, explain_loaded, prepare

BACKENDS = ("local", "ray")


@dataclass
class Summary:
    """What a run did: images explained, failed, with nothing to explain and skipped, and its cost."""

    done: int = 0
    failed: int = 0
    skipped: int = 0
    #: images on which the target named nothing (``present``, no label present): a row says so, no map
    empty: int = 0
    seconds: float = 0.0
    forward_passes: int = 0
    #: why the run ended early (a remote server that stopped answering), and how many images it left for --resume
    stopped: str | None = None
    left: int = 0

    def count(self, rows: list[RowAndMap]) -> None:
        """Count one image's rows: done (any map made), empty (nothing to explain) or failed."""
        ok = [r for r, _ in rows if r["status"] == "ok"]
        empty = not ok and any(r["status"] == "empty" for r, _ in rows)
        self.done += bool(ok)
        self.empty += empty
        self.failed += not ok and not empty
        self.forward_passes += int(ok[0]["forward_passes"]) if ok else 0

    @property
    def images_per_second(self) -> float:
        return (self.done + self.failed + self.empty) / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        nothing = f"{self.empty} with nothing to explain (no label present), " if self.empty else ""
        stopped = f"; stopped with {self.left} image(s) left (--resume continues): {self.stopped}" if self.stopped else ""
        return (f"{self.done} done, {self.failed} failed, {nothing}{self.skipped} skipped (already in the store); "
                f"{self.images_per_second:.2f} images/s, {self.forward_passes:,} forward passes in {self.seconds:.1f}s{stopped}")


class _Writer:
    """Buffers finished images and writes them as parts; checks that a store holds one configuration per method."""

    def __init__(self, store: Store, existing: Any, chunk_size: int, flush_seconds: float) -> None:
        self.store, self.chunk_size, self.flush_seconds = store, max(1, chunk_size), flush_seconds
        self.pending: list[RowAndMap] = []
        self.images = 0
        self.last = time.monotonic()
        self.config: dict[str, tuple[Any, ...]] = {}
        for _, r in existing.drop_duplicates("method").iterrows():
            self.config[r["method"]] = (stored_params(r["method"], r["params"]), None if _missing(r["seed"]) else int(r["seed"]), r["model"])

    def check(self, row: dict[str, Any]) -> None:
        config = (row["params"], row["seed"], row["model"])
        known = self.config.setdefault(row["method"], config)
        if known != config:
            names = ("parameters", "seed", "model")
            diff = "; ".join(f"{n}: store has {a}, this run {b}" for n, a, b in zip(names, known, config) if a != b)
            raise StoreError(f"{self.store.root}: already holds {row['method']} results made differently ({diff}); use another --out")

    def add(self, results: list[RowAndMap]) -> None:
        now = _now()
        for row, _ in results:
            self.check(row)
            row["finished_at"] = now
        self.pending.extend(results)  # one step, so an image's rows are never split between parts
        self.images += 1
        if self.images >= self.chunk_size or time.monotonic() - self.last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        pending, self.pending, self.images, self.last = self.pending, [], 0, time.monotonic()
        if pending:  # taken off first: a failed write (full disk) is reported once, not again on the way out
            self.store.write_part([r for r, _ in pending], [m for _, m in pending])


def warn(message: str) -> None:
    import sys

    print(f"patchlens: warning: {message}", file=sys.stderr)


def _now() -> Any:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc)


def stored_params(method: str, params: str) -> str:
    """A store's params JSON as this version writes it: parameters added since are filled in with the
    values the stored results were made with (``Method.added_params``), so old stores still resume.
    """
    return json.dumps(recorded_params(method, json.loads(params)), sort_keys=True)


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


# -- the run's request, kept from its start so that a resume repeats it ---------------------------
#
# The manifest records each image's parameters, but only once a part is written: a run killed
# before its first part left nothing, and --resume silently took today's defaults (1,000 masks
# instead of the 2,000 the run started with). The request is written when the run starts.


def request_file(out: str | Path, method: str) -> Path:
    return Path(out) / "requests" / f"{method}.json"


def stored_request(out: str | Path, method: str) -> dict[str, Any] | None:
    """The parameters and seed a run of ``method`` into the store ``out`` started with; None when none is recorded."""
    try:
        saved = json.loads(request_file(out, method).read_text(encoding="utf-8"))
        return {"params": recorded_params(method, dict(saved["params"])), "seed": saved["seed"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stored_methods(out: str | Path) -> list[str]:
    """The methods whose runs the store ``out`` has requests for."""
    try:
        return sorted(f.stem for f in (Path(out) / "requests").glob("*.json"))
    except OSError:
        return []


def resumed_request(out: str | Path, method: str, given: dict[str, Any], seed: int | None) -> tuple[dict[str, Any], int | None]:
    """The parameters and seed to continue ``method``'s run in ``out``: the stored ones, with ``given`` on top.

    Refuses only a real conflict: a parameter or seed given that differs from the stored value.
    """
    stored = stored_request(out, method)
    if stored is None:
        return given, seed
    clash = {k: v for k, v in given.items() if k in stored["params"] and stored["params"][k] != v}
    if seed is not None and stored["seed"] is not None and seed != stored["seed"]:
        clash["seed"] = seed
    if clash:
        was = ", ".join(f"{k}={stored['seed'] if k == 'seed' else stored['params'][k]!r}" for k in clash)
        now = ", ".join(f"{k}={v!r}" for k, v in clash.items())
        raise StoreError(f"{out}: the {method} run in it started with {was}; other parameters ({now}) would mix "
                         "two runs: leave them out to continue it, or use another --out")
    return {**stored["params"], **given}, stored["seed"] if seed is None else seed


def _write_request(out: str | Path, method: str, params: dict[str, Any], seed: int | None) -> None:
    path = request_file(out, method)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"params": params, "seed": seed}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def warn_unknown_labels(source: Any, items: Sequence[Item], classifier: Classifier) -> None:
    """One line before the run naming the labels (ImageFolder folders) that are no class of the model.

    Their images still fail one by one, each with its reason in the store; without
    this line a misnamed folder was found only by reading the manifest afterwards.
    """
    counts: dict[str, int] = {}
    for item in items:
        for label in true_labels(item.label):  # "cat;dog": each label of a multi-label row
            counts[label] = counts.get(label, 0) + 1
    bad = {}
    for label, n in counts.items():
        try:
            check_target(classifier, label)
        except TargetError:
            bad[label] = n
    if bad:
        named = ", ".join(f"{label!r} ({n} image{'s' if n != 1 else ''})" for label, n in sorted(bad.items(), key=lambda kv: -kv[1])[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        warn(f"{source}: {len(bad)} of {len(counts)} labels (ImageFolder folders) are not classes of {classifier.model_id}, "
             f"so their images will fail: {named}{more}; name them after the model's classes (or class indices)")


def local_results(classifier: Classifier, plan: Plan, items: Sequence[Item], workers: int,
                  images_in_flight: int = 1) -> Iterator[list[RowAndMap]]:
    """Explain ``items`` in order on one model, decoding up to ``2 * workers`` images ahead in threads;
    with ``images_in_flight`` > 1 and a score-only method, that many images share the model's batches.

    Torch's thread count is a setting of the whole process: set once here for the run (see
    :func:`~patchlens.models.runtime.scoring_threads`), never by each image's explanation in turn.
    """
    check_metrics(plan.metrics, classifier)
    with scoring_threads(classifier, scores_only(plan.request.method)):
        if images_in_flight > 1 and len(items) > 1 and can_share(plan):
            yield from shared_results(classifier, plan, items, workers, images_in_flight)
        else:
            yield from _one_at_a_time(classifier, plan, items, workers)


def _one_at_a_time(classifier: Classifier, plan: Plan, items: Sequence[Item], workers: int) -> Iterator[list[RowAndMap]]:
    ahead = max(1, 2 * workers)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="patchlens-decode") as pool:
        queue: deque[Future[Loaded]] = deque()
        todo = iter(items)
        for item in todo:
            queue.append(pool.submit(prepare, item))
            if len(queue) >= ahead:
                break
        while queue:
            loaded = queue.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                queue.append(pool.submit(prepare, nxt))
            yield explain_loaded(classifier, plan, loaded)
            del loaded  # the photo goes as soon as it is explained


def _check_options(backend: str, images_in_flight: int, batch_size: int | None) -> None:
    """The run's own options, and the extra its backend needs, checked before anything is written."""
    if backend not in BACKENDS:
        raise StoreError(f"backend={backend!r}: use one of {', '.join(BACKENDS)}")
    require("ray" if backend == "ray" else "batch", "patchlens batch")  # before anything is written
    if images_in_flight < 1:
        raise StoreError(f"images_in_flight={images_in_flight}: must be at least 1")
    if batch_size is not None and batch_size < 1:
        raise StoreError(f"batch_size={batch_size}: must be at least 1 (or None to choose one for the device)")


def _continuable(store: Store, existing: Any, out: str, plan: Plan, *, continuing: bool) -> Any:
    """The rows of ``existing`` this run continues (its method's), after refusing a store it must not add to:
    damaged or not empty without ``continuing``, or holding this method's results with other parameters or seed.
    """
    method_value, seed = plan.request.method, plan.request.generator_seed
    if store.damage:
        if not continuing:
            raise StoreError(f"{store.damage.line(store.root)}; pass --resume to explain the lost images again")
        warn(f"{store.damage.line(store.root)}; explaining those images again")
    if len(existing) and not continuing:
        raise StoreError(f"{out}: already holds {len(existing)} results; pass --resume to continue it, or choose another --out")
    same = existing[existing["method"] == method_value.name] if len(existing) else existing
    if len(same):  # fail fast; the writer also checks the model id of every row
        wanted, recorded_seed = json.dumps(method_value.param_values(), sort_keys=True), seed if method_value.stochastic else None
        first = same.iloc[0]
        if stored_params(method_value.name, first["params"]) != wanted or (None if _missing(first["seed"]) else int(first["seed"])) != recorded_seed:
            raise StoreError(f"{out}: already holds {method_value.name} results made with other parameters or seed "
                             f"({stored_params(method_value.name, first['params'])}, seed {first['seed']}); "
                             "pass those to continue it, or use another --out")
    return same


def run_batch(
    source: str | Iterable[str | Item],
    out: str,
    *,
    model: Any = "default",
    method: str = "rise",
    target: str | int = "top1",
    seed: int | None = None,
    device: str = "auto",
    runtime: str = "auto",
    batch_size: int | None = None,
    metrics: Sequence[str] = (),
    backend: str = "local",
    workers: int = 2,
    images_in_flight: int = 4,
    resume: bool = False,
    retry_failed: bool = False,
    chunk_size: int = 32,
    flush_seconds: float = 60.0,
    ray_address: str | None = None,
    progress: bool = True,
    on_image: Callable[[Summary], None] | None = None,
    front_end: str = "python",
    **method_params: Any,
) -> Summary:
    """Explain every image of ``source`` and store maps and a manifest in the folder ``out``.

    Args:
        source: a folder, an ImageFolder tree, a CSV/Parquet/text list (see
            :mod:`patchlens.batch.sources`), or a list of paths.
        out: the store folder (created if needed).
        model: a model spec (``"default"``, ``"timm:NAME"``, ``"torchscript:PATH"``...).
            The local backend also takes a Classifier or module; the Ray backend
            rebuilds the model in each worker, so it needs a spec string.
        method: the method, as for ``explain``.
        target: ``"top1"``, ``"topk:K"``, ``"present"``, a class index or name, or
            ``"label"`` for each image's true label(s) from the source (``cat;dog``: both).
        seed: the same seed gives the same maps on every backend and worker count
            (and number of images in flight, up to float rounding: see ``images_in_flight``);
            None: 0, or on resume the seed the run started with.
        device: for model specs: ``"auto"``, ``"cpu"``, ``"cuda"``.
        runtime: what runs the forward passes: ``"auto"``, ``"torch"`` or ``"onnx"`` (see ``load_model``).
        batch_size: images per forward pass (None: chosen for the device).
        metrics: registered metric names to compute for each map (``metric_*`` columns).
        backend: ``"local"`` or ``"ray"``.
        workers: local: image-decoding threads; ray: model workers (actors).
        images_in_flight: local, score-only methods (RISE, LIME, KernelSHAP, Sobol,
            occlusion...): images explained at once, their masks sharing one
            stream of full batches on the model (one model thread fills each
            forward pass from every image's waiting masks; each image composes
            its own masked inputs on its own thread). Their maps equal those of
            one image at a time up to float rounding (see
            :mod:`patchlens.engine.shared_batches`); budgets, cancellation and
            forward-pass counts stay per image. 1 explains one image at a time,
            as do gradient methods and white-box metrics always.
        resume: continue a store; images already done (or failed) are skipped. The run's
            parameters and seed are those it started with (kept in ``STORE/requests/``);
            a parameter given that differs from them is refused.
        front_end: whose defaults fill parameters neither given nor stored (the
            ``batch`` command stops sampling methods once settled, Python keeps fixed counts).
        retry_failed: like ``resume``, but images that failed are tried again.
        chunk_size: a part of the store is written after this many images...
        flush_seconds: ...or after this many seconds, whichever comes first.
        ray_address: an existing Ray cluster (``"auto"`` or ``"ray://host:10001"``);
            None starts a local Ray.
        progress: show a progress bar.
        on_image: called with the running summary after each image.
        **method_params: the method's parameters, as for ``explain``.
    """
    _check_options(backend, images_in_flight, batch_size)
    items = read_source(source) if isinstance(source, str) else [same_file(i if isinstance(i, Item) else Item(str(i))) for i in source]
    params, chosen_seed = dict(method_params), seed
    if resume or retry_failed:
        params, chosen_seed = resumed_request(out, method, params, seed)
    params = get_method(method).with_defaults(params, front_end)
    # a bad method, parameter or seed fails before anything is written
    plan = Plan(RunRequest.of(method, params, target=str(target), seed=check_seed(chosen_seed) or 0, batch_size=batch_size),
                tuple(metrics))
    method_value, seed = plan.request.method, plan.request.generator_seed
    wants_labels = any(isinstance(r, TrueLabel) for r in parse_targets(plan.target, true_labels=True))
    if wants_labels and not any(i.label is not None for i in items):
        raise TargetError(f"{source}: --target label needs labels (a label column, or an ImageFolder tree of class folders)")
    classifier = None
    if backend == "ray" and not isinstance(model, str):
        raise ModelError(f"{type(model).__name__}: the ray backend rebuilds the model in every worker from a spec string "
                         "(default, timm:NAME, torchscript:PATH, onnx:PATH); save your model with torch.jit.save")
    if backend == "local":
        options: dict[str, Any] = {"device": device} if isinstance(model, str) else {}
        classifier = load_model(model, runtime=runtime, **options)
        validate_run(classifier, plan.request, true_labels=True)  # one error for the run, not one per image
        if wants_labels:
            warn_unknown_labels(source, items, classifier)
    check_metrics(plan.metrics, classifier)
    store = Store.create(out)
    with store.lock():
        existing = store.read(hash_maps=resume or retry_failed, finite_maps=resume or retry_failed)
        same = _continuable(store, existing, out, plan, continuing=resume or retry_failed)
        _write_request(out, method_value.name, method_value.param_values(), seed if method_value.stochastic else None)
        mine = same[same["request"] == plan.target] if len(same) else same
        settled = mine[mine["status"].isin(["ok", "empty"])] if retry_failed and len(mine) else mine
        if len(settled) and (store.damage.shards or store.damage.maps):  # rows whose maps are lost are not done
            settled = settled[~lost_maps(settled, store.damage)]
        # resolved, so that a store written with another spelling of the same paths is resumed, not duplicated
        done = {resolved(p) for p in file_paths(settled)} if len(settled) else set()
        todo = [i for i in items if i.path not in done]
        summary = Summary(skipped=len(items) - len(todo))
        writer = _Writer(store, existing, chunk_size, flush_seconds)
        if backend == "local":
            assert classifier is not None
            results = local_results(classifier, plan, todo, workers, images_in_flight)
        else:
            from .ray_backend import ray_results

            results = ray_results(model, device, plan, todo, workers, address=ray_address, runtime=runtime)
        bar = tqdm(total=len(todo), desc=f"{method_value.name}", unit="img", disable=not progress, dynamic_ncols=True)
        start = time.perf_counter()
        regions = {i.path: region_columns(i) for i in todo if i.box is not None or i.mask is not None}
        try:
            for rows in results:
                for row, _ in rows:  # here rather than in the workers, so every backend records them
                    row.update(regions.get(row["path"], {}))
                writer.add(rows)
                summary.count(rows)
                summary.seconds = time.perf_counter() - start
                bar.update(1)
                bar.set_postfix(failed=summary.failed, refresh=False)
                if on_image is not None:
                    on_image(summary)
        except ServerUnavailableError as exc:  # as a spent budget ends a run: what is finished is kept, the rest named
            summary.stopped = str(exc)
            summary.left = len(todo) - (summary.done + summary.failed + summary.empty)
        finally:
            # keep what is finished, also on Ctrl-C or an error (a kill -9 keeps the parts already written)
            getattr(results, "close", lambda: None)()
            writer.flush()
            bar.close()
            summary.seconds = time.perf_counter() - start
        store.compact()
    return summary
