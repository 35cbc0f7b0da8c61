"""The web explorer's JSON API, with a tiny model injected (FastAPI TestClient).

Each test checks a fact against a direct computation: the predictions are the
model's, a what-if equals the image composed by hand, a map equals
``patchlens.explain``'s, and the limits answer the documented status codes.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

import patchlens  # noqa: E402
from patchlens.images import load_image, resize, to_tensor  # noqa: E402
from patchlens.models import TorchClassifier  # noqa: E402
from patchlens.web import WebConfig, create_app  # noqa: E402
from web_fixtures import CLASSES, SIZE, png_bytes, random_pixels, slow_classifier, tiny_classifier, upload  # noqa: E402,F401

GRID = 8


@pytest.fixture(scope="module")
def clf() -> TorchClassifier:
    return tiny_classifier()


@pytest.fixture(scope="module")
def client(clf: TorchClassifier):
    with TestClient(create_app(clf, config=WebConfig(grid=GRID, max_passes=5000)), base_url="http://127.0.0.1") as c:
        yield c


def wait(client: TestClient, job_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


def model_probs(clf: TorchClassifier, pixels: np.ndarray) -> torch.Tensor:
    return clf(resize(to_tensor(pixels), clf.input_size)[None])[0]


# -- info, page, docs ------------------------------------------------------------------------


def test_info_lists_every_registered_method_with_its_parameters(client: TestClient) -> None:
    info = client.get("/api/info").json()
    # generated from the registry, nothing hard-coded; each method says whether this model can run it
    assert {k: {f: v for f, v in m.items() if f not in ("usable", "reason")} for k, m in info["methods"].items()} == patchlens.list_methods(front_end="web")
    assert info["model"] == {"id": "tiny", "input_size": [SIZE, SIZE], "classes": CLASSES, "white_box": True,
                             "activation": "softmax", "multi_label": False, "detector": False, "min_score": 0.5}
    usable = {k: m["usable"] for k, m in info["methods"].items()}
    assert usable["rise"] and usable["gradcam"] and not usable["attention_rollout"]  # a CNN: all but ViT methods
    assert "not a timm Vision Transformer" in info["methods"]["attention_rollout"]["reason"]
    assert [e["name"] for e in info["examples"]] == list(patchlens.examples.EXAMPLES)
    assert info["grid"] == GRID and "noise" not in info["baselines"] and info["baselines"][0] == "gray"


def test_page_static_files_and_openapi(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/info", "/api/images", "/api/images/{image_id}/predict", "/api/jobs", "/api/jobs/{job_id}",
                 "/api/results/{result_id}/map.npy", "/api/results/{result_id}/explanation.json"):
        assert path in paths
    bar = Image.open(io.BytesIO(client.get("/api/colorbar/diverging.png").content))
    assert bar.size == (256, 8)
    assert client.get("/api/colorbar/rainbow.png").status_code == 404


def test_example_image_and_its_predictions(client: TestClient, clf: TorchClassifier) -> None:
    r = client.get("/api/examples/coffee")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (600, 400)
    info = client.post("/api/images/example/coffee").json()
    expected = model_probs(clf, load_image("example:coffee").pixels)
    top = expected.topk(5)
    assert [p["index"] for p in info["predictions"]] == top.indices.tolist()
    assert [p["prob"] for p in info["predictions"]] == pytest.approx(top.values.tolist(), abs=1e-6)
    assert (info["width"], info["height"]) == (600, 400)
    assert client.post("/api/images/example/nope").status_code == 404


def test_upload_round_trip(client: TestClient, clf: TorchClassifier) -> None:
    pixels = random_pixels(40, 56)
    info = upload(client, pixels, name="../../etc/odd name?.png")
    assert info["name"] == "odd name_.png"  # no folders, no odd characters
    assert (info["width"], info["height"]) == (56, 40)
    back = np.asarray(Image.open(io.BytesIO(client.get(info["url"]).content)))
    np.testing.assert_array_equal(back, pixels)
    assert info["mean_color"] == [round(float(v) * 255) for v in resize(to_tensor(pixels), (SIZE, SIZE)).mean((1, 2))]
    assert client.get("/api/images/nosuchimage.png").status_code == 404


# -- what-if -------------------------------------------------------------------------------------


def test_what_if_equals_the_image_composed_by_hand(client: TestClient, clf: TorchClassifier) -> None:
    pixels = random_pixels(64, 64, seed=3)
    info = upload(client, pixels)
    hidden = [0, 9, 27, 63]
    r = client.post(f"/api/images/{info['id']}/predict", json={"hidden": hidden, "grid": GRID, "baseline": "gray"})
    assert r.status_code == 200, r.text
    x = resize(to_tensor(pixels), (SIZE, SIZE))
    cell = SIZE // GRID
    for i in hidden:
        row, col = divmod(i, GRID)
        x[:, row * cell:(row + 1) * cell, col * cell:(col + 1) * cell] = 0.5
    expected = clf(x[None])[0]
    got = r.json()["predictions"]
    assert [p["index"] for p in got[:5]] == expected.topk(5).indices.tolist()
    assert [p["prob"] for p in got[:5]] == pytest.approx(expected.topk(5).values.tolist(), abs=1e-6)
    # each class's change from the original prediction; the original top class is listed even if it fell out
    original = clf(resize(to_tensor(pixels), (SIZE, SIZE))[None])[0]
    for p in got:
        assert p["original"] == pytest.approx(float(original[p["index"]]), abs=1e-6)
        assert p["change"] == pytest.approx(p["prob"] - p["original"], abs=1e-6)
    assert int(original.argmax()) in [p["index"] for p in got]
    # hiding nothing gives the original predictions back, unchanged
    none = client.post(f"/api/images/{info['id']}/predict", json={"hidden": []}).json()["predictions"]
    assert [{k: p[k] for k in ("index", "label", "prob")} for p in none] == info["predictions"]
    assert all(p["change"] == 0 for p in none)
    # hiding everything with black equals the model on a black image
    black = client.post(f"/api/images/{info['id']}/predict", json={"hidden": list(range(16)), "grid": 4, "baseline": "black"})
    assert black.json()["predictions"][0]["prob"] == pytest.approx(float(clf(torch.zeros(1, 3, SIZE, SIZE))[0].max()), abs=1e-6)


def test_what_if_rejects_bad_requests(client: TestClient) -> None:
    image_id = upload(client, random_pixels(32, 32))["id"]
    r = client.post(f"/api/images/{image_id}/predict", json={"hidden": [64], "grid": 8})
    assert r.status_code == 422 and "0..63" in r.json()["detail"]
    r = client.post(f"/api/images/{image_id}/predict", json={"hidden": [1], "baseline": "plaid"})
    assert r.status_code == 422 and "plaid" in r.json()["detail"]
    assert client.post(f"/api/images/{image_id}/predict", json={"grid": 1}).status_code == 422
    assert client.post("/api/images/unknown/predict", json={"hidden": []}).status_code == 404


# -- jobs and results ------------------------------------------------------------------------------


def test_job_map_equals_explain_and_downloads(client: TestClient, clf: TorchClassifier) -> None:
    pixels = random_pixels(48, 40, seed=5)
    image_id = upload(client, pixels)["id"]
    methods = [{"name": "occlusion", "params": {"window": 8, "stride": 4}}, {"name": "rise", "params": {"n_masks": 40, "grid": 4}}]
    r = client.post("/api/jobs", json={"image_id": image_id, "methods": methods, "target": 2, "seed": 3})
    assert r.status_code == 202, r.text
    job = wait(client, r.json()["id"])
    assert job["status"] == "done", job
    occ, rise = job["results"]
    # the total was the methods' exact cost, prepared before the job was queued; each scoring pass included
    assert job["progress"]["done"] == job["progress"]["total"] == occ["forward_passes"] + rise["forward_passes"]
    assert occ["forward_passes"] == 1 + 7 * 7 and rise["forward_passes"] == 1 + 40  # 7 x 7 windows of 8 at stride 4
    assert (occ["method"], rise["method"], occ["target"], occ["label"]) == ("occlusion", "rise", 2, "class2")
    for result, m in zip((occ, rise), methods):
        reference = patchlens.explain(clf, pixels, m["name"], target=2, seed=3, **m["params"])
        saliency = np.load(io.BytesIO(client.get(f"/api/results/{result['id']}/map.npy").content))
        np.testing.assert_allclose(saliency, reference.saliency, atol=1e-6)
        # the what-if top-k ranking is the patch means of this very map
        cells = saliency.reshape(GRID, 48 // GRID, GRID, 40 // GRID).mean(axis=(1, 3)).ravel()
        np.testing.assert_allclose(result["patch_scores"], cells, rtol=1e-5, atol=1e-9)
        # the colour scale is clipped at the 99th percentile of |map| (as in the overlays); the extent is the full range
        assert result["extent"] == pytest.approx([float(saliency.min()), float(saliency.max())], abs=1e-6)
        scale = patchlens.render.scale_for(saliency)
        assert result["range"] == pytest.approx([scale.lo, scale.hi]) and result["clipped"] == scale.clipped
    assert rise["seed"] == 3 and occ["seed"] is None
    meta = client.get(f"/api/results/{occ['id']}/explanation.json")
    assert "attachment" in meta.headers["content-disposition"]
    assert meta.json()["params"]["window"] == 8 and meta.json()["target"] == 2
    heat = Image.open(io.BytesIO(client.get(f"/api/results/{occ['id']}/heatmap.png").content))
    assert heat.size == (40, 48)
    overlay = Image.open(io.BytesIO(client.get(f"/api/results/{occ['id']}/overlay.png").content))
    assert overlay.size[0] > 40 and overlay.size[1] > 48  # photo plus colour bar and title
    assert client.get(f"/api/results/{occ['id']}").json()["id"] == occ["id"]
    assert client.get("/api/results/nope/map.npy").status_code == 404


def test_description_and_metrics_when_available(client: TestClient) -> None:
    from patchlens.web.state import available_metrics

    image_id = upload(client, random_pixels(32, 32, seed=8))["id"]
    methods = [{"name": "occlusion", "params": {"window": 8, "stride": 8}}]
    job = client.post("/api/jobs", json={"image_id": image_id, "methods": methods, "metrics": True}).json()
    result = wait(client, job["id"])["results"][0]
    try:
        from patchlens.describe import describe  # noqa: F401
    except ImportError:
        assert result["description"] is None
    else:
        assert result["label"] in result["description"]
    if "deletion" not in available_metrics():
        pytest.skip("patchlens.metrics has no deletion metric yet")
    deletion = result["metrics"]["deletion"]
    x, y = np.array(deletion["x"]), np.array(deletion["y"])
    # the curve starts on the untouched image and its area is the reported score
    assert x[0] == 0 and x[-1] == 1 and y[0] == pytest.approx(result["score"], abs=1e-4)
    assert deletion["score"] == pytest.approx(float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x))), abs=1e-3)
    assert deletion["better"] == "lower"


def test_job_errors_are_clear(client: TestClient) -> None:
    image_id = upload(client, random_pixels(32, 32))["id"]

    def submit(methods: list, **extra) -> tuple[int, str]:
        r = client.post("/api/jobs", json={"image_id": image_id, "methods": methods, **extra})
        return r.status_code, str(r.json()["detail"])

    code, text = submit([{"name": "no_such_method"}])
    assert code == 422 and "no_such_method" in text and "occlusion" in text
    code, text = submit([{"name": "occlusion", "params": {"stride": 0}}])
    assert code == 422 and "stride" in text and "at least 1" in text
    code, text = submit([{"name": "occlusion", "params": {"windw": 8}}])
    assert code == 422 and "windw" in text
    code, text = submit([{"name": "rise", "params": {"n_masks": 100_000}}])
    assert code == 422 and "limit" in text
    code, _ = submit([])
    assert code == 422
    r = client.post("/api/jobs", json={"image_id": "nope", "methods": [{"name": "occlusion"}]})
    assert r.status_code == 404
    code, text = submit([{"name": "occlusion"}], target=99)
    assert code == 422 and "99" in text and "out of range" in text
    code, text = submit([{"name": "occlusion"}], target="giraffe")
    assert code == 422 and "giraffe" in text
    assert client.get("/api/jobs/nope").status_code == 404 and client.delete("/api/jobs/nope").status_code == 404


# -- limits -------------------------------------------------------------------------------------


def test_upload_limits(clf: TorchClassifier) -> None:
    app = create_app(clf, config=WebConfig(max_upload_bytes=2000, max_pixels=30 * 30))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        big = png_bytes(random_pixels(28, 28))  # under the pixel limit, over 2000 bytes
        assert len(big) > 2000
        r = c.post("/api/images", files={"file": ("big.png", big, "image/png")})
        assert r.status_code == 413 and "limit" in r.json()["detail"]
        many = png_bytes(np.zeros((40, 40, 3), np.uint8))  # small file, too many pixels
        assert len(many) < 2000
        r = c.post("/api/images", files={"file": ("many.png", many, "image/png")})
        assert r.status_code == 413 and "40x40" in r.json()["detail"]
        r = c.post("/api/images", files={"file": ("notes.txt", b"just some text", "text/plain")})
        assert r.status_code == 415 and "notes.txt" in r.json()["detail"] and "not an image" in r.json()["detail"]
        r = c.post("/api/images", files={"file": ("empty.png", b"", "image/png")})
        assert r.status_code == 422 and "empty" in r.json()["detail"]
        truncated = png_bytes(random_pixels(20, 20))[:300]
        r = c.post("/api/images", files={"file": ("cut.png", truncated, "image/png")})
        assert r.status_code == 422 and "cut.png" in r.json()["detail"]
        ok = png_bytes(np.zeros((20, 20, 3), np.uint8))
        assert c.post("/api/images", files={"file": ("ok.png", ok, "image/png")}).status_code == 200
        headers = {"content-length": "999999999", "content-type": "multipart/form-data; boundary=x"}
        r = c.post("/api/images", content=b"x" * 10, headers=headers)
        assert r.status_code == 413


# -- queue, cancellation, what-if beside a long job -------------------------------------------------


def test_cancel_running_and_queued_jobs_and_full_queue() -> None:
    slow = slow_classifier(per_image=0.004)
    app = create_app(slow, config=WebConfig(workers=1, max_queued=2, max_passes=5000))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        image_id = upload(c, random_pixels(32, 32))["id"]
        long = {"image_id": image_id, "methods": [{"name": "occlusion", "params": {"window": 1, "stride": 1}}]}
        running = c.post("/api/jobs", json=long).json()
        queued = [c.post("/api/jobs", json=long) for _ in range(2)]
        assert [q.status_code for q in queued] == [202, 202]
        refused = c.post("/api/jobs", json=long)
        assert refused.status_code == 429 and "busy" in refused.json()["detail"]
        # what-if answers while the job runs: it does not wait behind the queue
        while c.get(f"/api/jobs/{running['id']}").json()["status"] == "queued":
            time.sleep(0.01)
        start = time.monotonic()
        assert c.post(f"/api/images/{image_id}/predict", json={"hidden": [3]}).status_code == 200
        latency = time.monotonic() - start
        assert c.get(f"/api/jobs/{running['id']}").json()["status"] == "running"
        assert latency < 1.0  # one batch of 32 images is 0.13 s; the job alone is 4 s
        # a waiting job is dropped at once, a running one stops at its next batch
        dropped = c.delete(f"/api/jobs/{queued[0].json()['id']}").json()
        # (it was prepared when submitted: its scoring pass ran then, none of its method's)
        assert dropped["status"] == "cancelled" and dropped["progress"]["done"] == 1
        c.delete(f"/api/jobs/{running['id']}")
        stopped = wait(c, running["id"])
        assert stopped["status"] == "cancelled" and stopped["results"] is None
        assert stopped["progress"]["done"] < stopped["progress"]["total"]
        c.delete(f"/api/jobs/{queued[1].json()['id']}")
        assert wait(c, queued[1].json()["id"])["status"] == "cancelled"
        # the worker survives and takes new work
        small = {"image_id": image_id, "methods": [{"name": "occlusion", "params": {"window": 16, "stride": 16}}]}
        assert wait(c, c.post("/api/jobs", json=small).json()["id"])["status"] == "done"


def test_cli_serve_without_web_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import sys

    from patchlens.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'patchlens[web]'" in err and err.count("\n") == 1


def test_cli_serve_rejects_bad_port(capsys: pytest.CaptureFixture) -> None:
    from patchlens.cli import main

    assert main(["serve", "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err


def test_serve_binds_loopback_by_default() -> None:
    from patchlens.cli import build_parser

    args = build_parser(["serve"]).parse_args(["serve"])
    assert args.host == "127.0.0.1"


def test_a_sampling_method_shows_its_map_while_it_forms() -> None:
    """Progressive maps: while RISE runs, the job carries the running map, newer with each round."""
    with TestClient(create_app(slow_classifier(0.002), config=WebConfig(grid=GRID)), base_url="http://127.0.0.1") as c:
        image_id = upload(c, random_pixels(32, 32, seed=2))["id"]
        methods = [{"name": "rise", "params": {"n_masks": 600, "grid": 4, "round_size": 60, "converge": 0}}]
        job_id = c.post("/api/jobs", json={"image_id": image_id, "methods": methods, "seed": 1}).json()["id"]
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = c.get(f"/api/jobs/{job_id}").json()
            if job["status"] != "running" and job["status"] != "queued":
                break
            preview = job["preview"]
            if preview and (not seen or preview["version"] != seen[-1]):
                png = c.get(f"/api/jobs/{job_id}/preview.png")
                assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == (SIZE, SIZE)
                assert preview["method"] == "rise" and preview["samples"] % 15 == 0  # four pictures per round of 60
                seen.append(preview["version"])
            time.sleep(0.05)
        assert job["status"] == "done" and job["preview"] is None  # the cards replace the preview
        assert len(seen) >= 2 and seen == sorted(seen)


def test_the_docs_page_loads_nothing_from_another_host(client: TestClient) -> None:
    """FastAPI's /docs pulls Swagger UI from a CDN and stays blank offline; ours serves the files itself."""
    pytest.importorskip("swagger_ui_bundle")
    import re

    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r"""(?:src|href)=["']([^"']+)""", page.text) + re.findall(r"url: ?'([^']+)'", page.text)
    assert sources and not [s for s in sources if "//" in s], sources  # every script, style and icon from this server
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert asset in page.text
        got = client.get(asset)
        assert got.status_code == 200 and len(got.content) > 10_000
    assert client.get("/openapi.json").json()["info"]["title"] == "patchlens"


def test_job_progress_never_passes_its_stated_total(client: TestClient) -> None:
    """The faithfulness metrics' passes were counted as the methods' ("635 of 503"); now they are counted apart."""
    image_id = upload(client, random_pixels(32, 32, seed=9))["id"]
    methods = [{"name": "occlusion", "params": {"window": 8, "stride": 8}}]
    job = client.post("/api/jobs", json={"image_id": image_id, "methods": methods, "metrics": True}).json()
    seen = [job["progress"]]
    while job["status"] in ("queued", "running"):
        job = client.get(f"/api/jobs/{job['id']}").json()
        seen.append(job["progress"])
        time.sleep(0.01)
    assert job["status"] == "done"
    assert all(p["total"] is None or p["done"] <= p["total"] for p in seen), seen
    final = seen[-1]
    assert final["done"] == final["total"] == 17  # 16 windows and the unmasked image, as stated before the run
    assert final["scoring_passes"] > 0 or not job["results"][0].get("metrics")
