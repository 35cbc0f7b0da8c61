"""patchlens against real inference servers: KServe 0.21 (v1 and v2) and MLServer 1.7, from the package index.

Each serves the planted numpy model (tests/servers) from its own virtual
environment (tests/real_servers.py builds and caches them). Maps must equal
the in-process model's bit for bit on every protocol and encoding, and each
fault must give its documented one line: a wrong model name, wrong shapes, a
500 with the server's own message, a kept-alive connection the server closed
while idle, a server killed in the middle of RISE (a partial map).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

import patchlens
from conftest import planted_image
from patchlens.errors import ModelError
from patchlens.models import CallableClassifier, load_model
from real_servers import serve

pytestmark = pytest.mark.slow

from servers.planted_numpy import LABELS, SIZE, planted  # noqa: E402

FAST = dict(retries=1, backoff=0.05, timeout=20)


def local() -> CallableClassifier:
    return CallableClassifier(lambda x: torch.from_numpy(planted(x.numpy())), input_size=SIZE, labels=LABELS, model_id="planted")


@pytest.fixture(scope="module")
def kserve(tmp_path_factory):
    with serve("kserve", tmp_path_factory.mktemp("kserve"), keep_alive=1) as running:
        yield running


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory):
    with serve("mlserver", tmp_path_factory.mktemp("mlserver")) as running:
        yield running


@pytest.fixture(scope="module")
def want():
    return patchlens.explain(local(), planted_image(), "rise", n_masks=160, converge=0, seed=3)


@pytest.mark.parametrize(
    "server,protocol,options,tensors",
    [
        ("kserve", "v2", {}, "binary"),  # not listed by KServe: found by the probe
        ("kserve", "v2", {"binary": False}, "JSON"),
        ("kserve", "v1", {"input_size": SIZE}, None),
        ("mlserver", "v2", {}, "JSON"),  # MLServer 1.7 fails on binary bodies: the probe falls back
    ],
)
@pytest.mark.slow
def test_maps_equal_the_in_process_model(request, want, server, protocol, options, tensors):
    running = request.getfixturevalue(server)
    remote = load_model(running.url(protocol), request_batch=32, **options)
    got = patchlens.explain(remote, planted_image(), "rise", n_masks=160, converge=0, seed=3)
    remote.close()
    assert np.array_equal(got.saliency, want.saliency) and got.score == want.score
    details = got.extras["runtime"]
    assert details["runtime"] == "remote" and details["server"].startswith(f"{server} ") and details.get("tensors") == tensors


@pytest.mark.parametrize("server", ["kserve", "mlserver"])
def test_a_wrong_model_name_is_one_line(request, server):
    running = request.getfixturevalue(server)
    with pytest.raises(ModelError) as info:
        load_model(running.url().replace("/planted", "/nope"), **FAST)
    message = str(info.value)
    assert "/v2/models/nope: HTTP 404: " in message and "nope" in message.split("HTTP 404: ")[1] and "\n" not in message


@pytest.mark.parametrize("server", ["kserve", "mlserver"])
def test_wrong_shapes_are_the_server_s_one_line(request, server):
    running = request.getfixturevalue(server)
    remote = load_model(running.url(), input_size=32, binary=False, **FAST)  # the server's model takes 64x64
    with pytest.raises(ModelError) as info:
        remote(torch.rand(2, 3, 32, 32))
    message = str(info.value)
    assert "/infer: HTTP " in message and "\n" not in message and len(message) < 400, message
    assert "closed the connection" not in message and "Broken pipe" not in message


@pytest.mark.parametrize("server", ["kserve", "mlserver"])
def test_a_500_says_what_the_model_raised_after_one_retry(request, server):
    running = request.getfixturevalue(server)
    remote = load_model(running.url(), binary=False, retries=5, backoff=0.05)
    remote.protocol.input_name = "boom"  # the served model raises TypeError for an input of that name
    tick = time.monotonic()
    with pytest.raises(ModelError) as info:
        remote(torch.rand(1, 3, SIZE, SIZE))
    message = str(info.value)
    assert "HTTP 500: " in message and "float() argument must be a string or a real number" in message, message
    assert message.endswith("(gave up after 2 tries)") and time.monotonic() - tick < 15  # not 16 s of back-off


def test_an_idle_kept_alive_connection_is_reopened_without_a_retry(kserve):
    remote = load_model(kserve.url(), request_batch=2, in_flight=1, **FAST)  # KServe runs here with a 1 s keep-alive
    remote(torch.rand(2, 3, SIZE, SIZE))
    time.sleep(1.6)
    x = torch.rand(4, 3, SIZE, SIZE)
    assert torch.equal(remote(x), local()(x))
    assert remote.client.traffic.retries == 0


@pytest.mark.parametrize("server", ["kserve", "mlserver"])
@pytest.mark.slow
def test_a_server_killed_mid_rise_leaves_a_partial_map(server, tmp_path):
    with serve(server, tmp_path) as running:
        remote = load_model(running.url(), request_batch=16, in_flight=2, retries=1, backoff=0.05, timeout=10)

        def kill_after_150() -> None:
            deadline = time.monotonic() + 60
            while remote.queries < 150 and time.monotonic() < deadline:
                time.sleep(0.01)
            running.kill()

        killer = threading.Thread(target=kill_after_150, daemon=True)
        killer.start()
        got = patchlens.explain(remote, planted_image(), "rise", n_masks=4000, round_size=64, converge=0.9999, seed=3)
        killer.join(60)
    partial = got.partial
    assert partial is not None and 64 <= partial["samples_used"] < 4000, partial
    assert "gave up after" in partial["reason"] and running.url() in partial["reason"]
    assert np.isfinite(got.saliency).all() and got.saliency.std() > 0
