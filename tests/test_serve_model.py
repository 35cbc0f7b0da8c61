"""``serve-model``: the OIP v2 endpoints, its bounded queue, and the CLI serving a real model file."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from conftest import SIZE, planted_image
from patchlens.cli import main
from patchlens.models import load_model
from patchlens.models.remote.server import ModelServer
from remote_fakes import ask, exact_classifier, held_classifier, infer_body  # noqa: F401


@pytest.fixture
def server():
    with ModelServer(exact_classifier(), name="planted", port=0, max_batch=4, queue=4) as s:
        yield s


def test_health_and_metadata(server):
    assert ask(server, "GET", "/v2/health/live")[:2] == (200, {"live": True})
    assert ask(server, "GET", "/v2/health/ready")[:2] == (200, {"ready": True})
    assert ask(server, "GET", "/v2/models/planted/ready")[1]["ready"] is True
    assert "binary_tensor_data" in ask(server, "GET", "/v2")[1]["extensions"]
    status, meta, _ = ask(server, "GET", "/v2/models/planted")
    assert status == 200 and meta["inputs"][0]["shape"] == [-1, 3, SIZE, SIZE] and meta["inputs"][0]["datatype"] == "FP32"
    assert meta["outputs"][0]["shape"] == [-1, 2] and meta["parameters"]["labels"] == ["background", "evidence"]
    assert ask(server, "GET", "/v2/models/planted/config")[1]["max_batch_size"] == 4
    assert server.url.startswith("http://127.0.0.1:")  # loopback by default


def test_infer_answers_the_model_s_probabilities(server):
    status, answer, _ = ask(server, "POST", "/v2/models/planted/infer", infer_body(3))
    assert status == 200 and answer["id"] == "r1" and answer["outputs"][0]["shape"] == [3, 2]
    x = torch.from_numpy(np.random.default_rng(0).random((3, 3, SIZE, SIZE), dtype=np.float32))
    assert np.array_equal(np.asarray(answer["outputs"][0]["data"], np.float32).reshape(3, 2), exact_classifier()(x).numpy())


@pytest.mark.parametrize(
    "path,body,status,message",
    [
        ("/v2/models/other/infer", infer_body(1), 404, "model 'other' not found; this server has 'planted'"),
        ("/v2/models/planted/infer", b"{not json", 400, "the request body is not JSON"),
        ("/v2/models/planted/infer", infer_body(5), 400, "a batch of 5 images; this server takes 1 to 4"),
        ("/v2/models/planted/infer", infer_body(1, 32), 400, "input shape [1, 3, 32, 32]: expected [N, 3, 64, 64]"),
        ("/v2/models/planted/infer", infer_body(1, datatype="BYTES"), 400, "input datatype BYTES: this model takes FP32"),
        ("/nowhere", b"", 404, "not an endpoint of this server"),
    ],
)
def test_bad_requests_get_a_status_and_one_line(server, path, body, status, message):
    got, answer, _ = ask(server, "POST", path, body, {"Content-Type": "application/json"})
    assert got == status and message in answer["error"] and "\n" not in answer["error"]


def test_a_full_queue_answers_503_with_retry_after():
    clf, release, entered = held_classifier()
    with ModelServer(clf, name="slow", port=0, max_batch=4, queue=1) as server:
        first = threading.Thread(target=ask, args=(server, "POST", "/v2/models/slow/infer", infer_body(1)))
        first.start()
        assert entered.wait(10)
        try:
            status, answer, raw = ask(server, "POST", "/v2/models/slow/infer", infer_body(1))
        finally:
            release.set()
            first.join(10)
    assert status == 503 and raw.getheader("Retry-After") == "1" and "busy" in answer["error"]
    assert server.requests == 1


def test_default_model_scores_equal_in_process():
    local = load_model("default", device="cpu")
    x = torch.from_numpy(planted_image(224)).permute(2, 0, 1)[None].float().div(255).repeat(3, 1, 1, 1)
    x[1] = x[1].flip(-1)
    x[2] = 1 - x[2]
    with ModelServer(local, port=0, max_batch=3) as server:
        remote = load_model(server.url, request_batch=3, in_flight=1)
        assert remote.labels == local.labels and remote.input_size == (224, 224)
        # The same batch of 3 on both sides: EfficientNet's float sums depend on the
        # batch's size, so only the same split can promise the same bits.
        assert torch.equal(remote(x), local(x))


class Planted64(torch.nn.Module):
    """The planted model as TorchScript, summed in float64 (batch-independent scores)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = x[:, :, 8:32, 32:56].double().flatten(1).mean(1).float()  # BOX, written out for TorchScript
        return torch.stack([1 - inside, inside], dim=1) * 4  # logits: the adapter's softmax applies


@pytest.mark.slow
def test_cli_serve_model_and_explain_against_it(tmp_path):
    model = tmp_path / "planted.pt"
    torch.jit.save(torch.jit.script(Planted64()), str(model))
    image = tmp_path / "planted.png"
    from PIL import Image

    Image.fromarray(planted_image()).save(image)
    proc = subprocess.Popen(
        [sys.executable, "-m", "patchlens", "serve-model", "--model", f"torchscript:{model}", "--port", "0", "--max-batch", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()  # "patchlens: ... served at URL  (Ctrl+C to stop)"
        assert " served at http://127.0.0.1:" in line, proc.stderr.read() if proc.poll() is not None else line
        url = line.split(" served at ")[1].split()[0]
        assert url.endswith("/v2/models/planted.pt")
        args = ["explain", str(image), "--method", "rise", "--n-masks", "40", "--quiet", "--device", "cpu"]
        assert main([*args, "--model", url, "--in-flight", "3", "--out", str(tmp_path / "remote")]) == 0
        assert main([*args, "--model", f"torchscript:{model}", "--out", str(tmp_path / "local")]) == 0
    finally:
        proc.terminate()
        proc.wait(10)
    remote = np.load(next((tmp_path / "remote").glob("*.npy")))
    local = np.load(next((tmp_path / "local").glob("*.npy")))
    assert np.array_equal(remote, local)
    record = json.loads(next((tmp_path / "remote").glob("*.json")).read_text())
    assert record["model"] == url
