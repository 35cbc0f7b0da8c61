"""Remote models: maps equal the local model's through faults; budgets, cache, protocols, clear errors.

Servers are in-process on 127.0.0.1 (tests/remote_fakes.py), bounded in
requests, and shut down by their context managers.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch

import patchlens
from conftest import planted_image
from patchlens.errors import ModelError, QueryBudgetError
from patchlens.models import load_model
from patchlens.models.remote import ScoresWarning
from patchlens.models.remote.server import ModelServer
from remote_fakes import FakeServer, Faults, exact_classifier, kserve_v1_responder, logits_responder, oip_responder, send

FAST = dict(timeout=2.0, retries=1, backoff=0.001)


@pytest.fixture
def served():
    with ModelServer(exact_classifier(), port=0, max_batch=8) as server:
        yield server


def batch(n: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("in_flight,request_batch,binary", [(1, 1, False), (4, 3, True), (16, 8, True), (3, 5, False)])
def test_scores_equal_local_whatever_the_split(served, in_flight, request_batch, binary):
    remote = load_model(served.url, in_flight=in_flight, request_batch=request_batch, binary=binary)
    x = batch()
    assert remote.input_size == (64, 64) and remote.labels == ["background", "evidence"]  # read from the metadata
    assert remote.protocol.binary is binary
    assert torch.equal(remote(x), exact_classifier()(x))
    assert served.images == 20


def test_rise_map_equals_local_through_503_429_stalls_and_drops():
    faults = Faults(seed=1)
    model = ModelServer(exact_classifier(), port=0, max_batch=8)  # its routing only; the fake server owns the socket
    waits: list[float] = []
    with FakeServer(faults.wrap(oip_responder(model)), max_requests=300) as server:
        remote = load_model(
            server.base + "/v2/models/default", in_flight=4, request_batch=3, timeout=0.25, retries=4, backoff=0.001,
            sleep=waits.append,  # the waits the client chose, without timing anything
        )
        image = planted_image()
        got = patchlens.explain(remote, image, "rise", n_masks=60, seed=5)
    want = patchlens.explain(exact_classifier(), image, "rise", n_masks=60, seed=5)
    assert np.array_equal(got.saliency, want.saliency)
    assert got.score == want.score and got.target == want.target
    assert all(faults.seen[kind] >= 1 for kind in ("503", "429", "drop", "stall")), faults.seen
    # a drop on a kept-alive connection looks like one the server closed while idle: reconnected at once, not a retry
    traffic = remote.client.traffic
    assert traffic.retries + traffic.reconnects >= sum(faults.seen[k] for k in ("503", "429", "drop", "stall"))
    assert 0.05 in waits  # Retry-After honoured
    assert remote.queries == 61  # every image sent once, retries not counted again


def test_budget_stops_cleanly_and_says_how_many(served):
    remote = load_model(served.url, max_queries=25, request_batch=4)
    with pytest.raises(QueryBudgetError) as info:
        patchlens.explain(remote, planted_image(), "rise", n_masks=60, seed=0)
    message = str(info.value)
    assert "\n" not in message and served.url in message
    assert "of max_queries=25 are left" in message and "partial" in message
    assert remote.queries <= 25 and served.images == remote.queries


def test_cache_sends_identical_inputs_once(served):
    remote = load_model(served.url, request_batch=4)
    x = batch(6)
    twice = torch.cat([x, x[:2]])  # duplicates inside a batch, too
    first = remote(twice)
    assert served.images == 6
    again = remote(x)
    assert served.images == 6 and remote.cache_hits == 2 + 6
    assert torch.equal(first[:6], again) and torch.equal(first[6:], first[:2])


def test_kserve_v1_arrays_equal_local():
    with FakeServer(kserve_v1_responder(exact_classifier())) as server:
        remote = load_model(server.base + "/v1/models/m", input_size=64, request_batch=3)
        assert remote.protocol.name == "kserve-v1"
        x = batch(7)
        assert torch.equal(remote(x), exact_classifier()(x))


def test_kserve_v1_png_sends_decodable_images():
    seen = []

    def respond(handler, method, path, body):
        if method == "GET":
            return send(handler, 200, {"name": "m", "ready": True})
        import base64
        import io

        from PIL import Image

        instances = json.loads(body)["instances"]
        seen.extend(np.asarray(Image.open(io.BytesIO(base64.b64decode(i["image_bytes"]["b64"])))) for i in instances)
        send(handler, 200, {"predictions": [[0.25, 0.75]] * len(instances)})

    with FakeServer(respond) as server:
        remote = load_model(server.base + "/v1/models/m:predict", input_size=64, image_format="png")
        x = batch(2)
        assert torch.allclose(remote(x), torch.tensor([[0.25, 0.75]] * 2))
    expected = np.rint(x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    assert np.array_equal(np.stack(seen), expected)  # lossless PNG: the server saw our pixels


def test_custom_json_api_through_two_functions():
    clf = exact_classifier()

    def respond(handler, method, path, body):
        pixels = torch.tensor(json.loads(body)["pixels"]).permute(0, 3, 1, 2).contiguous()
        send(handler, 200, {"results": [{"p": row} for row in clf(pixels).tolist()]})

    with FakeServer(respond) as server:
        remote = load_model(
            server.base + "/classify", protocol="json", input_size=64,
            encode=lambda b: {"pixels": b.tolist()}, decode=lambda answer: [r["p"] for r in answer["results"]],
        )
        x = batch(5)
        assert torch.equal(remote(x), clf(x))


def test_nhwc_uint8_layout_read_from_metadata():
    received = []

    def respond(handler, method, path, body):
        if path == "/v2/models/m":
            return send(handler, 200, {"name": "m", "inputs": [{"name": "img", "datatype": "UINT8", "shape": [-1, 32, 48, 3]}],
                                       "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}]})
        if path.endswith("/infer"):
            tensor = json.loads(body)["inputs"][0]
            received.append(np.asarray(tensor["data"]).reshape(tensor["shape"]))
            n = tensor["shape"][0]
            return send(handler, 200, {"outputs": [{"name": "logits", "datatype": "FP32", "shape": [n, 2], "data": [0.5] * 2 * n}]})
        send(handler, 404, {"error": "nope"})

    with FakeServer(respond) as server:
        remote = load_model(server.base + "/v2/models/m")
        assert remote.input_size == (32, 48)
        x = torch.rand(2, 3, 32, 48)
        remote(x)
    assert received[-1].shape == (2, 32, 48, 3) and received[-1].max() <= 255  # after the probe's grey image
    assert np.array_equal(received[-1], np.rint(x.permute(0, 2, 3, 1).numpy() * 255))


def test_logits_warn_once_and_softmax_on_request():
    with FakeServer(logits_responder) as server:
        remote = load_model(server.base + "/v2/models/m", request_batch=1)
        with pytest.warns(ScoresWarning, match="softmax") as record:
            remote(torch.rand(3, 3, 8, 8))
        assert len(record) == 1
        probs = load_model(server.base + "/v2/models/m", softmax=True)(torch.rand(2, 3, 8, 8))
        assert torch.allclose(probs.sum(1), torch.ones(2)) and torch.allclose(probs[0], torch.tensor([2.0, -1.0, 0.5]).softmax(0))


def _canned(status, body, headers=None):
    def respond(handler, method, path, data):
        if method == "GET" and path == "/v2/models/m":
            return send(handler, 200, {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 8, 8]}]})
        if method == "GET":
            return send(handler, 404, {"error": "no such thing"})
        send(handler, status, body, headers)

    return respond


@pytest.mark.parametrize(
    "status,body,expected",
    [
        (400, {"error": "input 'x' must be\nFP16"}, "/infer: HTTP 400: input 'x' must be FP16"),
        (200, {"outputs": [{"name": "y", "shape": [3, 2], "data": [0.5] * 6}]}, "has shape [3, 2] for a batch of 2"),
        (200, b"<html>Gateway says hello</html>", "answer is not JSON: '<html>Gateway says hello</html>'"),
        (200, {"result": 1}, "the answer has no 'outputs'"),
        (500, {"error": "CUDA out of memory"}, "HTTP 500: CUDA out of memory (gave up after 2 tries)"),
    ],
)
def test_protocol_errors_are_one_clear_line(status, body, expected):
    with FakeServer(_canned(status, body)) as server:
        remote = load_model(server.base + "/v2/models/m", **FAST)
        with pytest.raises(ModelError) as info:
            remote(torch.rand(2, 3, 8, 8))
    message = str(info.value)
    assert expected in message and "\n" not in message and message.startswith(server.base + "/v2/models/m")


def test_unknown_model_is_a_clear_404(served):
    url = served.url.replace("/default", "/nope")
    with pytest.raises(ModelError, match=r"HTTP 404: model 'nope' not found; this server has 'default'$"):
        load_model(url, **FAST)


def test_connection_refused_is_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    with pytest.raises(ModelError) as info:
        load_model(f"http://127.0.0.1:{port}/v2/models/m", **FAST)
    assert str(info.value) == (
        f"http://127.0.0.1:{port}/v2/models/m: connection refused (is the server running?) (gave up after 2 tries)"
    )


def test_url_without_a_protocol_and_bad_options_are_clear():
    with pytest.raises(ModelError, match="cannot tell the protocol from the URL"):
        load_model("http://127.0.0.1:9/predict")
    with pytest.raises(ModelError, match=r"options \['image_format'\] do not apply to protocol oip-v2"):
        load_model("http://127.0.0.1:9/v2/models/m", image_format="png")
