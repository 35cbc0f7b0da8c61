"""Any patchlens Classifier served over the Open Inference Protocol v2 (REST).

Standard library ``ThreadingHTTPServer`` rather than FastAPI: a GPU box then
needs only ``pip install patchlens`` to serve a model, and the load is bound
by the model (one forward at a time, behind a lock), not by connections.
Requests beyond ``queue`` (running or waiting) get 503 with Retry-After, so
a flood is refused quickly instead of piling up memory; so does a request
whose body would take the bytes in flight past ``max_memory_mb`` (a JSON
body costs ~18 times its size while it is parsed). Both are checked before
a body is read. Every malformed request gets a 4xx with one line that never
echoes more than a few dozen of its characters; a 500 means the model
failed. Given a ``guard`` (the command line gives ``patchlens serve``'s), it
answers only to the Host names allowed (DNS rebinding) and refuses
cross-origin writes; ``token`` requires
``Authorization: Bearer TOKEN`` on everything but the health endpoints;
idle or stalled connections are closed after ``idle_timeout`` seconds. Endpoints::

    GET  /v2/health/live   /v2/health/ready   /v2
    GET  /v2/models/NAME   (metadata)   /v2/models/NAME/ready   /v2/models/NAME/config
    POST /v2/models/NAME/infer
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import torch

from ..._version import __version__
from ...errors import PatchlensError
from ..classifier import Classifier
from .secrets import one_line

#: what a JSON body costs while it is parsed, per byte of body (a number "0," becomes a 32-byte Python float in a list)
JSON_COST = 18
#: what a binary body costs per byte: the body, and the float32 copy the model gets
BINARY_COST = 3
#: the paths anyone may ask, without a token: what a load balancer's health check needs
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")


def _shown(value: object, limit: int = 60) -> str:
    """A piece of the client's request in our answer: never more than ``limit`` characters of it."""
    return one_line(str(value), limit)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class MemoryBudget:
    """Bytes that requests in flight may cost; one request may always run alone, however large."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def take(self, cost: int) -> bool:
        with self._lock:
            if self.used and self.used + cost > self.limit:
                return False
            self.used += cost
            return True

    def give(self, cost: int) -> None:
        with self._lock:
            self.used -= cost


class RequestError(Exception):
    """A request the server refuses: HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ModelServer:
    """Serves ``classifier`` as model ``name``; ``port=0`` picks a free port (see :attr:`url`)."""

    def __init__(
        self,
        classifier: Classifier,
        *,
        name: str = "default",
        host: str = "127.0.0.1",
        port: int = 8500,
        max_batch: int = 32,
        queue: int = 16,
        token: str | None = None,
        guard: Callable[[str, str | None, str | None], tuple[int, str] | None] | None = None,
        max_memory_mb: float = 1024,
        idle_timeout: float = 30.0,
    ) -> None:
        if max_batch < 1 or queue < 1:
            raise PatchlensError(f"max_batch={max_batch}, queue={queue}: both must be at least 1")
        if max_memory_mb <= 0 or idle_timeout <= 0:
            raise PatchlensError(f"max_memory_mb={max_memory_mb}, idle_timeout={idle_timeout}: both must be above 0")
        if token is not None and (len(token) < 8 or any(ord(c) < 33 or ord(c) > 126 for c in token)):
            raise PatchlensError("the token must be at least 8 printable characters without spaces (it is not shown)")
        self.classifier = classifier
        self.name = name
        self.max_batch = max_batch
        self.queue = queue
        self.idle_timeout = idle_timeout
        self._expected = None if token is None else f"Bearer {token}".encode()
        #: ``guard(method, Host, Origin)``: ``(status, reason)`` for a request refused by its Host or Origin, else None;
        #: ``patchlens serve-model`` passes the web server's rule (patchlens.web.guard), which lives in a higher layer
        self.guard = guard
        self.memory = MemoryBudget(int(max_memory_mb * 1024 * 1024))
        self._slots = threading.BoundedSemaphore(queue)
        self._model_lock = threading.Lock()
        self.requests = 0
        self.images = 0
        try:
            self.httpd = ThreadingHTTPServer((host, port), self._handler())
        except OSError as exc:
            raise PatchlensError(f"{host}:{port}: cannot listen ({exc.strerror or exc})") from None
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The model's URL, the spec a client passes to ``load_model``."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/v2/models/{self.name}"

    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> ModelServer:
        """Serve from a background thread (tests, benchmarks, notebooks)."""
        self._thread = threading.Thread(target=self.serve_forever, name="patchlens-serve-model", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what each endpoint answers ------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        h, w = self.classifier.input_size
        meta: dict[str, Any] = {
            "name": self.name,
            "versions": ["1"],
            "platform": f"patchlens:{self.classifier.model_id}",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, h, w]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, self.classifier.num_classes or -1]}],
        }
        if self.classifier.labels is not None:  # an extension: OIP has no place for class names
            meta["parameters"] = {"labels": list(self.classifier.labels)}
        return meta

    def _input_tensor(self, request: Any) -> tuple[dict[str, Any], int, str]:
        """The request's one input tensor, its batch size and datatype, checked against the model's input."""
        h, w = self.classifier.input_size
        inputs = request.get("inputs") if isinstance(request, dict) else None
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise RequestError(400, "expected one tensor in 'inputs'")
        tensor = inputs[0]
        shape, datatype = tensor.get("shape"), str(tensor.get("datatype", "")).upper()
        if datatype not in ("FP32", "FP64"):
            raise RequestError(400, f"input datatype {_shown(datatype, 20) if datatype else '(none)'}: this model takes FP32")
        if (not isinstance(shape, list) or len(shape) != 4 or shape[1:] != [3, h, w] or not isinstance(shape[0], int)
                or isinstance(shape[0], bool)):
            raise RequestError(400, f"input shape {_shown(shape)}: expected [N, 3, {h}, {w}]")
        n = shape[0]
        if not 1 <= n <= self.max_batch:
            raise RequestError(400, f"a batch of {_shown(n, 20)} images; this server takes 1 to {self.max_batch}")
        for where in (request, tensor, *[o for o in request.get("outputs") or [] if isinstance(o, dict)]):
            if where.get("parameters") is not None and not isinstance(where.get("parameters"), dict):
                raise RequestError(400, "'parameters' must be an object")
        return tensor, n, datatype

    def infer(self, request: Any, raw: bytes = b"") -> tuple[dict[str, Any], bytes]:
        """The answer to an infer request; ``raw`` holds binary tensor data, if any.

        Returns the JSON answer and, when the client asked for binary outputs,
        the raw scores to send after it (empty otherwise).
        """
        h, w = self.classifier.input_size
        tensor, n, datatype = self._input_tensor(request)
        x = _input_values(tensor, datatype, raw)
        if x.size != n * 3 * h * w:
            raise RequestError(400, f"input data has {x.size} numbers; shape [{n}, 3, {h}, {w}] needs {n * 3 * h * w}")
        if not np.isfinite(x).all():
            raise RequestError(400, "input data holds NaN or infinite values (or numbers too large for FP32)")
        wanted = request.get("outputs") or [{}]
        if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
            raise RequestError(400, "'outputs' must be a list of objects")
        request_id = request.get("id")
        if request_id is not None and (not isinstance(request_id, str) or len(request_id) > 256):
            raise RequestError(400, "'id' must be a string of at most 256 characters")
        binary = bool(_dict(request.get("parameters")).get("binary_data_output")) or any(
            _dict(o.get("parameters")).get("binary_data") for o in wanted
        )
        with self._model_lock:
            try:
                scores = self.classifier(torch.from_numpy(x.reshape(n, 3, h, w)))
            except PatchlensError as exc:
                raise RequestError(500, one_line(str(exc), 300)) from None
            self.requests += 1
            self.images += n
        out = scores.detach().cpu().numpy().astype("<f4")  # activated as the model declares: probabilities or not
        output: dict[str, Any] = {"name": "probabilities", "datatype": "FP32", "shape": list(out.shape)}
        if binary:
            output["parameters"] = {"binary_data_size": out.nbytes}
        else:
            output["data"] = out.ravel().tolist()
        answer: dict[str, Any] = {"model_name": self.name, "model_version": "1", "outputs": [output]}
        if request_id is not None:
            answer["id"] = request_id
        return answer, out.tobytes() if binary else b""

    def admit(self, method: str, path: str, headers: Any) -> None:
        """Refuse a request by its headers alone, before its body is read: Host, Origin, token."""
        refused = self.guard(method, headers.get("Host"), headers.get("Origin")) if self.guard else None
        if refused:
            raise RequestError(*refused)
        if self._expected is not None and path.split("?", 1)[0].rstrip("/") not in OPEN_PATHS:
            given = (headers.get("Authorization") or "").strip().encode("latin-1", "replace")
            if not hmac.compare_digest(given, self._expected):
                raise RequestError(401, "this server needs 'Authorization: Bearer TOKEN' (the token it was started with)")

    def route(self, method: str, path: str, body: bytes | None, json_length: str | None = None) -> tuple[int, Any, bytes]:
        """Status, JSON answer and raw bytes to send after it, for one request."""
        status, answer = self._route(method, path, body, json_length)
        if isinstance(answer, tuple):
            return status, *answer
        return status, answer, b""

    def _route(self, method: str, path: str, body: bytes | None, json_length: str | None) -> tuple[int, Any]:
        path = path.split("?", 1)[0].rstrip("/")
        if method == "GET" and path in ("/v2/health/live", "/v2/health/ready"):
            return 200, {"live": True} if path.endswith("live") else {"ready": True}
        if method == "GET" and path == "/v2":
            return 200, {"name": "patchlens", "version": __version__, "extensions": ["binary_tensor_data"]}
        prefix = "/v2/models/"
        if not path.startswith(prefix):
            raise RequestError(404, f"{path or '/'}: not an endpoint of this server; the model is at {prefix}{self.name}")
        name, _, rest = path[len(prefix) :].partition("/")
        if name != self.name:
            raise RequestError(404, f"model {name!r} not found; this server has {self.name!r}")
        rest = rest.removeprefix("versions/1").strip("/")
        if method == "GET" and rest == "":
            return 200, self.metadata()
        if method == "GET" and rest == "ready":
            return 200, {"name": self.name, "ready": True}
        if method == "GET" and rest == "config":
            return 200, {"name": self.name, "max_batch_size": self.max_batch}
        if method == "POST" and rest == "infer":
            body = body or b""
            try:
                split = len(body) if json_length is None else int(json_length)
                if not 0 <= split <= len(body):
                    raise ValueError(split)
                request = json.loads(body[:split])
            except RecursionError:
                raise RequestError(400, "the request's JSON is nested too deeply") from None
            except ValueError:
                raise RequestError(400, "the request body is not JSON (or Inference-Header-Content-Length is wrong)") from None
            return 200, self.infer(request, body[split:])
        raise RequestError(405 if rest in ("", "ready", "config", "infer") else 404, f"{method} {path}: no such endpoint")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        h, w = self.classifier.input_size
        # JSON writes a float32 in at most ~25 characters; a batch bigger than that is refused unread.
        max_body = self.max_batch * 3 * h * w * 26 + 65536
        # timeout: a connection silent this long (idle, or stalled mid-request) is closed
        return type("Handler", (_Handler,), {"model_server": self, "max_body": max_body, "timeout": self.idle_timeout})


def _input_values(tensor: dict[str, Any], datatype: str, raw: bytes) -> np.ndarray:
    """The input's numbers as float32: from the binary data after the JSON header, or from the JSON ``data``."""
    size = _dict(tensor.get("parameters")).get("binary_data_size")
    if size is not None:
        wire = np.dtype("<f4" if datatype == "FP32" else "<f8")
        if not isinstance(size, int) or isinstance(size, bool) or size != len(raw):
            raise RequestError(400, f"binary_data_size {_shown(size, 20)} but {len(raw)} bytes follow the JSON header")
        if size % wire.itemsize:
            raise RequestError(400, f"{size} bytes of binary data is not a whole number of {datatype} values")
        return np.frombuffer(raw, wire).astype(np.float32)
    try:
        with np.errstate(over="ignore"):  # numbers past FP32's range become inf, refused by the caller
            return np.asarray(tensor.get("data"), dtype=np.float32)
    except (TypeError, ValueError, OverflowError, RecursionError):
        raise RequestError(400, "input data is not an array of numbers") from None


class _Handler(BaseHTTPRequestHandler):
    """One connection's requests to a :class:`ModelServer` (each server makes its own subclass, see ``_handler``)."""

    #: the server whose model answers, and the largest body it reads: set on each server's own subclass
    model_server: ModelServer
    max_body: int

    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection per worker
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server_version = f"patchlens/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request is noise; headers (secrets) are never logged either

    def _answer(self, status: int, payload: Any, raw: bytes = b"", extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw else "application/json")
        self.send_header("Content-Length", str(len(data) + len(raw)))
        if raw:
            self.send_header("Inference-Header-Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")  # say so: a client must not reuse what we are closing
        self.end_headers()
        self.wfile.write(data + raw)

    def _length(self) -> int:
        text = (self.headers.get("Content-Length") or "").strip()
        if not text:
            raise RequestError(411, "a Content-Length header is required")
        if not text.isdigit():
            raise RequestError(400, f"Content-Length {_shown(text, 20)} is not a number of bytes")
        if int(text) > self.max_body:
            raise RequestError(413, f"a body of {int(text)} bytes; this server reads at most {self.max_body}")
        return int(text)

    def _body(self, length: int) -> bytes:
        """The body, read within ``idle_timeout`` seconds in all (a client trickling it is cut off)."""
        deadline = time.monotonic() + self.model_server.idle_timeout
        parts, left = [], length
        while left:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RequestError(408, f"the body did not arrive within {self.model_server.idle_timeout:g}s")
            self.connection.settimeout(remaining)
            chunk = self.rfile.read1(min(left, 1 << 20))
            if not chunk:
                raise ConnectionResetError("the client closed the connection mid-body")
            parts.append(chunk)
            left -= len(chunk)
        self.connection.settimeout(self.model_server.idle_timeout)
        return b"".join(parts)

    def _serve(self, method: str) -> None:
        cost, slot = 0, False
        body: bytes | None = None
        try:
            self.model_server.admit(method, self.path, self.headers)
            if method == "POST":
                length = self._length()
                if not self.model_server._slots.acquire(blocking=False):
                    raise RequestError(503, f"busy: {self.model_server.queue} requests already running or waiting")
                slot = True
                json_part = self.headers.get("Inference-Header-Content-Length")
                json_bytes = length if json_part is None or not json_part.strip().isdigit() else min(length, int(json_part))
                cost = json_bytes * JSON_COST + (length - json_bytes) * BINARY_COST
                if not self.model_server.memory.take(cost):
                    cost = 0
                    raise RequestError(503, "busy: the requests in flight already use this server's memory budget")
                body = self._body(length)
            status, payload, raw = self.model_server.route(method, self.path, body, self.headers.get("Inference-Header-Content-Length"))
            self._answer(status, payload, raw)
        except RequestError as exc:
            if exc.status in (408, 411, 413) or (method == "POST" and body is None):
                self.close_connection = True  # the unread body would be taken for the next request
            extra = {"Retry-After": "1"} if exc.status == 503 else {}
            if exc.status == 401:
                extra["WWW-Authenticate"] = "Bearer"
            self._answer(exc.status, {"error": str(exc)}, extra=extra)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client left or stalled; nothing to tell it
        except Exception as exc:  # noqa: BLE001  a bug of ours must not take the server down, nor echo the request
            self.close_connection = True
            self._answer(500, {"error": f"internal error ({type(exc).__name__}); the request was not scored"})
        finally:
            if cost:
                self.model_server.memory.give(cost)
            if slot:
                self.model_server._slots.release()

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")
