"""``serve-model`` under hostile or broken clients: a token, Host and Origin checks, a 4xx (never a 500 or an echo)
for every malformed request, bodies refused before they are read, and stalled connections closed."""

from __future__ import annotations

import json
import socket
import threading

import numpy as np
import pytest
import torch

from conftest import SIZE
from patchlens.cli import main
from patchlens.cli.serve import allowed_hosts
from patchlens.cli.serve_model import host_guard
from patchlens.errors import ModelError
from patchlens.models import load_model
from patchlens.models.remote.server import ModelServer
from remote_fakes import ask, exact_classifier, held_classifier, infer_body

TOKEN = "srv-7d1e4b9a2c"


@pytest.fixture
def server():
    guard = host_guard(allowed_hosts(None, "127.0.0.1"))  # what `patchlens serve-model` gives it
    with ModelServer(exact_classifier(), name="planted", port=0, max_batch=4, queue=4, idle_timeout=1.0, guard=guard) as s:
        yield s


def raw_exchange(server: ModelServer, data: bytes, wait: float = 5.0) -> bytes:
    """Send ``data`` as it is and return all the server says until it closes the connection (or ``wait`` passes)."""
    host, port = server.httpd.server_address[:2]
    with socket.create_connection((host, port), timeout=wait) as sock:
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return out


def test_a_token_guards_everything_but_health():
    with ModelServer(exact_classifier(), name="planted", port=0, token=TOKEN) as s:
        assert ask(s, "GET", "/v2/health/ready")[0] == 200
        status, answer, raw = ask(s, "GET", "/v2/models/planted")
        assert status == 401 and raw.getheader("WWW-Authenticate") == "Bearer" and TOKEN not in json.dumps(answer)
        assert ask(s, "POST", "/v2/models/planted/infer", infer_body(1), {"Authorization": "Bearer wrong-token"})[0] == 401
        assert ask(s, "POST", "/v2/models/planted/infer", infer_body(1), {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        with pytest.raises(ModelError, match="HTTP 401: this server needs 'Authorization: Bearer TOKEN'"):
            load_model(s.url, retries=0)
        remote = load_model(s.url, headers=[f"Authorization: Bearer {TOKEN}"])
        x = torch.rand(3, 3, SIZE, SIZE)
        assert torch.equal(remote(x), exact_classifier()(x))
    with pytest.raises(Exception, match="at least 8 printable characters"):
        ModelServer(exact_classifier(), port=0, token="short")


def test_unknown_hosts_and_cross_origin_posts_are_refused(server):
    assert ask(server, "GET", "/v2/models/planted", headers={"Host": "evil.example"})[0] == 400  # DNS rebinding
    status, answer, _ = ask(server, "POST", "/v2/models/planted/infer", infer_body(1),
                            {"Origin": "http://evil.example", "Content-Type": "text/plain"})
    assert status == 403 and "cross-origin" in answer["error"] and server.requests == 0
    assert ask(server, "POST", "/v2/models/planted/infer", infer_body(1))[0] == 200  # scripts send no Origin


def _tensor(**fields):
    spec = {"name": "input", "shape": [1, 3, SIZE, SIZE], "datatype": "FP32", **fields}
    return {"inputs": [spec]}


def _binary(raw: bytes, size) -> tuple[bytes, dict]:
    header = json.dumps(_tensor(parameters={"binary_data_size": size})).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


GOOD = np.zeros(3 * SIZE * SIZE, "<f4").tobytes()
MALFORMED = {
    "deep JSON": ((b"[" * 100_000) + (b"]" * 100_000), {}),
    "NaN input": (json.dumps(_tensor(data=[float("nan")] * (3 * SIZE * SIZE))).encode(), {}),
    "huge number": (json.dumps(_tensor(data=[1e300] * (3 * SIZE * SIZE))).encode(), {}),
    "parameters as a list": (json.dumps({**_tensor(data=[0.5] * (3 * SIZE * SIZE)), "parameters": [1]}).encode(), {}),
    "tensor parameters as a list": (json.dumps(_tensor(data=[0.5] * 12288, parameters=["binary_data_size"])).encode(), {}),
    "binary_data_size abc": _binary(GOOD, "abc"),
    "binary length not a multiple of 4": _binary(GOOD[:-2], len(GOOD) - 2),
    "header length abc": (b"{}", {"Inference-Header-Content-Length": "abc"}),
    "header length past the body": (b"{}", {"Inference-Header-Content-Length": "99"}),
    "shape of strings": (json.dumps(_tensor(shape=["1", 3, SIZE, SIZE], data=[0.5])).encode(), {}),
    "shape True": (json.dumps(_tensor(shape=[True, 3, SIZE, SIZE], data=[0.5] * 12288)).encode(), {}),
    "outputs not objects": (json.dumps({**_tensor(data=[0.5] * 12288), "outputs": ["x"]}).encode(), {}),
    "id an object": (json.dumps({**_tensor(data=[0.5] * 12288), "id": {"a": 1}}).encode(), {}),
    "data nested wrongly": (json.dumps(_tensor(data=[[0.5], 0.5])).encode(), {}),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_every_malformed_request_gets_a_4xx_and_one_line(server, name):
    body, headers = MALFORMED[name]
    status, answer, _ = ask(server, "POST", "/v2/models/planted/infer", body, headers)
    assert 400 <= status < 500 and "\n" not in answer["error"] and len(answer["error"]) < 200, (status, answer)
    assert server.requests == 0


def test_a_bad_content_length_is_a_4xx(server):
    answer = raw_exchange(server, b"POST /v2/models/planted/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer[:80]


def test_a_huge_bad_field_is_not_echoed(server):
    body = json.dumps(_tensor(datatype="B" * 1_000_000, data=[0.5])).encode()
    status, answer, raw = ask(server, "POST", "/v2/models/planted/infer", body)
    assert status == 400 and int(raw.getheader("Content-Length")) < 300


def test_a_body_over_the_memory_budget_is_refused_before_it_is_read():
    clf, release, entered = held_classifier()
    with ModelServer(clf, name="slow", port=0, max_batch=4, queue=8, max_memory_mb=1) as server:
        first = threading.Thread(target=ask, args=(server, "POST", "/v2/models/slow/infer", infer_body(1)))
        first.start()  # ~270 KB of JSON, x18: takes the whole budget (one request may always run alone)
        assert entered.wait(10)
        try:
            # headers only, announcing 900 KB: the answer must come before any of the body is sent
            head = b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 900000\r\n\r\n"
            answer = raw_exchange(server, head)
        finally:
            release.set()
            first.join(10)
    assert answer.startswith(b"HTTP/1.1 503") and b"memory budget" in answer and b"Retry-After: 1" in answer
    assert server.memory.used == 0  # every reservation given back


def test_idle_and_stalled_connections_are_closed(server):
    assert raw_exchange(server, b"", wait=10) == b""  # idle: closed after idle_timeout (1 s), not held for ever
    stalled = raw_exchange(server, b"POST /v2/models/planted/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n{",
                           wait=10)
    assert stalled.startswith(b"HTTP/1.1 408") or stalled == b""


def test_cli_serve_model_takes_its_token_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("PATCHLENS_SERVE_TOKEN", "short")
    assert main(["serve-model", "--model", "default", "--port", "0"]) == 2
    assert "at least 8 printable characters" in capsys.readouterr().err
