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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.client import HTTPMessage
from typing import Any

import numpy as np

from ...errors import ModelError
from ..detections import looks_like_detections
from .http import HttpClient, one_line

#: OIP datatypes we can send, and the numpy type of their data.
FLOAT_TYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16}
INT_TYPES = {"UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64}
#: byte layout of binary tensors (the binary_tensor_data extension: little-endian, row-major).
WIRE_TYPES = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "UINT8": "u1", "INT32": "<i4", "INT64": "<i8"}
#: the header that says where the JSON part of a binary-extension body ends.
JSON_LENGTH = "Inference-Header-Content-Length"


@dataclass
class Layout:
    """What a codec learned about the model; None where the server did not say."""

    input_size: tuple[int, int] | None = None
    labels: list[str] | None = None
    max_batch: int | None = None


def as_scores(data: Any, n: int, where: str, what: str) -> np.ndarray:
    """``data`` (nested or flat numbers) as float32 ``(n, C)``, or a one-line error saying why not."""
    try:
        arr = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError):
        raise ModelError(f"{where}: {what} is not an array of numbers") from None
    if arr.ndim == 0 or arr.size == 0 or arr.shape[0] != n or arr.size % n:
        raise ModelError(f"{where}: {what} has shape {list(arr.shape)} for a batch of {n}; expected [{n}, classes]")
    return arr.reshape(n, -1)


class Protocol:
    """A codec. ``infer_path`` is appended to the model's URL for scoring."""

    name = "protocol"
    infer_path = ""

    def describe(self, client: HttpClient) -> Layout:
        return Layout()

    def request(self, batch: np.ndarray) -> Any:
        """The JSON body for ``batch``."""
        raise NotImplementedError

    def scores(self, answer: Any, n: int, where: str) -> np.ndarray:
        """Scores ``(n, C)`` from the decoded JSON answer."""
        raise NotImplementedError

    # A codec that sends raw bytes (OIP's binary tensors) overrides these two.
    def body(self, batch: np.ndarray) -> tuple[bytes, dict[str, str]]:
        """Request body and any extra headers."""
        return json.dumps(self.request(batch), separators=(",", ":")).encode(), {}

    def read(self, data: bytes, headers: HTTPMessage, n: int, client: HttpClient) -> np.ndarray:
        return self.scores(client.decode(data, self.infer_path), n, client.url)


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

    def describe(self, client: HttpClient) -> Layout:
        where = client.url
        meta = client.call("GET")
        if not isinstance(meta, dict) or not isinstance(meta.get("inputs"), list) or not meta["inputs"]:
            raise ModelError(f"{where}: the model's metadata names no inputs (is this an Open Inference Protocol v2 model URL?)")
        spec = self._pick(meta["inputs"], self.input_name, "input", where)
        self.input_name = spec["name"]
        self.datatype = str(spec.get("datatype", "FP32")).upper()
        if self.datatype not in FLOAT_TYPES and self.datatype not in INT_TYPES:
            raise ModelError(f"{where}: input {self.input_name!r} has datatype {self.datatype}; patchlens sends FP16/32/64 or integer pixels")
        shape = list(spec.get("shape") or [])
        if len(shape) == 3:  # no batch axis stated
            shape = [-1, *shape]
        if len(shape) != 4 or 3 not in (shape[1], shape[3]):
            raise ModelError(f"{where}: input {self.input_name!r} has shape {shape}; expected [-1, 3, H, W] or [-1, H, W, 3]")
        self.channels_last = shape[1] != 3
        h, w = (shape[1], shape[2]) if self.channels_last else (shape[2], shape[3])
        outputs = meta.get("outputs") or []
        if self.output_name is None and len(outputs) > 1:
            names = ", ".join(str(o.get("name")) for o in outputs)
            raise ModelError(f"{where}: the model has outputs {names}; choose one with output=NAME")
        if outputs:
            self.output_name = self._pick(outputs, self.output_name, "output", where)["name"]
        params = meta.get("parameters") or {}
        labels = params.get("labels") if isinstance(params, dict) else None
        layout = Layout(
            input_size=(int(h), int(w)) if h > 0 and w > 0 else None,
            labels=[str(x) for x in labels] if isinstance(labels, list) else None,
        )
        if self.binary is None:
            self.binary = "binary_tensor_data" in self._extensions(client)
        try:  # Triton (and serve-model) state a largest batch at .../config; others answer 404.
            config = client.call("GET", "/config")
            size = config.get("max_batch_size") if isinstance(config, dict) else None
            layout.max_batch = int(size) if isinstance(size, int) and size > 0 else None
        except ModelError:
            pass
        return layout

    @staticmethod
    def _extensions(client: HttpClient) -> list[str]:
        """The server's extensions, from its metadata at ``.../v2`` (JSON floats cost ~1 us each; raw bytes nothing)."""
        root = client.base_path[: client.base_path.rfind("/v2/models/")] + "/v2"
        try:
            meta = client.call("GET", root, absolute=True)
        except ModelError:
            return []
        found = meta.get("extensions") if isinstance(meta, dict) else None
        return [str(e) for e in found] if isinstance(found, list) else []

    @staticmethod
    def _pick(specs: list[Any], name: str | None, kind: str, where: str) -> dict[str, Any]:
        if name is None:
            return specs[0]
        for spec in specs:
            if isinstance(spec, dict) and spec.get("name") == name:
                return spec
        names = ", ".join(str(s.get("name")) for s in specs if isinstance(s, dict))
        raise ModelError(f"{where}: no {kind} named {name!r}; the model has {names}")

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
        out: dict[str, Any] = {"inputs": [tensor]}
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
        try:
            split = int(length)
        except ValueError:
            raise ModelError(f"{client.url}: {JSON_LENGTH}: {length!r} is not a length") from None
        answer = client.decode(data[:split], self.infer_path)
        offset = split
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        for output in outputs if isinstance(outputs, list) else []:
            size = (output.get("parameters") or {}).get("binary_data_size") if isinstance(output, dict) else None
            if size is None:
                continue
            dtype = WIRE_TYPES.get(str(output.get("datatype", "")).upper())
            if dtype is None or offset + int(size) > len(data) or int(size) % np.dtype(dtype).itemsize:
                raise ModelError(f"{client.url}: binary output {output.get('name')!r} does not match its datatype or the body's length")
            output["data"] = np.frombuffer(data, dtype, int(size) // np.dtype(dtype).itemsize, offset).tolist()
            offset += int(size)
        return self.scores(answer, n, client.url)

    def scores(self, answer: Any, n: int, where: str) -> np.ndarray:
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        if not isinstance(outputs, list) or not outputs:
            raise ModelError(f"{where}: the answer has no 'outputs' (got {one_line(str(answer), 80)!r})")
        chosen = outputs[0] if self.output_name is None else self._pick(outputs, self.output_name, "output", where)
        data = chosen.get("data") if isinstance(chosen, dict) else None
        shape = chosen.get("shape") if isinstance(chosen, dict) else None
        arr = np.asarray(data if data is not None else [], dtype=np.float32)
        if isinstance(shape, list) and arr.ndim == 1 and arr.size == int(np.prod(shape)) and len(shape) > 1:
            arr = arr.reshape(shape)  # data may come flat (row-major) with its shape beside it
        return as_scores(arr, n, where, f"output {chosen.get('name')!r}")


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
        return Layout()

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

    def scores(self, answer: Any, n: int, where: str) -> np.ndarray:
        rows = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(rows, list):
            raise ModelError(f"{where}: the answer has no 'predictions' list (got {one_line(str(answer), 80)!r})")
        if self.output_name is not None:
            try:
                rows = [row[self.output_name] for row in rows]
            except (KeyError, TypeError):
                raise ModelError(f"{where}: a prediction has no key {self.output_name!r}") from None
        elif rows and isinstance(rows[0], dict):
            raise ModelError(f"{where}: predictions are objects with keys {sorted(rows[0])}; choose one with output=KEY")
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

    def scores(self, answer: Any, n: int, where: str) -> np.ndarray:
        try:
            rows = self.decode(answer)
        except Exception as exc:  # noqa: BLE001 - any failure of the user's decode() becomes one line
            raise ModelError(f"{where}: decode() raised {type(exc).__name__}: {one_line(str(exc), 120)}") from None
        if looks_like_detections(rows):  # a detector's answers, one dict per image: the adapter checks them
            if len(rows) != n:
                raise ModelError(f"{where}: decode() returned {len(rows)} detection dicts for a batch of {n}")
            return rows  # type: ignore[no-any-return]
        return as_scores(rows, n, where, "decode()'s scores")
