"""What goes over the wire: one small codec per protocol.

Each codec turns a batch ``(N, 3, H, W)`` of float32 pixels in [0, 1] into a
request body and an answer back into scores ``(N, C)``:

- :class:`OipV2`: the Open Inference Protocol v2 (KServe v2, Triton, MLServer),
  which describes its model, so input size and layout are read from it;
- :class:`KServeV1`: ``{"instances": [...]}`` -> ``{"predictions": [...]}``;
- :class:`CustomJson`: any other JSON API, through two user functions.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.client import HTTPMessage
from typing import Any

import numpy as np

from ...errors import ModelError
from ..detections import looks_like_detections
from .http import HttpClient

#: most classes a remote model may return per image (ImageNet-21k has 21,843); more is refused as malformed.
MAX_CLASSES = 100_000
#: longest side of an input size read from a server's metadata (a stated 10^6 x 10^6 would mean terabytes).
MAX_STATED_SIDE = 4096

#: OIP datatypes we can send, and the numpy type of their data.
FLOAT_TYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16}
INT_TYPES = {"UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64}
#: byte layout of binary tensors (the binary_tensor_data extension: little-endian, row-major).
WIRE_TYPES = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "UINT8": "u1", "INT32": "<i4", "INT64": "<i8"}
#: the header that says where the JSON part of a binary-extension body ends.
JSON_LENGTH = "Inference-Header-Content-Length"
#: what the binary probe found, per (model URL, input size, datatype, layout), for this process's life
_PROBED: dict[tuple[Any, ...], bool] = {}


@dataclass
class Layout:
    """What a codec learned about the model; None where the server did not say."""

    input_size: tuple[int, int] | None = None
    labels: list[str] | None = None
    max_batch: int | None = None
    #: the server's own name and version ("mlserver 1.7.1"), for the records of what ran
    server: str = "unknown server"


def server_identity(client: HttpClient) -> tuple[str, list[str]]:
    """The server's name and version, and its extensions, from its metadata at ``/v2`` (KServe answers it on v1 URLs too)."""
    path = client.base_path
    cut = max(path.rfind("/v2/models/"), path.rfind("/v1/models/"))
    try:
        meta = _dict(client.call("GET", (path[:cut] if cut >= 0 else "") + "/v2", absolute=True))
    except ModelError:
        meta = {}
    found = meta.get("extensions")
    name = " ".join(client.secrets.quote(meta[k], 40) for k in ("name", "version") if isinstance(meta.get(k), str))
    return name or client.server_header or "unknown server", [str(e) for e in found] if isinstance(found, list) else []


def _numbers(data: Any, where: str, what: str) -> np.ndarray:
    """``data`` (nested lists of numbers, or an array already) as float32, or a one-line error."""
    try:
        return np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError, OverflowError, RecursionError):
        raise ModelError(f"{where}: {what} is not an array of numbers") from None


def as_scores(data: Any, n: int, where: str, what: str) -> np.ndarray:
    """``data`` (nested or flat numbers) as float32 ``(n, C)``, or a one-line error saying why not."""
    arr = _numbers(data, where, what)
    if arr.ndim == 0 or arr.size == 0 or arr.shape[0] != n or arr.size % n:
        raise ModelError(f"{where}: {what} has shape {list(arr.shape)[:8]} for a batch of {n}; expected [{n}, classes]")
    arr = arr.reshape(n, -1)
    if arr.shape[1] > MAX_CLASSES:
        raise ModelError(f"{where}: {what} has {arr.shape[1]:,} scores per image; patchlens takes at most {MAX_CLASSES:,} classes")
    return arr


def _dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (a server's optional fields may hold anything)."""
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int | None:
    """A JSON integer (not a bool, not a float, not a string), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Protocol:
    """A codec. ``infer_path`` is appended to the model's URL for scoring."""

    name = "protocol"
    infer_path = ""

    def describe(self, client: HttpClient) -> Layout:  # noqa: ARG002  (an interface: other implementations use it)
        return Layout()

    def settle(self, client: HttpClient, input_size: tuple[int, int]) -> int:  # noqa: ARG002  (an interface: other implementations use it)
        """Choices that need a request to the model (OIP's binary tensors); the images this sent."""
        return 0

    def request(self, batch: np.ndarray) -> Any:
        """The JSON body for ``batch``."""
        raise NotImplementedError

    def scores(self, answer: Any, n: int, client: HttpClient) -> np.ndarray:
        """Scores ``(n, C)`` from the decoded JSON answer (``client``: its URL and its scrubbing of quotes)."""
        raise NotImplementedError

    # A codec that sends raw bytes (OIP's binary tensors) overrides these two.
    def body(self, batch: np.ndarray) -> tuple[bytes, dict[str, str]]:
        """Request body and any extra headers."""
        return json.dumps(self.request(batch), separators=(",", ":")).encode(), {}

    def read(self, data: bytes, headers: HTTPMessage, n: int, client: HttpClient) -> np.ndarray:  # noqa: ARG002  (an interface: other implementations use it)
        return self.scores(client.decode(data, self.infer_path), n, client)


class OipV2(Protocol):
    """Open Inference Protocol v2 at ``.../v2/models/NAME``.

    Reads the model's metadata for the input's name, datatype and shape
    (``[-1, 3, H, W]`` or ``[-1, H, W, 3]``). Float inputs get the [0, 1]
    pixels, normalised with ``mean``/``std`` when given; UINT8 inputs get 0-255.
    """

    name = "oip-v2"
    infer_path = "/infer"

    def __init__(
        self,
        *,
        input: str | None = None,
        output: str | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        binary: bool | None = None,
    ) -> None:
        self.binary = binary  # None: when the server lists the binary_tensor_data extension
        self.input_name = input
        self.output_name = output
        self.mean = None if mean is None else np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        self.std = None if std is None else np.asarray(std, np.float32).reshape(1, 3, 1, 1)
        self.datatype = "FP32"
        self.channels_last = False
        self.advertised = False  # whether the server lists the binary_tensor_data extension

    def describe(self, client: HttpClient) -> Layout:
        where = client.url
        meta = client.call("GET")
        inputs = _dict(meta).get("inputs")
        if not isinstance(inputs, list) or not inputs or not all(isinstance(i, dict) for i in inputs):
            raise ModelError(f"{where}: the model's metadata names no inputs (is this an Open Inference Protocol v2 model URL?)")
        spec = self._pick(inputs, self.input_name, "input", where, client)
        self.input_name = str(spec.get("name") or "input")
        self.datatype = str(spec.get("datatype", "FP32")).upper()
        if self.datatype not in FLOAT_TYPES and self.datatype not in INT_TYPES:
            shown = client.secrets.quote(self.datatype, 40)
            raise ModelError(f"{where}: input {self.input_name!r} has datatype {shown}; patchlens sends FP16/32/64 or integer pixels")
        raw_shape = spec.get("shape")
        shape = [_count(d) for d in raw_shape] if isinstance(raw_shape, list) and len(raw_shape) <= 8 else []
        if len(shape) == 3:  # no batch axis stated
            shape = [-1, *shape]
        if len(shape) != 4 or None in shape or 3 not in (shape[1], shape[3]):
            shown = client.secrets.quote(raw_shape, 60)
            raise ModelError(f"{where}: input {self.input_name!r} has shape {shown}; expected [-1, 3, H, W] or [-1, H, W, 3]")
        self.channels_last = shape[1] != 3
        h, w = (shape[1], shape[2]) if self.channels_last else (shape[2], shape[3])
        assert h is not None and w is not None
        if max(h, w) > MAX_STATED_SIDE:
            raise ModelError(
                f"{where}: the metadata states an input of {h}x{w} pixels, over the {MAX_STATED_SIDE} a side patchlens "
                "takes from a server; give the size with input_size= (--input-size) if the model really takes it"
            )
        outputs = [o for o in meta.get("outputs") or [] if isinstance(o, dict)] if isinstance(meta.get("outputs"), list) else []
        if self.output_name is None and len(outputs) > 1:
            names = client.secrets.quote(", ".join(str(o.get("name")) for o in outputs), 200)
            raise ModelError(f"{where}: the model has outputs {names}; choose one with output=NAME (--output NAME)")
        if outputs:
            self.output_name = str(self._pick(outputs, self.output_name, "output", where, client).get("name"))
        labels = _dict(meta.get("parameters")).get("labels")
        layout = Layout(
            input_size=(h, w) if h > 0 and w > 0 else None,
            labels=[str(x) for x in labels] if isinstance(labels, list) and 0 < len(labels) <= MAX_CLASSES else None,
        )
        layout.server, extensions = server_identity(client)
        self.advertised = "binary_tensor_data" in extensions
        if self.binary is None and self.advertised:
            self.binary = True
        try:  # Triton (and serve-model) state a largest batch at .../config; others answer 404.
            size = _count(_dict(client.call("GET", "/config")).get("max_batch_size"))
            layout.max_batch = size if size is not None and size > 0 else None
        except ModelError:
            pass
        return layout

    def settle(self, client: HttpClient, input_size: tuple[int, int]) -> int:
        """Binary tensors when the server did not say: one grey image sent both ways, kept if both answers agree.

        KServe takes binary tensors without listing the extension; MLServer 1.7
        lists nothing and drops the connection on them. The probe is tried once,
        without retries; what it found is remembered for this server and model.
        """
        if self.binary is not None:
            return 0
        key = (client.url, input_size, self.datatype, self.channels_last)
        if key in _PROBED:
            self.binary = _PROBED[key]
            return 0
        grey = np.full((1, 3, *input_size), 0.5, np.float32)
        try:  # each way once, without retries: a failure only means no binary (the run reports its own errors)
            self.binary = False
            answer_headers, data = client.exchange("POST", self.infer_path, *self.body(grey), retries=0)
            plain = self.read(data, answer_headers, 1, client)
            self.binary = True
            answer_headers, data = client.exchange("POST", self.infer_path, *self.body(grey), retries=0)
            packed = self.read(data, answer_headers, 1, client)
            self.binary = packed.shape == plain.shape and bool(np.allclose(packed, plain, rtol=1e-5, atol=1e-6))
        except ModelError:
            self.binary = False
            client.down = None  # a server that dropped the probe's connection is not gone
        _PROBED[key] = self.binary
        return 2

    @staticmethod
    def _pick(specs: list[Any], name: str | None, kind: str, where: str, client: HttpClient) -> dict[str, Any]:
        if name is None:
            return _dict(specs[0])
        for spec in specs:
            if isinstance(spec, dict) and spec.get("name") == name:
                return spec
        names = client.secrets.quote(", ".join(str(s.get("name")) for s in specs if isinstance(s, dict)), 200)
        raise ModelError(f"{where}: no {kind} named {name!r}; the model has {names or 'none'}")

    def _pixels(self, batch: np.ndarray) -> np.ndarray:
        x = batch
        if self.datatype in INT_TYPES:
            x = np.rint(x * 255.0).clip(0, 255)
        elif self.mean is not None or self.std is not None:
            x = (x - (0 if self.mean is None else self.mean)) / (1 if self.std is None else self.std)
        if self.channels_last:
            x = x.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x, dtype=np.dtype(WIRE_TYPES[self.datatype]))

    def _header(self, x: np.ndarray, data: Any) -> dict[str, Any]:
        tensor = {"name": self.input_name or "input", "shape": list(x.shape), "datatype": self.datatype, **data}
        # an id: KServe models written as its docs show copy it into their answer, and fail when it is missing
        out: dict[str, Any] = {"id": "patchlens", "inputs": [tensor]}
        want = {"parameters": {"binary_data": True}} if self.binary else {}
        if self.output_name:
            out["outputs"] = [{"name": self.output_name, **want}]
        elif self.binary:
            out["parameters"] = {"binary_data_output": True}
        return out

    def request(self, batch: np.ndarray) -> Any:
        x = self._pixels(batch)
        return self._header(x, {"data": x.ravel().tolist()})

    def body(self, batch: np.ndarray) -> tuple[bytes, dict[str, str]]:
        if not self.binary:
            return super().body(batch)
        x = self._pixels(batch)
        header = json.dumps(self._header(x, {"parameters": {"binary_data_size": x.nbytes}}), separators=(",", ":")).encode()
        return header + x.tobytes(), {"Content-Type": "application/octet-stream", JSON_LENGTH: str(len(header))}

    def read(self, data: bytes, headers: HTTPMessage, n: int, client: HttpClient) -> np.ndarray:
        length = headers.get(JSON_LENGTH)
        if length is None:  # the server answered in plain JSON
            return super().read(data, headers, n, client)
        split = _count(int(length)) if length.strip().isdigit() else None
        if split is None or split > len(data):
            shown = client.secrets.quote(length, 40)
            raise ModelError(f"{client.url}: {JSON_LENGTH}: {shown!r} is not a length within the answer's {len(data)} bytes")
        answer = client.decode(data[:split], self.infer_path)
        offset = split
        outputs = _dict(answer).get("outputs")
        for output in outputs if isinstance(outputs, list) else []:
            if not isinstance(output, dict):
                continue
            size = _dict(output.get("parameters")).get("binary_data_size")
            if size is None:
                continue
            dtype = WIRE_TYPES.get(str(output.get("datatype", "")).upper())
            size = _count(size)
            if dtype is None or size is None or size < 0 or offset + size > len(data) or size % np.dtype(dtype).itemsize:
                name = client.secrets.quote(output.get("name"), 40)
                raise ModelError(f"{client.url}: binary output {name!r} does not match its datatype or the body's length")
            output["data"] = np.frombuffer(data, dtype, size // np.dtype(dtype).itemsize, offset)
            offset += size
        return self.scores(answer, n, client)

    def scores(self, answer: Any, n: int, client: HttpClient) -> np.ndarray:
        where = client.url
        outputs = _dict(answer).get("outputs")
        if not isinstance(outputs, list) or not outputs:
            raise ModelError(f"{where}: the answer has no 'outputs' (got {client.secrets.quote(answer, 80)!r})")
        chosen = _dict(outputs[0] if self.output_name is None else self._pick(outputs, self.output_name, "output", where, client))
        what = f"output {client.secrets.quote(chosen.get('name'), 40)!r}"
        arr = _numbers(chosen.get("data", []), where, what)
        shape = chosen.get("shape")
        dims = [_count(d) for d in shape] if isinstance(shape, list) and 1 < len(shape) <= 8 else []
        if arr.ndim == 1 and dims and None not in dims and arr.size == math.prod(dims):  # type: ignore[arg-type]
            arr = arr.reshape(n, -1) if dims[0] == n else arr.reshape(dims[0] or 1, -1)  # flat data, its shape beside it
        return as_scores(arr, n, where, what)

class KServeV1(Protocol):
    """KServe v1 (TF-Serving style) at ``.../v1/models/NAME``, scored at ``:predict``.

    ``image_format="array"`` sends each image as nested ``[H][W][3]`` floats in
    [0, 1] (times ``scale``); ``"png"``/``"jpeg"`` send ``{"image_bytes": {"b64": ...}}``.
    Predictions are rows of scores, or objects whose ``output`` key holds them.
    """

    name = "kserve-v1"
    infer_path = ":predict"

    def __init__(self, *, image_format: str = "array", scale: float = 1.0, output: str | None = None) -> None:
        if image_format not in ("array", "png", "jpeg"):
            raise ModelError(f"image_format={image_format!r}: use array, png or jpeg")
        self.image_format = image_format
        self.scale = scale
        self.output_name = output

    def describe(self, client: HttpClient) -> Layout:
        client.call("GET")  # the model's status: a 404 here is clearer than one at the first image
        return Layout(server=server_identity(client)[0])

    def request(self, batch: np.ndarray) -> Any:
        hwc = batch.transpose(0, 2, 3, 1)
        if self.image_format == "array":
            return {"instances": (hwc * self.scale).tolist()}
        from PIL import Image

        instances = []
        for img in hwc:
            buffer = io.BytesIO()
            Image.fromarray(np.rint(img * 255).clip(0, 255).astype(np.uint8)).save(buffer, format=self.image_format.upper())
            instances.append({"image_bytes": {"b64": base64.b64encode(buffer.getvalue()).decode("ascii")}})
        return {"instances": instances}

    def scores(self, answer: Any, n: int, client: HttpClient) -> np.ndarray:
        where = client.url
        rows = _dict(answer).get("predictions")
        if not isinstance(rows, list):
            raise ModelError(f"{where}: the answer has no 'predictions' list (got {client.secrets.quote(answer, 80)!r})")
        if self.output_name is not None:
            try:
                rows = [row[self.output_name] for row in rows]
            except (KeyError, TypeError):
                raise ModelError(f"{where}: a prediction has no key {self.output_name!r}") from None
        elif rows and isinstance(rows[0], dict):
            keys = client.secrets.quote(", ".join(sorted(rows[0])), 120)
            raise ModelError(f"{where}: predictions are objects with keys {keys}; choose one with output=KEY (--output KEY)")
        return as_scores(rows, n, where, "'predictions'")


class CustomJson(Protocol):
    """Any other JSON API: ``encode(batch) -> body`` and ``decode(answer) -> scores``.

    ``encode`` receives float32 numpy ``(N, H, W, 3)`` in [0, 1] and returns
    something ``json.dumps`` can write; ``decode`` receives the decoded JSON
    answer and returns ``N`` rows of scores, or for an object detector ``N``
    dicts of ``boxes`` (pixels of the encoded images), ``scores`` and ``labels``
    (see :mod:`patchlens.models.detections`), which are passed on as they are.
    """

    name = "json"

    def __init__(self, *, encode: Callable[[np.ndarray], Any], decode: Callable[[Any], Any]) -> None:
        if not callable(encode) or not callable(decode):
            raise ModelError("protocol='json' needs two functions: encode=batch -> body and decode=answer -> scores")
        self.encode = encode
        self.decode = decode

    def request(self, batch: np.ndarray) -> Any:
        return self.encode(np.ascontiguousarray(batch.transpose(0, 2, 3, 1)))

    def scores(self, answer: Any, n: int, client: HttpClient) -> np.ndarray:
        try:
            rows = self.decode(answer)
        except Exception as exc:  # noqa: BLE001 - any failure of the user's decode() becomes one line
            # the exception's text may quote the answer (a KeyError naming a field, a repr of the body)
            raise ModelError(f"{client.url}: decode() raised {type(exc).__name__}: {client.secrets.quote(exc, 120)}") from None
        if looks_like_detections(rows):  # a detector's answers, one dict per image: the adapter checks them
            if len(rows) != n:
                raise ModelError(f"{client.url}: decode() returned {len(rows)} detection dicts for a batch of {n}")
            return rows
        return as_scores(rows, n, client.url, "decode()'s scores")
