"""The web explorer's FastAPI app: a JSON API under ``/api`` and the page that uses it.

``create_app(classifier=...)`` builds the app around one model, fixed at
startup: visitors upload images, never models. Long explanations go through a
bounded :class:`~patchlens.web.jobs.JobQueue` (poll ``/api/jobs/{id}``, DELETE
to cancel, 429 when full); what-if predictions run at once on their own path.
OpenAPI docs are at ``/docs`` (Swagger UI served from this machine, see
:mod:`patchlens.web.docs`) and the schema at ``/openapi.json``.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from .. import render
from .._version import __version__
from ..api import check_seed, list_methods
from ..capabilities import ModelKind
from ..engine import BASELINES, Hooks
from ..errors import ImageError, PatchlensError
from ..examples import EXAMPLES, example_path
from ..images import load_image
from ..models import Classifier, load_model
from ..objectives import predictions, resolve_objective
from ..request import RunRequest
from .availability import token_masking, with_availability
from .docs import add_docs
from .guard import refusal
from .jobs import JobQueue, QueueFull, WebJob
from .state import (
    NotAnImage,
    Recent,
    StoredImage,
    StoredResult,
    TooLarge,
    WebConfig,
    available_metrics,
    build_requests,
    check_pixels,
    check_result_bytes,
    check_targets,
    heatmap_png,
    load_stored,
    predict_hidden,
    prepare_runs,
    run_explanations,
    safe_name,
    stored_image_bytes,
    top_predictions,
    validation_errors,
)


class MethodChoice(BaseModel):
    name: str = Field(description="a registered method name (see /api/info)")
    params: dict[str, Any] = Field(default_factory=dict, description="the method's parameters; defaults for the rest")


class JobRequest(BaseModel):
    image_id: str
    methods: list[MethodChoice] = Field(min_length=1)
    target: int | str = Field(
        "top1", description="top1, topk:K, present (a multi-label model's labels with p >= 0.5; present:T), "
        "a class index or a label name, or a comma list of those; for an object detector: top1, topk:K, all (all:S), "
        "label:NAME, a detection's number (0 the strongest) or box:x0,y0,x1,y1[:LABEL] in the photo's pixels")
    seed: int = 0
    metrics: bool = Field(False, description="also compute deletion/insertion, when patchlens.metrics provides them")


class PredictRequest(BaseModel):
    hidden: list[int] = Field(default_factory=list, description="patches to hide, row-major indices in the grid")
    grid: int | None = Field(None, ge=2, le=32, description="the grid is grid x grid patches (default: the server's)")
    baseline: str = Field("gray", description="what hidden patches are replaced with")


def _static_dir() -> str:
    return str(resources.files("patchlens").joinpath("web/static"))


@dataclass
class Server:
    """What the routes share: the model, its lock, the job queue and the bounded stores of images and results."""

    clf: Classifier
    cfg: WebConfig
    lock: threading.RLock
    queue: JobQueue
    images: Recent[StoredImage]
    results: Recent[StoredResult]
    decoding: threading.BoundedSemaphore

    def image(self, image_id: str) -> StoredImage:
        """A stored image, or a 404 that says to upload it again."""
        stored = self.images.get(image_id)
        if stored is None:
            raise HTTPException(404, f"image {image_id}: unknown or expired; upload it again")
        return stored

    def result(self, result_id: str) -> StoredResult:
        """A stored result, or a 404 that says to run the method again."""
        found = self.results.get(result_id)
        if found is None:
            raise HTTPException(404, f"result {result_id}: unknown or expired; run the method again")
        return found

    def image_info(self, image_id: str, stored: StoredImage) -> dict[str, Any]:
        """What the page shows of a stored image: its size, colour and the model's predictions."""
        h, w = stored.image.pixels.shape[:2]
        return {
            "id": image_id,
            "name": stored.image.name,
            "width": w,
            "height": h,
            "url": f"/api/images/{image_id}.png",
            "mean_color": [round(float(v) * 255) for v in stored.x.mean(dim=(-2, -1))],
            "predictions": top_predictions(stored.output, self.clf, image_size=(h, w)),
            "forward_passes": stored.forward_passes,
        }


def create_app(
    classifier: Classifier | None = None,
    *,
    model: Any = "default",
    device: str | None = None,
    config: WebConfig | None = None,
) -> FastAPI:
    """The web app around ``classifier`` (or the model ``model`` loaded once now)."""
    cfg = config or WebConfig()
    # Fill the method and metric registries now, in one thread: their first use
    # imports modules, and concurrent first requests could see them half-filled.
    list_methods(front_end="web")
    available_metrics()
    clf = classifier if classifier is not None else load_model(model, device=device or "auto")
    clf.settle_kind()  # a module that answers with boxes is a detector: the page and its methods follow from that
    server = Server(
        clf, cfg,
        lock=threading.RLock(),  # every model call, from jobs and what-if alike
        queue=JobQueue(workers=cfg.workers, max_queued=cfg.max_queued),
        # bounded by bytes as well as by count: 128 results of a large photo's 8 methods were gigabytes
        images=Recent(cfg.keep_images, cfg.keep_image_bytes, stored_image_bytes),
        results=Recent(cfg.keep_results, cfg.keep_result_bytes, lambda r: r.explanation.saliency.nbytes),
        decoding=threading.BoundedSemaphore(cfg.max_decoding),  # a decoded upload is tens of MB; at most this many at once
    )
    app = FastAPI(
        title="patchlens",
        version=__version__,
        description="Explore which parts of an image drive the model's decision.",
        on_shutdown=[server.queue.shutdown],
        docs_url=None,  # FastAPI's page loads Swagger UI from a CDN: blank offline; ours is local (add_docs)
        redoc_url=None,
    )
    add_docs(app)
    app.state.classifier, app.state.config, app.state.queue = clf, cfg, server.queue
    _add_guards(app, cfg)
    _add_page_routes(app, server)
    _add_image_routes(app, server)
    _add_job_routes(app, server)
    _add_result_routes(app, server)
    app.mount("/static", StaticFiles(directory=_static_dir()), name="static")
    return app


def _add_guards(app: FastAPI, cfg: WebConfig) -> None:
    """Errors as one-line JSON answers; bodies and hosts checked before anything reads the request."""

    @app.exception_handler(PatchlensError)
    async def user_error(_request: Request, exc: PatchlensError) -> JSONResponse:
        status = 413 if isinstance(exc, TooLarge) else 415 if isinstance(exc, NotAnImage) else 422
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer repeats each bad value ("input"): a 30 MB body came back as a 35 MB answer
        return JSONResponse({"detail": validation_errors(exc.errors())}, status_code=422)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Response:
        refused = _body_refusal(request, cfg)
        return refused if refused is not None else await call_next(request)

    @app.middleware("http")
    async def same_site_only(request: Request, call_next: Any) -> Response:
        # outermost: checked before anything else reads the request (DNS rebinding, cross-origin posts)
        refused = refusal(request.method, request.headers.get("host"), request.headers.get("origin"), cfg.allowed_hosts)
        if refused is not None:
            return JSONResponse({"detail": refused[1]}, status_code=refused[0])
        return await call_next(request)


def _body_refusal(request: Request, cfg: WebConfig) -> JSONResponse | None:
    """Refuse big bodies from the header, before they are read and parsed: an upload by the upload
    limit, anything else (JSON) by max_body_bytes.
    """
    if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return None
    upload = request.method == "POST" and request.url.path == "/api/images"
    limit = cfg.max_upload_bytes + 64 * 1024 if upload else cfg.max_body_bytes
    length = request.headers.get("content-length")
    if length is None:
        if upload or request.headers.get("transfer-encoding"):
            return JSONResponse({"detail": "requests with a body must give its Content-Length"}, status_code=411)
        return None
    if not length.isdigit() or int(length) > limit:
        size = int(length) if length.isdigit() else -1
        detail = _too_big(size, cfg) if upload else f"the request body{_mb(size)} is larger than this server's limit of {limit:,} bytes"
        return JSONResponse({"detail": detail}, status_code=413)
    return None


def _add_page_routes(app: FastAPI, server: Server) -> None:
    """The page, what it needs to know about the model and the server, and the bundled examples."""
    clf, cfg = server.clf, server.cfg

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(f"{_static_dir()}/index.html")

    @app.get("/api/info", summary="The model, the methods with their parameters, examples and limits")
    def info() -> dict[str, Any]:
        return {
            "version": __version__,
            "model": {"id": clf.model_id, "input_size": list(clf.input_size), "classes": clf.num_classes,
                      "white_box": clf.module is not None, "activation": clf.activation,
                      "multi_label": clf.model_kind == ModelKind.MULTI_LABEL,
                      "detector": clf.model_kind == ModelKind.DETECTOR, "min_score": clf.min_score},
            "methods": with_availability(list_methods(front_end="web"), clf),
            "token_masking": token_masking(clf),
            "examples": [{"name": n, "url": f"/api/examples/{n}"} for n in EXAMPLES],
            "grid": cfg.grid,
            "baselines": sorted((b for b in BASELINES if b != "noise"), key=lambda b: b != "gray"),
            "limits": {"max_upload_bytes": cfg.max_upload_bytes, "max_pixels": cfg.max_pixels,
                       "max_queued": cfg.max_queued, "max_passes": cfg.max_passes, "max_methods": cfg.max_methods,
                       "max_targets": cfg.max_targets, "max_regions": cfg.max_regions,
                       "max_body_bytes": cfg.max_body_bytes, "keep_result_bytes": cfg.keep_result_bytes},
            "metrics": available_metrics(),
        }

    @app.get("/api/classes", summary="The model's class names, by index (for the target picker)")
    def classes() -> dict[str, Any]:
        return {"classes": list(clf.labels) if clf.labels is not None else None, "count": clf.num_classes}

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(f"{_static_dir()}/favicon.svg", media_type="image/svg+xml")

    @app.get("/api/examples/{name}", summary="A bundled example photo")
    def example_file(name: str) -> FileResponse:
        if name not in EXAMPLES:
            raise HTTPException(404, f"example {name}: no such example; bundled: {', '.join(EXAMPLES)}")
        return FileResponse(example_path(name))

    @app.get("/api/colorbar/{kind}.png", summary="The colour scale of the maps (sequential or diverging)")
    def colorbar(kind: str) -> Response:
        if kind not in ("sequential", "diverging"):
            raise HTTPException(404, f"colour bar {kind}: choose sequential or diverging")
        from PIL import Image

        ramp = render.colormap(np.linspace(0, 1, 256)[None].repeat(8, 0), diverging=kind == "diverging")
        buf = io.BytesIO()
        Image.fromarray(ramp).save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png")


def _add_image_routes(app: FastAPI, server: Server) -> None:
    """Uploads, examples as uploads, the stored image, and what-if predictions."""
    clf, cfg = server.clf, server.cfg

    @app.post("/api/images/example/{name}", summary="Start from a bundled example photo")
    def use_example(name: str) -> dict[str, Any]:
        if name not in EXAMPLES:
            raise HTTPException(404, f"example {name}: no such example; bundled: {', '.join(EXAMPLES)}")
        stored = load_stored(clf, server.lock, load_image(f"example:{name}"))
        return server.image_info(server.images.add(stored), stored)

    @app.post("/api/images", summary="Upload an image; answers its id and the top-5 predictions")
    async def upload(file: UploadFile = File(...)) -> dict[str, Any]:
        data = await file.read(cfg.max_upload_bytes + 1)
        name = safe_name(file.filename)
        if len(data) > cfg.max_upload_bytes:
            raise TooLarge(_too_big(len(data), cfg, name))
        if not data:
            raise ImageError(f"{name}: the file is empty")
        stored = await run_in_threadpool(_decode_and_score, data, name)
        return server.image_info(server.images.add(stored), stored)

    def _decode_and_score(data: bytes, name: str) -> StoredImage:
        check_pixels(data, name, cfg.max_pixels)
        with server.decoding:
            # load_image applies the package's own decompression-bomb limit and conversions too
            return load_stored(clf, server.lock, _load_bytes(data, name))

    @app.get("/api/images/{image_id}.png", summary="The stored image, as PNG")
    def image_png(image_id: str) -> Response:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(server.image(image_id).image.pixels).save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png")

    @app.post("/api/images/{image_id}/predict", summary="What-if: predictions with some grid patches hidden")
    def predict(image_id: str, body: PredictRequest) -> dict[str, Any]:
        stored = server.image(image_id)
        grid = body.grid or cfg.grid
        output = predict_hidden(clf, server.lock, stored, body.hidden, grid, body.baseline)
        h, w = stored.image.pixels.shape[:2]
        return {"hidden": sorted(set(body.hidden)), "grid": grid,
                "predictions": predictions(output, clf, original=stored.output, image_size=(h, w))}


def _add_job_routes(app: FastAPI, server: Server) -> None:
    """Jobs: submit one or more methods on a stored image, poll, preview, cancel."""
    queue = server.queue

    @app.post("/api/jobs", status_code=202, summary="Run one or more methods on a stored image (a job)")
    def submit(body: JobRequest) -> JSONResponse:
        return _submit(server, body)

    @app.get("/api/jobs/{job_id}", summary="A job's status, progress and (when done) results")
    def job_status(job_id: str) -> dict[str, Any]:
        job = queue.get(job_id)
        if job is None:
            raise HTTPException(404, f"job {job_id}: unknown or expired")
        return _job_json(job)

    @app.get("/api/jobs/{job_id}/preview.png", summary="The map a running sampling method has formed so far")
    def job_preview(job_id: str) -> Response:
        job = queue.get(job_id)
        if job is None or job.preview_png is None:
            raise HTTPException(404, f"job {job_id}: no map formed yet")
        return Response(job.preview_png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.delete("/api/jobs/{job_id}", summary="Cancel a job (a running one stops at its next batch)")
    def cancel(job_id: str) -> dict[str, Any]:
        job = queue.cancel(job_id)
        if job is None:
            raise HTTPException(404, f"job {job_id}: unknown or expired")
        return _job_json(job)


def _submit(server: Server, body: JobRequest) -> JSONResponse:
    """Check a job, prepare each of its methods (their exact cost checked before queueing) and queue it."""
    clf, cfg, queue, lock = server.clf, server.cfg, server.queue, server.lock
    stored = server.image(body.image_id)
    # a bad class or seed is a 422 now, not a failed job later; no label present is a job that says so
    check_seed(body.seed)
    objective = resolve_objective(body.target, stored.output, clf, image_size=stored.image.pixels.shape[:2])
    check_targets(objective, cfg)
    requests = build_requests([(m.name, m.params) for m in body.methods], clf, cfg, body.target, body.seed, lock)
    check_result_bytes(stored, len(requests) * max(1, len(objective)), cfg)
    if queue.full:  # before any preparation is done for nothing
        return _busy(f"{queue.waiting} jobs are already waiting (the limit is {cfg.max_queued})")
    job = WebJob()

    def hooks(request: RunRequest) -> Hooks:
        name = request.method.name

        def preview(maps: torch.Tensor, used: int) -> None:
            job.show_preview(heatmap_png(maps[0].float().cpu().numpy()), method=name, samples=used)

        return job.hooks(lock, on_map=preview)

    # each method prepared now: its exact cost (every target, the image's own regions) is checked before queueing
    runs = prepare_runs(clf, stored, requests, hooks, cfg)

    def work(job: WebJob) -> list[dict[str, Any]]:
        return run_explanations(job, runs, stored=stored, image_id=body.image_id, results=server.results,
                                grid=cfg.grid, with_metrics=body.metrics, lock=lock)

    try:
        queue.submit(work, total=sum(run.passes or 0 for run in runs), job=job)
    except QueueFull as exc:
        for run in runs:
            run.close()
        return _busy(str(exc))
    return JSONResponse(_job_json(job), status_code=202)


def _busy(why: str) -> JSONResponse:
    return JSONResponse({"detail": f"the server is busy: {why}; try again in a moment"}, status_code=429)


def _job_json(job: Any) -> dict[str, Any]:
    out: dict[str, Any] = job.to_dict()
    out["results"] = job.result if job.status == "done" else None
    return out


def _add_result_routes(app: FastAPI, server: Server) -> None:
    """A finished map: its summary, provenance, raw values and pictures."""

    @app.get("/api/results/{result_id}", summary="One map's summary: method, class, range, description")
    def result(result_id: str) -> dict[str, Any]:
        return server.result(result_id).summary

    @app.get("/api/results/{result_id}/explanation.json", summary="Download the map's provenance as JSON")
    def result_json(result_id: str) -> JSONResponse:
        found = server.result(result_id)
        body = found.explanation.to_dict()
        body["description"] = found.summary.get("description")
        body["metrics"] = found.summary.get("metrics")
        return JSONResponse(body, headers=_attachment(found, "json"))

    @app.get("/api/results/{result_id}/map.npy", summary="Download the raw map (float32, image resolution)")
    def result_npy(result_id: str) -> Response:
        found = server.result(result_id)
        buf = io.BytesIO()
        np.save(buf, found.explanation.saliency.astype(np.float32))
        return Response(buf.getvalue(), media_type="application/octet-stream", headers=_attachment(found, "npy"))

    @app.get("/api/results/{result_id}/heatmap.png", summary="The map alone, coloured (to blend over the photo)")
    def result_heatmap(result_id: str) -> Response:
        return Response(heatmap_png(server.result(result_id).explanation.saliency), media_type="image/png")

    @app.get("/api/results/{result_id}/overlay.png", summary="Download the overlay with colour bar and title")
    def result_overlay(result_id: str) -> Response:
        found = server.result(result_id)
        buf = io.BytesIO()
        found.explanation.overlay().save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png", headers=_attachment(found, "png"))


def _load_bytes(data: bytes, name: str) -> Any:
    """Decode uploaded bytes with :func:`load_image` (its checks and conversions), via a temporary file."""
    import os
    import tempfile

    fd, path = tempfile.mkstemp(prefix="patchlens-upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return load_image(path, name=name)
    finally:
        os.unlink(path)


def _too_big(size: int, cfg: WebConfig, name: str = "the upload") -> str:
    mb = cfg.max_upload_bytes / 1024 / 1024
    return f"{name}{_mb(size)} is larger than this server's limit of {mb:g} MB"


def _mb(size: int) -> str:
    return f" ({size / 1024 / 1024:.1f} MB)" if size >= 0 else ""


def _attachment(found: StoredResult, ext: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{found.explanation.default_stem()}.{ext}"'}
