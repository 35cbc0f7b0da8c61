"""What the web server keeps between requests: images by id, results by id, and the work on them.

Everything here is plain Python over the public API (``validate_run``,
``prepare_run``, ``Explanation``, the engine); ``app.py`` only turns it into
HTTP. Every forward pass runs in an engine behind the server's one model lock:
the upload's scoring pass, a what-if, a job's explanations and metrics.
"""

from __future__ import annotations

import collections
import io
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from PIL import Image

from .. import render, webp
from ..api import PreparedRun, prepare_run
from ..capabilities import Capability
from ..engine import BASELINES, Engine, FeatureMasks, Hooks, make_baseline, patch_grid
from ..errors import ImageError, MethodError, PatchlensError
from ..explanation import Explanation, record
from ..images import LoadedImage, check_size, resize, to_tensor
from ..methods import Method, get_method, make_method
from ..metrics import Case, Options
from ..metrics import registry as metric_registry
from ..models.classifier import Classifier
from ..objectives import Objective, TargetSpec, predictions
from ..request import RunRequest
from ..validation import validate_run
from .guard import LOOPBACK_HOSTS
from .jobs import WebJob, holding

T = TypeVar("T")


@dataclass(frozen=True)
class WebConfig:
    """Limits and defaults of one server.

    Attributes:
        max_upload_bytes: largest accepted upload.
        max_pixels: largest accepted image, in pixels (width x height).
        workers: threads that run explanations at the same time.
        max_queued: explanations that may wait; more are refused with 429.
        grid: the what-if patch grid is ``grid x grid``.
        max_passes: largest forward-pass budget one method may ask for.
        max_methods: methods per request (side-by-side comparison).
        max_targets: targets (classes, labels) explained per request (each is a map and an overlay).
        max_regions: regions (features) per image for LIME, KernelSHAP, Sobol, subset.
        allowed_hosts: Host names the server answers to ("*": any); loopback names by default.
        keep_images, keep_results: how many uploads and maps are remembered.
        keep_image_bytes, keep_result_bytes: and how many bytes of them, at most: the oldest are
            forgotten first (a 4096 x 2560 photo's maps are 42 MB each, five classes of eight methods 1.7 GB).
        max_body_bytes: largest JSON request body (uploads have max_upload_bytes).
        max_decoding: uploads decoded at the same time; more wait their turn.
    """

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    workers: int = 1
    max_queued: int = 8
    grid: int = 8
    max_passes: int = 20_000
    max_methods: int = 8
    max_targets: int = 5
    max_regions: int = 256
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    keep_images: int = 32
    keep_results: int = 128
    keep_image_bytes: int = 512 * 1024 * 1024
    keep_result_bytes: int = 1024 * 1024 * 1024
    max_body_bytes: int = 1024 * 1024
    max_decoding: int = 2


class Recent(Generic[T]):
    """A thread-safe dict of the most recently used entries, by a random key (uploads, results): it forgets its
    oldest entries beyond ``size`` entries or ``budget`` bytes.

    ``weigh`` gives an entry's bytes. The newest entry is always kept, so the result a job has just
    made can be fetched even when it alone is over the budget (submission refuses such jobs first).
    """

    def __init__(self, size: int, budget: int | None = None, weigh: Callable[[T], int] | None = None) -> None:
        self.size, self.budget, self.weigh = size, budget, weigh
        self._items: collections.OrderedDict[str, T] = collections.OrderedDict()
        self._bytes: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(self._bytes.values())

    def add(self, item: T) -> str:
        key = uuid.uuid4().hex[:16]
        with self._lock:
            self._items[key] = item
            self._bytes[key] = self.weigh(item) if self.weigh is not None else 0
            total = sum(self._bytes.values())
            while len(self._items) > 1 and (len(self._items) > self.size or (self.budget is not None and total > self.budget)):
                old, _ = self._items.popitem(last=False)
                total -= self._bytes.pop(old)
        return key

    def get(self, key: str) -> T | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item


@dataclass
class StoredImage:
    image: LoadedImage
    x: torch.Tensor  # (3, h, w) at the model's input size
    output: Any  # the model's answer on the unmasked image, a batch of one (class scores (1, C))
    forward_passes: int = 1  # what scoring it took


@dataclass
class StoredResult:
    explanation: Explanation
    image_id: str
    summary: dict[str, Any] = field(default_factory=dict)


def safe_name(name: str | None) -> str:
    """A display name from an uploaded file name: no folders, no odd characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    return re.sub(r"[^A-Za-z0-9_. -]+", "_", base)[:80] or "upload"


def check_pixels(data: bytes, name: str, max_pixels: int) -> None:
    """Refuse non-images and oversized images from the header alone, before decoding."""
    head = webp.features(data) if webp.is_webp(data[:12]) else None
    try:
        if head is not None:  # Pillow's WebP plugin allocates the whole canvas, twice, just to open the file
            w, h = head[0], head[1]
        else:
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
    except Image.DecompressionBombError:
        raise TooLarge(f"{name}: too many pixels, possible decompression bomb") from None
    except Exception:  # noqa: BLE001  Pillow's plugins raise many kinds for a file that is not an image
        raise NotAnImage(f"{name}: not an image file (or a format Pillow cannot read)") from None
    if w * h > max_pixels:
        raise TooLarge(f"{name}: {w}x{h} pixels is over this server's limit of {max_pixels:,} pixels")
    check_size(w, h, name)  # the library's side and aspect limits, also from the header, before decoding


class TooLarge(ImageError):
    """The upload is bigger than the server accepts (HTTP 413)."""


class NotAnImage(ImageError):
    """The upload is not an image (HTTP 415)."""


def stored_image_bytes(stored: StoredImage) -> int:
    """What a stored upload holds: the photo and its tensor at the model's input size."""
    return int(stored.image.pixels.nbytes + stored.x.element_size() * stored.x.nelement())


def check_result_bytes(stored: StoredImage, maps: int, cfg: WebConfig) -> None:
    """Refuse a job whose maps alone (float32 at the photo's size) are more than the server keeps."""
    h, w = stored.image.pixels.shape[:2]
    need = maps * h * w * 4
    if need > cfg.keep_result_bytes:
        raise MethodError(
            f"{maps} maps of this {w}x{h} photo are {need / 2**20:,.0f} MB, more than this server keeps "
            f"({cfg.keep_result_bytes / 2**20:,.0f} MB); choose fewer methods or classes"
        )


def validation_errors(errors: Any, limit: int = 10) -> list[dict[str, Any]]:
    """FastAPI's validation errors without the values that were wrong (which can be megabytes), at most ``limit``."""
    out = []
    for e in list(errors)[:limit]:
        loc = [str(p)[:40] for p in e.get("loc", ())][:8]
        out.append({"loc": loc, "msg": str(e.get("msg", ""))[:200], "type": str(e.get("type", ""))[:60]})
    return out


def top_predictions(output: Any, classifier: Classifier, k: int = 5, image_size: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """What the model says about the image: its top ``k`` (and, for a multi-label model, every present label);
    a detector's detections with their boxes in the photo's pixels (``image_size``).
    """
    return predictions(output, classifier, k, image_size=image_size)


def predict_hidden(
    classifier: Classifier, lock: threading.RLock, stored: StoredImage, hidden: list[int], grid: int, baseline: str
) -> Any:
    """The model's answer (a batch of one) with the patches ``hidden`` of a ``grid x grid`` grid replaced by ``baseline``.

    The mask is a :class:`FeatureMasks` over the patch grid, composed with the
    baseline as any method's masks are, and run through the engine once.
    """
    if baseline not in BASELINES or baseline == "noise":
        raise MethodError(f"baseline={baseline!r}: choose one of {', '.join(b for b in BASELINES if b != 'noise')}")
    bad = [i for i in hidden if not 0 <= i < grid * grid]
    if bad:
        raise MethodError(f"hidden patches {bad}: a {grid}x{grid} grid has patches 0..{grid * grid - 1}")
    x = stored.x
    if not hidden:
        return stored.output
    labels = patch_grid(x.shape[-2], x.shape[-1], grid, grid, device=x.device)
    keep = torch.ones(1, grid * grid, device=x.device)
    keep[0, torch.tensor(sorted(set(hidden)), device=x.device)] = 0
    engine = Engine(classifier, batch_size=1, hooks=Hooks(lock=lock))
    fill = make_baseline(x, baseline)
    mask = FeatureMasks(labels, keep).masks(0, 1)[0]
    return engine.output_of(torch.addcmul(fill, mask, x - fill))  # fill + mask * (x - fill), as the engine composes


def load_stored(classifier: Classifier, lock: threading.RLock, image: LoadedImage) -> StoredImage:
    """``image`` at the model's input size, scored once (through the engine, behind the lock)."""
    x = resize(to_tensor(image.pixels).to(classifier.device), classifier.input_size)
    engine = Engine(classifier, batch_size=1, hooks=Hooks(lock=lock))
    output = engine.output_of(x)
    return StoredImage(image=image, x=x, output=output, forward_passes=engine.forward_passes)


def build_requests(
    choices: list[tuple[str, dict[str, Any]]], classifier: Classifier, config: WebConfig, target: TargetSpec, seed: int,
    lock: threading.RLock,
) -> list[RunRequest]:
    """One run request per chosen method, each checked as every front-end checks a run (MethodError: a 422).

    The web page's own defaults apply (sampling methods stop once the map
    settles); each run's budget is the server's limit.
    """
    if not choices:
        raise MethodError("no method chosen")
    if len(choices) > config.max_methods:
        raise MethodError(f"{len(choices)} methods at once: this server runs at most {config.max_methods}")
    out = []
    for name, params in choices:
        method = make_method(name, **get_method(name).with_defaults(params, "web"))
        request = RunRequest(method, target=target, seed=seed, max_passes=config.max_passes)
        validate_run(classifier, request, hooks=Hooks(lock=lock))  # attention_rollout on a CNN: a 422 now
        out.append(request)
    return out


def check_counts(method: Method, max_passes: int) -> None:
    """Sample and step counts (parameters declared ``cost=True``) over the server's limit are refused before
    the method draws what they count: each costs a forward pass.
    """
    for info in method.parameters():
        value = getattr(method, info.name)
        if info.cost and value > max_passes:
            raise MethodError(
                f"{method.name}: {info.name}={value:,} asks for more forward passes than this server's limit of "
                f"{max_passes:,}; lower it"
            )


def prepare_runs(
    classifier: Classifier, stored: StoredImage, requests: list[RunRequest], hooks: Callable[[RunRequest], Hooks],
    config: WebConfig,
) -> list[PreparedRun]:
    """Each request prepared on the stored image, within this server's limits on passes and regions.

    ``hooks(request)`` gives each run's engine hooks (the job's counter, cancel
    flag and lock). A method's exact cost (all targets, the image's own
    superpixels) is known once it is prepared, so a run over the limit is
    refused (MethodError) before any of its work is queued.
    """
    runs: list[PreparedRun] = []
    try:
        for request in requests:
            check_counts(request.method, config.max_passes)
            run = prepare_run(classifier, stored.image, request, hooks(request))
            runs.append(run)
            name = request.method.name
            if run.regions is not None and run.regions > config.max_regions:
                raise MethodError(f"{name}: {run.regions:,} regions (features) per image is over this server's limit of "
                                  f"{config.max_regions:,}; lower grid")
            if run.passes is None:
                raise MethodError(f"{name}: an unstated number of forward passes is over this server's limit of "
                                  f"{config.max_passes:,}; it cannot run here")
    except BaseException:
        for run in runs:
            run.close()
        raise
    return runs


def check_targets(objective: Objective, config: WebConfig) -> None:
    """At most ``config.max_targets`` targets per request (each is a map and an overlay)."""
    if len(objective) > config.max_targets:
        raise MethodError(f"{len(objective)} targets at once: this server explains at most {config.max_targets} per request")


def heatmap_png(saliency: np.ndarray) -> bytes:
    """The map alone, coloured as in the overlays (for blending over the photo in the page)."""
    scaled, signed, _, _ = render.normalise(saliency)
    rgb = render.colormap(scaled, diverging=signed)
    if signed:  # as in the overlays: strength is opacity, so near-zero evidence does not veil the photo in white
        alpha = (np.clip(np.abs(scaled - 0.5) * 2, 0, 1) ** 0.5 * 255).round().astype(np.uint8)
        rgb = np.dstack([rgb, alpha])
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def patch_scores(saliency: np.ndarray, grid: int) -> list[float]:
    """Mean of the map over each patch of the what-if grid (row-major), for "hide the top k"."""
    h, w = saliency.shape
    labels = patch_grid(h, w, grid, grid).numpy().ravel()
    sums = np.bincount(labels, weights=saliency.astype(np.float64).ravel(), minlength=grid * grid)
    counts = np.bincount(labels, minlength=grid * grid)
    return [float(v) for v in sums / np.maximum(counts, 1)]


def describe(exp: Explanation) -> str | None:
    """The map in words, when ``patchlens.metrics.describe`` is available."""
    try:
        return exp.describe()
    except Exception:  # noqa: BLE001  the description is optional; never lose a result over it
        return None


def available_metrics() -> dict[str, dict[str, str]]:
    """Registered metrics that need nothing but the model and the map: ``{name: {column: "higher"|"lower"|""}}``."""
    return {
        name: dict(m.columns)
        for name, m in metric_registry().items()
        if not m.needs_region and (m.requires is None or m.requires == Capability.SCORES)
    }


def faithfulness(classifier: Classifier, stored: StoredImage, exp: Explanation, engine: Engine) -> dict[str, Any] | None:
    """Scores of every metric that needs only the model (deletion, insertion, ...), with their curves.

    Their forward passes run in ``engine`` (the job's hooks: counted, cancellable, behind the lock).
    """
    wanted = available_metrics()
    if not wanted:
        return None
    found = metric_registry()
    out: dict[str, Any] = {}
    for name, columns in wanted.items():
        case = Case(explanation=exp, options=Options(), classifier=classifier, engine=engine, image=stored.x)
        try:
            values = found[name].compute(case)
        except PatchlensError:
            continue
        for column, value in values.items():
            entry: dict[str, Any] = {"score": float(value), "better": columns.get(column, "")}
            if column in case.curves:
                x, y = case.curves[column]
                entry["x"] = np.round(np.asarray(x, float), 4).tolist()
                entry["y"] = np.round(np.asarray(y, float), 5).tolist()
            out[column] = entry
    return out or None


def run_explanations(
    job: WebJob, runs: list[PreparedRun], *, stored: StoredImage, image_id: str, results: Recent[StoredResult],
    grid: int, with_metrics: bool, lock: threading.RLock,
) -> list[dict[str, Any]]:
    """The body of an explanation job: each prepared run in turn, results stored, summaries returned.

    Each run's engine holds the job's hooks (its counter, cancel flag and the
    server's lock) and its budget, the server's pass limit. The metrics'
    passes are not in the job's stated total: counted apart, so progress never passes it.
    """
    summaries = []
    for run in runs:
        method = run.request.method
        try:
            # methods that hook into the module must not share it with what-if calls meanwhile
            with holding(lock, bool(method.requirements() & ~Capability.SCORES)):
                exps = run.explain()
        except PatchlensError as exc:  # one method failing keeps the others
            summaries.append({"method": method.name, "error": str(exc)})
            continue
        if not exps:  # present, and no label present: said so, not an error
            summaries.append({"method": method.name, "note": exps.note or "nothing to explain"})
            continue
        for exp in exps:
            summary = summarize(exp, grid)
            if with_metrics:
                engine = Engine(run.classifier, description="metrics", hooks=job.hooks(lock, count=job.count_scoring))
                summary["metrics"] = faithfulness(run.classifier, stored, exp, engine)
            rid = results.add(StoredResult(exp, image_id, summary))
            summary["id"] = rid
            summaries.append(summary)
    return summaries


def summarize(exp: Explanation, grid: int) -> dict[str, Any]:
    scale = render.scale_for(exp.saliency)
    signed, lo, hi = scale.signed, scale.lo, scale.hi
    rec = record(exp)  # the one record of an explanation; the page shows these fields of it
    return {
        **{k: rec[k] for k in ("method", "target", "label", "score", "objective", "params", "seed", "forward_passes", "seconds")},
        "title": exp.title,
        "range": [lo, hi],  # the colour scale's ends (clipped at a percentile, as in the overlays)
        "clipped": scale.clipped,
        "extent": [float(exp.saliency.min()), float(exp.saliency.max())],
        "signed": signed,
        "description": describe(exp),
        "patch_scores": patch_scores(exp.saliency, grid),
        "grid": grid,
    }
