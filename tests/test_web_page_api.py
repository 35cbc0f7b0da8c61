"""What the page is offered: methods the model can run (others with the reason), its classes, a favicon."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient

from patchlens.models import CallableClassifier
from patchlens.web import create_app
from web_fixtures import random_pixels, tiny_classifier, upload


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(tiny_classifier()), base_url="http://127.0.0.1") as c:
        yield c


def test_only_methods_the_model_supports_are_offered(client):
    info = client.get("/api/info").json()
    methods = info["methods"]
    assert methods["rise"]["usable"] and methods["gradcam"]["usable"] and methods["rise"]["reason"] is None
    assert not methods["attention_rollout"]["usable"]
    assert "not a timm Vision Transformer" in methods["attention_rollout"]["reason"]
    assert info["token_masking"] is False
    image = upload(client, random_pixels(32, 32))
    # a request for it anyway is refused before any work, with the same reason
    r = client.post("/api/jobs", json={"image_id": image["id"], "methods": [{"name": "attention_rollout", "params": {}}]})
    assert r.status_code == 422 and "not a timm Vision Transformer" in r.json()["detail"]
    r = client.post("/api/jobs", json={"image_id": image["id"], "methods": [{"name": "rise", "params": {"masking": "tokens"}}]})
    assert r.status_code == 422 and "masking='tokens'" in r.json()["detail"]


def test_a_black_box_gets_no_white_box_methods():
    black = CallableClassifier(tiny_classifier(), input_size=32, labels=[f"class{i}" for i in range(6)])
    with TestClient(create_app(black), base_url="http://127.0.0.1") as c:
        methods = c.get("/api/info").json()["methods"]
    assert not methods["gradcam"]["usable"] and "black box" in methods["gradcam"]["reason"]
    assert methods["occlusion"]["usable"]


def test_classes_and_favicon(client):
    body = client.get("/api/classes").json()
    assert body == {"classes": [f"class{i}" for i in range(6)], "count": 6}
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.content.startswith(b"<svg") and "svg" in icon.headers["content-type"]
    assert client.get("/static/favicon.svg").status_code == 200
