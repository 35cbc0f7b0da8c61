"""Many visitors at once against a live server (uvicorn on 127.0.0.1): it stays up and
answers every request with a result or a clear 429, and what-if answers do not wait
behind the explanation queue."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from patchlens.models import CallableClassifier, TorchClassifier  # noqa: E402
from patchlens.web import WebConfig, create_app  # noqa: E402
from patchlens.web.server import BackgroundServer  # noqa: E402

SIZE, CLASSES = 32, 5
JOBS, PREDICTS, UPLOADS = 10, 15, 5  # 30 requests at once
MAX_QUEUED = 3


def slow_model() -> CallableClassifier:
    """A fixed linear model that also takes 1 ms per image, so jobs last about a second."""
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, CLASSES))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(CLASSES, 3 * SIZE * SIZE, generator=g) * 0.05)
    fast = TorchClassifier(net, input_size=SIZE, labels=[f"c{i}" for i in range(CLASSES)])

    def fn(x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.001 * x.shape[0])
        return fast(x)

    return CallableClassifier(fn, input_size=SIZE, labels=fast.labels, model_id="slow-linear")


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_thirty_simultaneous_requests() -> None:
    app = create_app(slow_model(), config=WebConfig(workers=1, max_queued=MAX_QUEUED))
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=40)) as client:
        assert url.startswith("http://127.0.0.1:")
        image_id = client.post("/api/images", files={"file": ("a.png", png(0), "image/png")}).json()["id"]
        # 1024 + 1 passes per job: about a second each, so the queue fills up
        job_body = {"image_id": image_id, "methods": [{"name": "occlusion", "params": {"window": 1, "stride": 1}}]}
        barrier = threading.Barrier(JOBS + PREDICTS + UPLOADS)

        def request(kind: str, i: int) -> tuple[str, httpx.Response, float]:
            barrier.wait()  # all at the same moment
            start = time.monotonic()
            if kind == "job":
                r = client.post("/api/jobs", json=job_body)
            elif kind == "predict":
                r = client.post(f"/api/images/{image_id}/predict", json={"hidden": [i % 64, (7 * i) % 64]})
            else:
                r = client.post("/api/images", files={"file": (f"u{i}.png", png(i + 1), "image/png")})
            return kind, r, time.monotonic() - start

        kinds = ["job"] * JOBS + ["predict"] * PREDICTS + ["upload"] * UPLOADS
        with ThreadPoolExecutor(len(kinds)) as pool:
            answers = list(pool.map(request, kinds, range(len(kinds))))

        accepted, refused = [], 0
        for kind, r, _seconds in answers:
            if kind == "job":
                assert r.status_code in (202, 429), r.text
                if r.status_code == 429:
                    refused += 1
                    assert "busy" in r.json()["detail"]
                else:
                    accepted.append(r.json()["id"])
            else:
                assert r.status_code == 200, r.text
                assert len(r.json()["predictions"]) == 5
        # one job running and MAX_QUEUED waiting at most; the rest were told to come back
        assert 1 <= len(accepted) <= 1 + MAX_QUEUED and refused == JOBS - len(accepted)
        # the what-if and upload answers came while the jobs were still queued or running
        states = [client.get(f"/api/jobs/{j}").json()["status"] for j in accepted]
        assert any(s in ("queued", "running") for s in states), states
        assert max(seconds for kind, _, seconds in answers if kind != "job") < 5.0

        for job_id in accepted[1:]:
            assert client.delete(f"/api/jobs/{job_id}").status_code == 200
        deadline = time.monotonic() + 30
        while True:
            first = client.get(f"/api/jobs/{accepted[0]}").json()
            if first["status"] not in ("queued", "running") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert first["status"] == "done" and first["results"][0]["forward_passes"] == 32 * 32 + 1
        # still up, and takes new work once the queue has room
        assert client.get("/api/info").status_code == 200
        assert client.post("/api/jobs", json=job_body).status_code == 202
