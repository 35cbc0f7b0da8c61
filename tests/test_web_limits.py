"""The web server's limits: every request is bounded before it runs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

import patchlens  # noqa: E402
from conftest import prepared_cost  # noqa: E402
from patchlens.images import load_image  # noqa: E402
from patchlens.methods import make_method  # noqa: E402
from patchlens.models import TorchClassifier  # noqa: E402
from patchlens.web import WebConfig, create_app  # noqa: E402
from patchlens.web.guard import host_name, refusal  # noqa: E402

SIZE, CLASSES = 32, 12
LOCAL = "http://127.0.0.1"


def tiny() -> TorchClassifier:
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, CLASSES))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(CLASSES, 3 * SIZE * SIZE, generator=g) * 0.05)
    return TorchClassifier(net, input_size=SIZE, labels=[f"c{i}" for i in range(CLASSES)], model_id="tiny")


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(tiny(), config=WebConfig(max_passes=5000)), base_url=LOCAL) as c:
        yield c


@pytest.fixture(scope="module")
def image_id(client) -> str:
    pixels = np.asarray(Image.open(patchlens.examples.example_path("coffee")).convert("RGB").resize((96, 64)))
    r = client.post("/api/images", files={"file": ("coffee.png", png(pixels), "image/png")})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def submit(client, image_id: str, method: dict, target: str = "top1"):
    return client.post("/api/jobs", json={"image_id": image_id, "methods": [method], "target": target})


# -- uploads of odd shapes -------------------------------------------------------------------


def test_a_tall_thin_upload_is_refused_as_a_client_error(client):
    r = client.post("/api/images", files={"file": ("strip.png", png(np.zeros((1_000_000, 1, 3), np.uint8)), "image/png")})
    assert r.status_code == 422 and "strip.png" in r.json()["detail"]


# -- every method states its passes; superpixel methods included --------------------------


@pytest.mark.parametrize(
    "name,params",
    [
        ("kernelshap", {"n_samples": 300, "features": "slic", "grid": 3}),
        ("kernelshap", {"n_samples": 80, "features": "slic", "grid": 5}),
        ("sobol", {"n_designs": 4, "features": "slic", "grid": 4}),
        ("subset", {"features": "slic", "grid": 3}),
        ("lime", {"n_samples": 40, "features": "quickshift", "grid": 3}),
    ],
)
def test_superpixel_methods_state_their_exact_passes_before_running(name, params):
    clf = tiny()
    photo = load_image("example:chelsea")
    method = make_method(name, **params)
    stated = prepared_cost(clf, photo.pixels, method)
    exp = patchlens.explain(clf, photo.pixels, method)
    assert exp.forward_passes == stated


def test_kernelshap_with_superpixels_cannot_bypass_the_pass_limit(client, image_id):
    # under every parameter's own cap (issue 26), over the server's pass limit: refused from the declared
    # sample count, before 90,000 coalitions are drawn
    r = submit(client, image_id, {"name": "kernelshap", "params": {"n_samples": 90_000, "features": "slic"}})
    assert r.status_code == 422 and "n_samples=90,000 asks for more forward passes than" in r.json()["detail"]
    r = submit(client, image_id, {"name": "sobol", "params": {"n_designs": 1024, "features": "slic"}})
    assert r.status_code == 422 and "forward passes" in r.json()["detail"]


def test_a_method_whose_passes_are_per_class_is_budgeted_for_every_class(client, image_id):
    subset = {"name": "subset", "params": {"grid": 7}}
    photo = np.asarray(Image.open(patchlens.examples.example_path("coffee")).convert("RGB").resize((96, 64)))
    once = prepared_cost(tiny(), photo, make_method("subset", grid=7))
    assert once < 5000 < 5 * once  # under the server's limit for one class, not for five
    assert submit(client, image_id, subset, target="top1").status_code == 202
    r = submit(client, image_id, subset, target="topk:5")
    assert r.status_code == 422 and f"{(once - 1) * 5 + 1:,} forward passes" in r.json()["detail"]


# -- targets and features per request -------------------------------------------------------


def test_targets_per_request_are_limited(client, image_id):
    r = submit(client, image_id, {"name": "gradient"}, target="topk:10")
    assert r.status_code == 422 and "at most 5" in r.json()["detail"]
    r = submit(client, image_id, {"name": "gradient"}, target="topk:5")
    assert r.status_code == 202


def test_the_library_bounds_targets_too():
    many = patchlens.load_model(lambda x: torch.full((x.shape[0], 50), 0.02), input_size=SIZE)
    with pytest.raises(patchlens.errors.TargetError, match="40 classes at once; at most 32"):
        patchlens.explain(many, np.zeros((32, 32, 3), np.uint8), "occlusion", target="topk:40")
    assert len(patchlens.explain(many, np.zeros((32, 32, 3), np.uint8), "occlusion", target="topk:3")) == 3


def test_features_per_image_are_limited(client, image_id):
    r = submit(client, image_id, {"name": "lime", "params": {"grid": 64, "n_samples": 1000}})
    assert r.status_code == 422 and "regions" in r.json()["detail"]
    with pytest.raises(patchlens.errors.MethodError, match="at most 64"):
        make_method("lime", grid=224)


# -- Host allowlist and cross-origin writes ---------------------------------------------


def test_an_unknown_host_header_is_refused(client):
    assert client.get("/api/info", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/api/info", headers={"host": "localhost:8000"}).status_code == 200
    assert client.get("/api/info", headers={"host": "[::1]:8000"}).status_code == 200


def test_cross_origin_uploads_are_refused_same_origin_ones_accepted(client):
    body = {"file": ("a.png", png(np.zeros((8, 8, 3), np.uint8)), "image/png")}
    r = client.post("/api/images", files=body, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
    assert client.post("/api/images", files=body, headers={"origin": "null"}).status_code == 403
    assert client.post("/api/images", files=body, headers={"origin": LOCAL}).status_code == 200
    assert client.post("/api/images", files=body).status_code == 200  # no Origin: not a browser page


def test_allowed_hosts_are_configurable():
    assert host_name("[::1]:80") == "::1" and host_name("Example.org:8000") == "example.org"
    assert refusal("GET", "lab.local:8000", None, ("lab.local",)) is None
    assert refusal("GET", "other:8000", None, ("*",)) is None
    assert refusal("GET", "other:8000", None, ("lab.local",))[0] == 400
    from patchlens.cli.serve import allowed_hosts

    assert allowed_hosts(None, "127.0.0.1") == ("localhost", "127.0.0.1", "::1")
    assert "10.0.0.5" in allowed_hosts(None, "10.0.0.5")
    assert allowed_hosts("a.lan, b.lan", "0.0.0.0") == ("a.lan", "b.lan")


# -- the documented limits are the code's ------------------------------------------------


def test_the_readme_states_the_web_limits_the_code_enforces(client):
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8").split())
    cfg = WebConfig()
    limits = client.get("/api/info").json()["limits"]
    assert limits["max_targets"] == cfg.max_targets and limits["max_regions"] == cfg.max_regions
    for text in (f"{cfg.max_upload_bytes // 2**20} MB", f"{cfg.max_pixels // 1_000_000} megapixels",
                 f"{cfg.max_passes:,} forward passes", f"{cfg.max_targets} classes per request", f"{cfg.max_regions} regions",
                 f"{cfg.max_methods} methods"):
        assert text in readme, text
