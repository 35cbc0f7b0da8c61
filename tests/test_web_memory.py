"""The web server's memory: bounded bodies, results bounded by bytes, answers that do not echo.

Before: a small lossless WebP upload cost +1.2 GB (Pillow's WebP plugin allocates
the canvas twice just to open the file), 128 kept results of a large photo's eight
methods were gigabytes, a JSON body of any size was parsed, and a 30 MB bad body
was answered with a 35 MB 422 that repeated it.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from patchlens.models import CallableClassifier  # noqa: E402
from patchlens.web import WebConfig, create_app  # noqa: E402
from patchlens.web.state import Recent  # noqa: E402

LOCAL = "http://127.0.0.1"


def brightness(x: torch.Tensor) -> torch.Tensor:
    m = x.mean((1, 2, 3))
    return torch.stack([m, 1 - m, 0.5 * m], 1)


def model() -> CallableClassifier:
    return CallableClassifier(brightness, input_size=16, labels=["bright", "dark", "half"], model_id="bright")


def png(side: tuple[int, int], seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side[1], side[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def upload(client, data: bytes, name: str = "a.png"):
    return client.post("/api/images", files={"file": (name, data, "image/png")})


def test_the_stores_forget_the_oldest_by_bytes_as_well_as_by_count():
    store: Recent[bytes] = Recent(100, budget=10, weigh=len)
    first = store.add(b"1234")
    second = store.add(b"5678")
    assert store.bytes == 8
    third = store.add(b"abcd")  # 12 bytes: the oldest goes
    assert store.get(first) is None and store.get(second) == b"5678" and store.bytes == 8
    huge = store.add(b"x" * 50)  # over the budget alone: kept, as the newest, and everything else goes
    assert store.get(huge) is not None and store.get(third) is None and store.bytes == 50


def test_kept_results_are_bounded_by_bytes():
    cfg = WebConfig(keep_result_bytes=3 * 64 * 48 * 4)  # three maps of a 64 x 48 photo
    with TestClient(create_app(model(), config=cfg), base_url=LOCAL) as client:
        image = upload(client, png((64, 48))).json()["id"]
        ids = []
        for _ in range(4):
            r = client.post("/api/jobs", json={"image_id": image, "methods": [{"name": "occlusion", "params": {"window": 8}}]})
            assert r.status_code == 202, r.text
            job = r.json()["id"]
            while (state := client.get(f"/api/jobs/{job}").json())["status"] not in ("done", "failed"):
                pass
            ids.append(state["results"][0]["id"])
        assert client.get(f"/api/results/{ids[0]}").status_code == 404  # forgotten: the fourth map is over the budget
        assert all(client.get(f"/api/results/{i}").status_code == 200 for i in ids[1:])
        # a job whose maps alone are more than the server keeps is refused before it runs
        r = client.post("/api/jobs", json={"image_id": image, "target": "topk:3",
                                           "methods": [{"name": "occlusion"}, {"name": "rise", "params": {"n_masks": 8}}]})
        assert r.status_code == 422 and "6 maps of this 64x48 photo" in r.json()["detail"]


def test_a_json_body_over_the_limit_is_refused_before_it_is_parsed():
    with TestClient(create_app(model(), config=WebConfig(max_body_bytes=10_000)), base_url=LOCAL) as client:
        body = json.dumps({"image_id": "x", "methods": [{"name": "rise", "params": {"pad": "x" * 20_000}}]})
        r = client.post("/api/jobs", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "10,000 bytes" in r.json()["detail"]
        chunks = (part.encode() for part in [body[:100], body[100:]])  # no Content-Length: chunked
        r = client.post("/api/jobs", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 411


def test_a_bad_body_is_not_echoed_back():
    """A 30 MB bad value came back inside a 35 MB 422."""
    with TestClient(create_app(model(), config=WebConfig(max_body_bytes=64 * 2**20)), base_url=LOCAL) as client:
        body = json.dumps({"image_id": "x", "methods": [{"name": 1, "params": "x" * 30_000_000}]})
        r = client.post("/api/jobs", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422
        assert len(r.content) < 2000, f"{len(r.content):,} bytes"
        assert {tuple(e["loc"][-2:]) for e in r.json()["detail"]} >= {("0", "params")}


def test_the_readme_states_the_new_limits():
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8").split())
    cfg = WebConfig()
    for text in (f"at most {cfg.max_body_bytes // 2**20} MB", f"{cfg.keep_images} uploads in {cfg.keep_image_bytes // 2**20} MB",
                 f"{cfg.keep_results} maps in {cfg.keep_result_bytes // 2**30} GB"):
        assert text in readme, text
    assert cfg.max_decoding == 2 and "Two uploads are decoded at a time" in readme


def test_a_seed_out_of_range_is_refused_when_the_job_is_submitted():
    with TestClient(create_app(model()), base_url=LOCAL) as client:
        image = upload(client, png((32, 32))).json()["id"]
        r = client.post("/api/jobs", json={"image_id": image, "seed": 2**64, "methods": [{"name": "rise"}]})
        assert r.status_code == 422 and "seed=" in r.json()["detail"]


CHILD = r"""
import io, json, sys
import torch
from PIL import Image
from fastapi.testclient import TestClient
from patchlens.models import CallableClassifier
from patchlens.web import create_app

Image.MAX_IMAGE_PIXELS = None
buf = io.BytesIO()
Image.new("RGBA", (6000, 6000), (10, 200, 30, 128)).save(buf, "WEBP", lossless=True)  # 36 MP in 1.4 KB
data = buf.getvalue()
clf = CallableClassifier(lambda x: torch.stack([x.mean((1, 2, 3)), 1 - x.mean((1, 2, 3))], 1), input_size=16)
client = TestClient(create_app(clf), base_url="http://127.0.0.1")
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
send = lambda: client.post("/api/images", files={"file": ("w.webp", data, "image/webp")})
assert send().status_code == 200  # the first request's imports and pools are not the upload's
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
r = send()
print(json.dumps({"code": r.status_code, "growth": status("VmHWM") - before, "size": len(data)}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc to reset the peak RSS")
def test_a_small_webp_upload_costs_what_its_pixels_cost():
    """+940 MB before for this 1.4 KB, 36-megapixel upload; its 4096 x 4096 working copy is 50 MB."""
    run = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    r = json.loads(run.stdout.strip().splitlines()[-1])
    assert r["code"] == 200 and r["size"] < 5000
    assert r["growth"] < 400e6, f"+{r['growth'] / 1e6:.0f} MB"
