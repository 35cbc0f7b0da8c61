"""Test servers for remote models: a faulty OIP v2 server, a KServe v1 server, and canned answers.

Every server binds 127.0.0.1 on a free port, answers at most ``max_requests``
requests (then 410, so a runaway client stops) and is shut down by its
context manager. Stalls sleep a fixed short time and end by themselves.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import torch

from conftest import BOX, SIZE
from patchlens.models import CallableClassifier
from patchlens.models.remote.server import ModelServer, RequestError

TOKEN = "tok-9f2c7e1d5b3a-SECRET"


def exact_classifier(size: int = SIZE, box: tuple[int, int, int, int] = BOX) -> CallableClassifier:
    """The planted model (P(class 1) = brightness inside ``box``), summed in float64.

    float32 sums depend on the order torch picks, which changes with batch size;
    in float64 the rounding to float32 at the end hides that, so this model's
    scores for an image do not depend on what else is in its batch, and a
    remote map must equal the local one bit for bit.
    """
    t, l, b, r = box

    def model(x: torch.Tensor) -> torch.Tensor:
        inside = x[:, :, t:b, l:r].double().mean(dim=(1, 2, 3))
        return torch.stack([1 - inside, inside], dim=1).float()

    return CallableClassifier(model, input_size=size, labels=["background", "evidence"], model_id="exact")


Responder = Callable[[BaseHTTPRequestHandler, str, str, bytes], None]


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes | dict, headers: dict | None = None) -> None:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    handler.send_response(status)
    for name, value in {"Content-Length": str(len(data)), **(headers or {})}.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


class FakeServer:
    """An HTTP server whose answers come from ``respond(handler, method, path, body)``."""

    def __init__(self, respond: Responder, max_requests: int = 400) -> None:
        self.respond = respond
        self.max_requests = max_requests
        self.requests = 0
        self.seen_headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def _any(self, method: str) -> None:
                with outer.lock:
                    outer.requests += 1
                    count = outer.requests
                    outer.seen_headers.append(dict(self.headers))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if count > outer.max_requests:
                    send(self, 410, {"error": "test server: request limit reached"})
                    return
                try:
                    outer.respond(self, method, self.path, body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def do_GET(self) -> None:
                self._any("GET")

            def do_POST(self) -> None:
                self._any("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FakeServer:
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def oip_responder(model: ModelServer) -> Responder:
    """Answers as ``serve-model`` would, from ``model``'s own routing (no socket of its own)."""

    def respond(handler: BaseHTTPRequestHandler, method: str, path: str, body: bytes) -> None:
        try:
            status, answer, raw = model.route(method, path, body, handler.headers.get("Inference-Header-Content-Length"))
        except RequestError as exc:
            send(handler, exc.status, {"error": str(exc)})
            return
        extra = {"Inference-Header-Content-Length": str(len(json.dumps(answer).encode()))} if raw else {}
        send(handler, status, json.dumps(answer).encode() + raw, extra)

    return respond


class DiesAfter:
    """An OIP responder for ``model`` that answers until ``limit`` images were served, then drops every infer
    connection unanswered, until ``back`` is set."""

    def __init__(self, model: ModelServer, limit: int) -> None:
        self.ok, self.limit = oip_responder(model), limit
        self.served, self.back = 0, False
        self.lock = threading.Lock()

    def __call__(self, handler: BaseHTTPRequestHandler, method: str, path: str, body: bytes) -> None:
        if path.endswith("/infer") and not self.back:
            images = json.loads(body)["inputs"][0]["shape"][0]
            # Handler threads run at once: checked and counted as one step, else increments are lost and the
            # server dies hundreds of images late (it did, under load: a round that should have failed finished).
            with self.lock:
                gone = self.served >= self.limit
                self.served += 0 if gone else images
            if gone:
                handler.close_connection = True  # gone: the connection dropped without an answer
                return
        self.ok(handler, method, path, body)


class Faults:
    """Decides, per request, whether an infer call fails and how.

    The first four first-attempts fail with 503, 429 (Retry-After), a dropped
    connection and a stall, so each kind is seen in every run; after that about
    30 % of first attempts get a 503 and some second attempts a 429. Third
    attempts of the same body always succeed, so a client with 3+ retries must finish.
    """

    def __init__(self, seed: int = 0, stall_seconds: float = 0.6, retry_after: str = "0.05") -> None:
        self.rng = random.Random(seed)
        self.attempts: dict[bytes, int] = {}
        self.firsts = 0
        self.stall_seconds = stall_seconds
        self.retry_after = retry_after
        self.seen: dict[str, int] = {"503": 0, "429": 0, "drop": 0, "stall": 0, "ok": 0}
        self.lock = threading.Lock()

    def pick(self, body: bytes) -> str:
        key = hashlib.blake2b(body, digest_size=16).digest()
        with self.lock:
            attempt = self.attempts.get(key, 0)
            self.attempts[key] = attempt + 1
            if attempt == 0:
                forced = ["503", "429", "drop", "stall"]
                kind = forced[self.firsts] if self.firsts < len(forced) else ("503" if self.rng.random() < 0.3 else "ok")
                self.firsts += 1
            elif attempt == 1:
                kind = "429" if self.rng.random() < 0.2 else "ok"
            else:
                kind = "ok"
            self.seen[kind] += 1
            return kind

    def wrap(self, respond: Responder) -> Responder:
        def faulty(handler: BaseHTTPRequestHandler, method: str, path: str, body: bytes) -> None:
            kind = self.pick(body) if path.endswith("/infer") else "ok"
            if kind == "503":
                send(handler, 503, {"error": "overloaded, try later"})
            elif kind == "429":
                send(handler, 429, {"error": "slow down"}, {"Retry-After": self.retry_after})
            elif kind == "drop":
                handler.close_connection = True  # no answer at all: the client sees the connection close
            elif kind == "stall":
                time.sleep(self.stall_seconds)  # past the client's read timeout; then drop
                handler.close_connection = True
            else:
                respond(handler, method, path, body)

        return faulty


def held_classifier() -> tuple[CallableClassifier, threading.Event, threading.Event]:
    """A model that holds each call until ``release`` is set (10 s at most); ``entered`` is set once one is held."""
    release, entered = threading.Event(), threading.Event()

    def slow(x: torch.Tensor) -> torch.Tensor:
        entered.set()
        release.wait(10)  # bounded: the test releases it at once
        return torch.full((x.shape[0], 2), 0.5)

    return CallableClassifier(slow, input_size=SIZE), release, entered


def logits_responder(handler: BaseHTTPRequestHandler, method: str, path: str, body: bytes) -> None:
    """An OIP v2 model ``m`` (8x8 inputs) that answers logits [2, -1, 0.5] for every image: not probabilities."""
    if path == "/v2/models/m":
        return send(handler, 200, {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 8, 8]}]})
    if method == "GET":
        return send(handler, 404, {"error": "not here"})
    n = json.loads(body)["inputs"][0]["shape"][0]
    send(handler, 200, {"outputs": [{"name": "y", "shape": [n, 3], "datatype": "FP32", "data": [[2.0, -1.0, 0.5]] * n}]})


def kserve_v1_responder(model: CallableClassifier, name: str = "m") -> Responder:
    """KServe v1: GET /v1/models/NAME -> ready; POST :predict with HWC arrays in [0, 1]."""

    def respond(handler: BaseHTTPRequestHandler, method: str, path: str, body: bytes) -> None:
        if method == "GET" and path == f"/v1/models/{name}":
            send(handler, 200, {"name": name, "ready": True})
        elif method == "POST" and path == f"/v1/models/{name}:predict":
            x = torch.from_numpy(np.asarray(json.loads(body)["instances"], np.float32)).permute(0, 3, 1, 2)
            send(handler, 200, {"predictions": model(x.contiguous()).tolist()})
        else:
            send(handler, 404, {"error": f"model {path} not found"})

    return respond


def ask(server: ModelServer, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    host, port = server.httpd.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        answer = conn.getresponse()
        data = answer.read()
        return answer.status, json.loads(data) if data else None, answer
    finally:
        conn.close()


def infer_body(n: int, size: int = SIZE, **tensor) -> bytes:
    x = np.random.default_rng(0).random((n, 3, size, size), dtype=np.float32)
    spec = {"name": "input", "shape": [n, 3, size, size], "datatype": "FP32", "data": x.ravel().tolist(), **tensor}
    return json.dumps({"id": "r1", "inputs": [spec]}).encode()
