"""Any patchlens Classifier served over the Open Inference Protocol v2 (REST).

Standard library ``ThreadingHTTPServer`` rather than FastAPI: a GPU box then
needs only ``pip install patchlens`` to serve a model, and the load is bound
by the model (one forward at a time, behind a lock), not by connections.
Requests beyond ``queue`` (running or waiting) get 503 with Retry-After, so
a flood is refused quickly instead of piling up memory. Endpoints::

    GET  /v2/health/live   /v2/health/ready   /v2
    GET  /v2/models/NAME   (metadata)   /v2/models/NAME/ready   /v2/models/NAME/config
    POST /v2/models/NAME/infer
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import torch

from ..._version import __version__
from ...errors import PatchlensError
from ..classifier import Classifier


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
    ) -> None:
        if max_batch < 1 or queue < 1:
            raise PatchlensError(f"max_batch={max_batch}, queue={queue}: both must be at least 1")
        self.classifier = classifier
        self.name = name
        self.max_batch = max_batch
        self.queue = queue
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

    def infer(self, request: Any, raw: bytes = b"") -> tuple[dict[str, Any], bytes]:
        """The answer to an infer request; ``raw`` holds binary tensor data, if any.

        Returns the JSON answer and, when the client asked for binary outputs,
        the raw scores to send after it (empty otherwise).
        """
        h, w = self.classifier.input_size
        inputs = request.get("inputs") if isinstance(request, dict) else None
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise RequestError(400, "expected one tensor in 'inputs'")
        tensor = inputs[0]
        shape, datatype = tensor.get("shape"), str(tensor.get("datatype", "")).upper()
        if datatype not in ("FP32", "FP64"):
            raise RequestError(400, f"input datatype {datatype or '(none)'}: this model takes FP32")
        if not isinstance(shape, list) or len(shape) != 4 or shape[1:] != [3, h, w] or not isinstance(shape[0], int):
            raise RequestError(400, f"input shape {shape}: expected [N, 3, {h}, {w}]")
        n = shape[0]
        if not 1 <= n <= self.max_batch:
            raise RequestError(400, f"a batch of {n} images; this server takes 1 to {self.max_batch}")
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if int(size) != len(raw):
                raise RequestError(400, f"binary_data_size {size} but {len(raw)} bytes follow the JSON header")
            x = np.frombuffer(raw, "<f4" if datatype == "FP32" else "<f8").astype(np.float32)
        else:
            try:
                x = np.asarray(tensor.get("data"), dtype=np.float32)
            except (TypeError, ValueError):
                raise RequestError(400, "input data is not an array of numbers") from None
        if x.size != n * 3 * h * w:
            raise RequestError(400, f"input data has {x.size} numbers; shape {shape} needs {n * 3 * h * w}")
        with self._model_lock:
            try:
                scores = self.classifier(torch.from_numpy(x.reshape(n, 3, h, w)))
            except PatchlensError as exc:
                raise RequestError(500, str(exc)) from None
            self.requests += 1
            self.images += n
        out = scores.detach().cpu().numpy().astype("<f4")  # activated as the model declares: probabilities or not
        wanted = request.get("outputs") or [{}]
        binary = bool((request.get("parameters") or {}).get("binary_data_output")) or any(
            (o.get("parameters") or {}).get("binary_data") for o in wanted if isinstance(o, dict)
        )
        output: dict[str, Any] = {"name": "probabilities", "datatype": "FP32", "shape": list(out.shape)}
        if binary:
            output["parameters"] = {"binary_data_size": out.nbytes}
        else:
            output["data"] = out.ravel().tolist()
        answer: dict[str, Any] = {"model_name": self.name, "model_version": "1", "outputs": [output]}
        if "id" in request:
            answer["id"] = request["id"]
        return answer, out.tobytes() if binary else b""

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
                request = json.loads(body[:split])
            except ValueError:
                raise RequestError(400, "the request body is not JSON (or Inference-Header-Content-Length is wrong)") from None
            if not self._slots.acquire(blocking=False):
                raise RequestError(503, f"busy: {self.queue} requests already running or waiting")
            try:
                return 200, self.infer(request, body[split:])
            finally:
                self._slots.release()
        raise RequestError(405 if rest in ("", "ready", "config", "infer") else 404, f"{method} {path}: no such endpoint")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        h, w = self.classifier.input_size
        # JSON writes a float32 in at most ~25 characters; a batch bigger than that is refused unread.
        max_body = server.max_batch * 3 * h * w * 26 + 65536

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection per worker
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
            server_version = f"patchlens/{__version__}"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per request is noise; headers (secrets) are never logged either

            def _answer(self, status: int, payload: Any, raw: bytes = b"", retry_after: str | None = None) -> None:
                data = json.dumps(payload, separators=(",", ":")).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if raw else "application/json")
                self.send_header("Content-Length", str(len(data) + len(raw)))
                if raw:
                    self.send_header("Inference-Header-Content-Length", str(len(data)))
                if retry_after:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(data + raw)

            def _serve(self, method: str) -> None:
                try:
                    body = None
                    if method == "POST":
                        length = int(self.headers.get("Content-Length") or -1)
                        if length < 0:
                            raise RequestError(411, "a Content-Length header is required")
                        if length > max_body:
                            self.close_connection = True
                            raise RequestError(413, f"a body of {length} bytes; this server reads at most {max_body}")
                        body = self.rfile.read(length)
                    status, payload, raw = server.route(method, self.path, body, self.headers.get("Inference-Header-Content-Length"))
                    self._answer(status, payload, raw)
                except RequestError as exc:
                    self._answer(exc.status, {"error": str(exc)}, retry_after="1" if exc.status == 503 else None)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client left; nothing to tell it
                except Exception as exc:  # a bug of ours must not take the server down
                    self._answer(500, {"error": f"{type(exc).__name__}: {exc}"})

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        return Handler
