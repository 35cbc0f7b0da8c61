"""What a server cannot do to the remote client: hold it past its timeout, fill its memory, hide its own
error behind a socket error, or crash it with a malformed answer.

Servers are in-process on 127.0.0.1 (tests/remote_fakes.py), bounded in
requests; the slow ones stop by themselves after a few seconds.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchlens.errors import ModelError, ServerUnavailableError
from patchlens.models import load_model
from patchlens.models.remote.server import ModelServer
from remote_fakes import FakeServer, exact_classifier, oip_responder, send

META = {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 8, 8]}],
        "parameters": {"labels": ["a", "b"]}}


def model_then(infer):
    """Metadata from META; every infer request answered by ``infer(handler, body)``."""

    def respond(handler, method, path, body):
        if method == "GET" and path == "/v2/models/m":
            return send(handler, 200, META)
        if method == "GET":
            return send(handler, 404, {"error": "no such thing"})
        infer(handler, body)

    return respond


def test_a_trickling_server_cannot_hold_the_client_past_its_timeout():
    def trickle(handler, body):
        handler.send_response(200)
        handler.send_header("Content-Length", "40")
        handler.end_headers()
        try:
            for _ in range(40):  # 40 bytes over 2 s: each read arrives well within a per-read timeout
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass

    with FakeServer(model_then(trickle)) as server:
        remote = load_model(server.base + "/v2/models/m", timeout=0.5, retries=0)
        with pytest.raises(ServerUnavailableError, match=r"no complete answer within 0.5s \(gave up after 1 try\)"):
            remote(torch.rand(1, 3, 8, 8))


def test_a_failed_call_leaves_no_request_running():
    """One request of a call fails; the others, still under way, finish before the error reaches the caller (else they
    go on drawing the progress line under the caller's message)."""
    calls = {"n": 0}
    lock = threading.Lock()

    def first_fails_others_slow(handler, body):
        with lock:
            calls["n"] += 1
            first = calls["n"] == 1
        if first:
            handler.close_connection = True  # dropped without an answer
            return
        time.sleep(0.5)
        n = json.loads(body)["inputs"][0]["shape"][0]
        send(handler, 200, {"outputs": [{"name": "p", "datatype": "FP32", "shape": [n, 2], "data": [0.5] * (2 * n)}]})

    with FakeServer(model_then(first_fails_others_slow)) as server:
        remote = load_model(server.base + "/v2/models/m", retries=0, request_batch=1, in_flight=3, binary=False)
        with pytest.raises(ServerUnavailableError):
            remote(torch.rand(3, 3, 8, 8))
        assert remote.client.traffic.in_flight == 0
        assert calls["n"] == 3  # the two slow requests were sent and answered, not abandoned mid-way
        remote.close()


def test_an_answer_over_its_limit_is_refused_unread():
    def huge(handler, body):
        handler.send_response(200)
        handler.send_header("Content-Length", str(200 * 1024 * 1024))  # announced, never sent
        handler.end_headers()

    def chunked(handler, body):
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            for _ in range(16):  # 1 MB with no length: refused once past the limit for 2 classes
                handler.wfile.write(b"10000\r\n" + b"[" * 0x10000 + b"\r\n")
            handler.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        handler.close_connection = True

    for infer, said in ((huge, "answer of 209,715,200 bytes"), (chunked, "answer of more than")):
        with FakeServer(model_then(infer)) as server:
            remote = load_model(server.base + "/v2/models/m", retries=0)
            with pytest.raises(ModelError, match=f"{said}.* bytes this request may bring back; refused unread"):
                remote(torch.rand(1, 3, 8, 8))


def test_more_classes_than_any_model_has_is_refused():
    def many(handler, body):
        n = 1  # the test sends one image
        raw = np.zeros(n * 100_001, "<f4").tobytes()
        header = json.dumps({"outputs": [{"name": "y", "datatype": "FP32", "shape": [n, 100_001],
                                          "parameters": {"binary_data_size": len(raw)}}]}).encode()
        send(handler, 200, header + raw, {"Inference-Header-Content-Length": str(len(header))})

    meta = {**META, "parameters": {}}
    with FakeServer(lambda h, m, p, b: send(h, 200, meta) if p == "/v2/models/m" else
                    (send(h, 404, {"error": "no"}) if m == "GET" else many(h, b))) as server:
        remote = load_model(server.base + "/v2/models/m", retries=0, binary=True)
        with pytest.raises(ModelError, match="has 100,001 scores per image; patchlens takes at most 100,000 classes"):
            remote(torch.rand(1, 3, 8, 8))


def test_a_closed_keep_alive_connection_is_reconnected_and_the_server_s_500_is_what_the_user_reads():
    """uvicorn closes the connection after an application error without saying so: the next request on it
    used to fail with a broken pipe, and that socket error replaced the server's message."""

    def fail_and_close(handler, body):
        send(handler, 500, {"error": "TypeError : float() argument must be a string or a real number, not 'dict'"})
        handler.close_connection = True  # no 'Connection: close' header: the client believes it may reuse it

    waits: list[float] = []
    with FakeServer(model_then(fail_and_close)) as server:
        remote = load_model(server.base + "/v2/models/m", retries=5, sleep=waits.append)
        with pytest.raises(ModelError) as info:
            remote(torch.rand(1, 3, 8, 8))
    message = str(info.value)
    assert message.endswith("/infer: HTTP 500: TypeError : float() argument must be a string or a real number, not 'dict' "
                            "(gave up after 2 tries)"), message
    assert not isinstance(info.value, ServerUnavailableError)  # the server is there; its code failed
    assert len(waits) == 1 and remote.client.traffic.reconnects >= 1


def test_a_server_that_closes_idle_connections_costs_no_retries():
    model = ModelServer(exact_classifier(), port=0, max_batch=8)
    ok = oip_responder(model)

    def close_after_each(handler, method, path, body):
        ok(handler, method, path, body)
        handler.close_connection = True  # as if its keep-alive had run out while the client was idle

    waits: list[float] = []
    with FakeServer(close_after_each) as server:
        remote = load_model(server.base + "/v2/models/default", request_batch=2, in_flight=2, sleep=waits.append)
        x = torch.rand(10, 3, 64, 64)
        assert torch.equal(remote(x), exact_classifier()(x))
    assert waits == [] and remote.client.traffic.retries == 0 and remote.client.traffic.reconnects >= 3


def test_close_closes_every_thread_s_connection():
    with ModelServer(exact_classifier(), port=0, max_batch=8) as served:
        remote = load_model(served.url, request_batch=1, in_flight=4)
        remote(torch.rand(8, 3, 64, 64))
        conns = list(remote.client._open)
        assert len(conns) >= 2  # the pool's threads each opened one
        remote.close()
        assert all(c.sock is None for c in conns) and not remote.client._open


def test_a_server_gone_for_good_is_told_apart_and_asked_only_once_more():
    with ModelServer(exact_classifier(), port=0, max_batch=8) as served:
        remote = load_model(served.url, request_batch=4, retries=2, backoff=0.001)
        remote(torch.rand(2, 3, 64, 64))
    remote.client.close()  # its handler threads would still answer on the kept-alive connections; a dead server's would not
    with pytest.raises(ServerUnavailableError, match=r"connection refused .*\(gave up after 3 tries\)"):
        remote(torch.rand(2, 3, 64, 64))
    with pytest.raises(ServerUnavailableError, match=r"\(gave up after 1 try\)"):  # no second round of back-off
        remote(torch.rand(2, 3, 64, 64))


BAD_METADATA = [
    {"inputs": ["x"]},
    {"inputs": [{"name": "x", "shape": "abc"}]},
    {"inputs": [{"name": "x", "shape": [-1, 3, "a", 8]}]},
    {"inputs": [{"name": "x", "shape": [-1, 3, 10**6, 10**6]}]},  # would be 12 TB of pixels per batch
    {"inputs": [{"name": "x", "shape": [-1, 3, 8.5, 8]}]},
    {"inputs": [{"name": "x", "datatype": ["FP32"], "shape": [-1, 3, 8, 8]}]},
    {"inputs": [{"name": "x", "shape": [-1, 3, True, 8]}]},
    ["not", "an", "object"],
]

BAD_ANSWERS = [
    {"outputs": [{"name": "y", "data": "abc"}]},
    {"outputs": [{"name": "y", "data": [[1, "a"]]}]},
    {"outputs": [{"name": "y", "data": [1, 2], "shape": ["a", "b"]}]},
    {"outputs": [{"name": "y", "data": [1, 2], "shape": [10**6, 10**6]}]},
    {"outputs": [{"name": "y", "data": [[1, [2]]]}]},
    {"outputs": [{"name": "y", "data": {"a": 1}}]},
    {"outputs": ["y"]},
    {"outputs": [{"name": "y", "data": [[1e300, 0.5]]}]},
    {"outputs": {"name": "y"}},
    "[" * 100_000,
]


#: malformed but harmless: optional fields of the wrong type are ignored
TOLERATED = [
    ({"inputs": [{"name": "x", "shape": [-1, 3, 8, 8]}], "outputs": [1, 2], "parameters": ["labels"]},
     {"outputs": [{"name": "y", "parameters": [], "data": [[0.5, 0.5]]}, 3]}),
    ({"inputs": [{"name": "x", "shape": [-1, 3, 8, 8]}], "outputs": "y", "parameters": {"labels": "ab"}},
     {"outputs": [{"name": "y", "data": [[0.5, 0.5]], "shape": [1, 2, "x"]}]}),
]


@pytest.mark.parametrize("meta,answer", TOLERATED)
def test_optional_fields_of_the_wrong_type_are_ignored(meta, answer):
    def respond(handler, method, path, body):
        if method == "GET":
            return send(handler, 200, meta) if path == "/v2/models/m" else send(handler, 404, {})
        send(handler, 200, answer)

    with FakeServer(respond) as server:
        remote = load_model(server.base + "/v2/models/m", retries=0)
        assert remote.labels is None and remote(torch.rand(1, 3, 8, 8)).tolist() == [[0.5, 0.5]]


@pytest.mark.parametrize("meta", BAD_METADATA, ids=range(len(BAD_METADATA)))
def test_malformed_metadata_is_one_line(meta):
    answer = lambda h, m, p, b: send(h, 200, json.dumps(meta).encode()) if p == "/v2/models/m" else send(h, 404, {})
    with FakeServer(answer) as server, pytest.raises(ModelError) as info:
        load_model(server.base + "/v2/models/m", retries=0)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def _answer_with(answer, headers=None):
    def infer(handler, body):
        send(handler, 200, answer if isinstance(answer, bytes) else json.dumps(answer).encode(), headers)

    return model_then(infer)


@pytest.mark.parametrize("answer", BAD_ANSWERS, ids=range(len(BAD_ANSWERS)))
def test_malformed_answers_are_one_line(answer):
    with FakeServer(_answer_with(answer)) as server:
        remote = load_model(server.base + "/v2/models/m", retries=0)
        with pytest.raises(ModelError) as info:
            remote(torch.rand(1, 3, 8, 8))
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


@pytest.mark.parametrize(
    "length,size,datatype",
    [("abc", 8, "FP32"), ("-5", 8, "FP32"), ("999999", 8, "FP32"), (None, "abc", "FP32"), (None, -4, "FP32"), (None, 3, "FP32"),
     (None, 8, "STRING"), (None, 10**12, "FP32")],
)
def test_malformed_binary_answers_are_one_line(length, size, datatype):
    header = json.dumps({"outputs": [{"name": "y", "datatype": datatype, "shape": [1, 2],
                                      "parameters": {"binary_data_size": size}}]}).encode()
    raw = np.array([0.25, 0.75], "<f4").tobytes()
    with FakeServer(_answer_with(header + raw, {"Inference-Header-Content-Length": length or str(len(header))})) as server:
        remote = load_model(server.base + "/v2/models/m", retries=0, binary=True)
        with pytest.raises(ModelError) as info:
            remote(torch.rand(1, 3, 8, 8))
    assert "\n" not in str(info.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["name", "shape", "data", "datatype", "outputs",
                                                                               "inputs", "parameters", "labels"]), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None, derandomize=True,  # the same examples on every run: CI failures reproduce
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(meta=json_values, answer=json_values)
def test_any_json_from_the_server_is_scores_or_one_line(meta, answer):
    """Fuzz: metadata and answers of any JSON shape give scores or a ModelError, never another exception."""
    state = {"meta": meta, "answer": answer}
    _FUZZ.update(state)
    try:
        remote = load_model(_FUZZ_SERVER.base + "/v2/models/m", retries=0, input_size=8)
    except ModelError as exc:
        assert "\n" not in str(exc)
        return
    try:
        remote(torch.rand(1, 3, 8, 8))
    except ModelError as exc:
        assert "\n" not in str(exc)
    finally:
        remote.close()


_FUZZ: dict = {}


def _fuzz_respond(handler, method, path, body):
    if method == "GET" and path == "/v2/models/m":
        return send(handler, 200, json.dumps(_FUZZ["meta"]).encode())
    if method == "GET":
        return send(handler, 404, {})
    send(handler, 200, json.dumps(_FUZZ["answer"]).encode())


_FUZZ_SERVER = FakeServer(_fuzz_respond, max_requests=2000)


@pytest.fixture(scope="module", autouse=True)
def _fuzz_server():
    with _FUZZ_SERVER:
        yield
    assert threading.active_count() < 200


def _unadvertised(respond_binary):
    """serve-model's routing, but /v2 lists no extension (as KServe and MLServer do); binary requests go to ``respond_binary``."""
    model = ModelServer(exact_classifier(), port=0, max_batch=8)
    ok = oip_responder(model)

    def respond(handler, method, path, body):
        if path == "/v2":
            return send(handler, 200, {"name": "quiet", "version": "0.1", "extensions": []})
        if handler.headers.get("Inference-Header-Content-Length"):
            return respond_binary(handler, method, path, body, ok)
        ok(handler, method, path, body)

    return respond


@pytest.mark.parametrize(
    "kind,expected",
    [("takes it", True), ("drops the connection", False), ("answers garbage", False), ("answers 400", False)],
)
def test_binary_tensors_are_probed_when_the_server_does_not_list_them(kind, expected):
    def binary(handler, method, path, body, ok):
        if kind == "takes it":
            ok(handler, method, path, body)
        elif kind == "drops the connection":  # MLServer 1.7's handler fails on binary bodies and closes the connection
            handler.close_connection = True
        elif kind == "answers garbage":  # reads the bytes as something else: scores differ from the JSON answer's
            send(handler, 200, {"outputs": [{"name": "p", "datatype": "FP32", "shape": [1, 2], "data": [0.9, 0.1]}]})
        else:
            send(handler, 400, {"error": "binary data is not supported"})

    with FakeServer(_unadvertised(binary)) as server:
        remote = load_model(server.base + "/v2/models/default", request_batch=4)
        assert remote.protocol.binary is expected and remote.queries == 2  # the probe's two grey images
        assert remote.runtime_details == {"runtime": "remote", "protocol": "oip-v2", "server": "quiet 0.1",
                                          "tensors": "binary" if expected else "JSON"}
        x = torch.rand(9, 3, 64, 64)
        assert torch.equal(remote(x), exact_classifier()(x))
        again = load_model(server.base + "/v2/models/default")
        assert again.protocol.binary is expected and again.queries == 0  # remembered, not probed twice
    budgeted = None
    with FakeServer(_unadvertised(binary)) as server:
        budgeted = load_model(server.base + "/v2/models/default", max_queries=10)
    assert budgeted.protocol.binary is False and budgeted.queries == 0  # a budget is not spent on probing
