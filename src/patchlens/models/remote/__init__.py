"""Models reachable only over the network: ``load_model("http://HOST:PORT/v2/models/NAME")``.

The protocol follows from the URL (``/v2/models/NAME``: Open Inference
Protocol v2; ``/v1/models/NAME``: KServe v1) or from ``protocol=``; any other
JSON API takes ``protocol="json"`` with ``encode``/``decode`` functions.
Headers (``Authorization: Bearer ...``) come from ``headers=`` and from the
environment variable ``PATCHLENS_HEADERS`` (one ``Name: value`` a line), which
keeps a token off the command line, where ``ps`` would show it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...errors import ModelError
from .classifier import RemoteClassifier, ScoresWarning
from .http import HttpClient, NetworkOptions, check_header, shown_url
from .protocols import CustomJson, KServeV1, OipV2, Protocol

__all__ = ["HEADERS_ENV", "NetworkOptions", "RemoteClassifier", "ScoresWarning", "load_remote", "parse_headers"]

HEADERS_ENV = "PATCHLENS_HEADERS"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def parse_headers(lines: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``["Name: value", ...]`` (or a mapping) as a dict; a malformed header is an error that shows only its name.

    Values are stripped of surrounding white space (a token read from a file
    keeps its newline); a line break or control character inside a value is
    refused in one line rather than by ``http.client`` with a traceback that
    quotes the value.
    """
    if lines is None:
        return {}
    pairs = [(str(k), str(v)) for k, v in lines.items()] if isinstance(lines, Mapping) else [_split(line) for line in lines]
    out = {}
    for name, value in pairs:
        name, value = name.strip(), value.strip()
        if not _HEADER_NAME.match(name):
            raise ModelError("header (unreadable name): expected 'Name: value' with a name of letters, digits and -")
        if not value:
            raise ModelError(f"header {name}: expected 'Name: value'; the value is empty")
        check_header(name, value)
        out[name] = value
    return out


def _split(line: str) -> tuple[str, str]:
    name, sep, value = str(line).partition(":")
    if not sep or not _HEADER_NAME.match(name.strip()) or not value.strip():
        shown = name.strip() if _HEADER_NAME.match(name.strip()) else "(unreadable name)"
        raise ModelError(f"header {shown}: expected 'Name: value' (the value is not shown: it may be a secret)")
    return name, value


def _protocol_for(url: str, protocol: str | None, options: dict[str, Any]) -> tuple[Protocol, str]:
    """The codec, and the model's base URL (the one ``GET`` describes it at)."""
    path = re.sub(r"/+$", "", url.split("?", 1)[0])
    if protocol is None:
        if re.search(r"/v2/models/[^/]+(/versions/[^/]+)?(/infer)?$", path):
            protocol = "oip-v2"
        elif re.search(r"/v1/models/[^/]+(:predict)?$", path):
            protocol = "kserve-v1"
        else:
            raise ModelError(
                f"{shown_url(url)}: cannot tell the protocol from the URL; use .../v2/models/NAME, .../v1/models/NAME "
                "or protocol='json' with encode= and decode="
            )
    codecs: dict[str, tuple[type[Protocol], tuple[str, ...], str]] = {
        "oip-v2": (OipV2, ("input", "output", "mean", "std", "binary"), re.sub(r"/infer$", "", url.rstrip("/"))),
        "kserve-v1": (KServeV1, ("image_format", "scale", "output"), re.sub(r":predict$", "", url.rstrip("/"))),
        "json": (CustomJson, ("encode", "decode"), url),
    }
    if protocol in codecs:
        cls, accepted, base = codecs[protocol]
        return cls(**{k: options.pop(k) for k in accepted if k in options}), base
    raise ModelError(f"protocol={protocol!r}: use oip-v2, kserve-v1 or json")


def load_remote(
    url: str,
    *,
    protocol: str | None = None,
    headers: Sequence[str] | Mapping[str, str] | None = None,
    in_flight: int = 4,
    request_batch: int | None = None,
    max_queries: int | None = None,
    connect_timeout: float = 5.0,
    timeout: float = 60.0,
    retries: int = 5,
    backoff: float = 0.5,
    max_wait: float = 30.0,
    input_size: int | tuple[int, int] | None = None,
    labels: Sequence[str] | None = None,
    activation: str = "auto",
    softmax: bool | None = None,
    progress: bool = False,
    device: Any = "cpu",
    sleep: Callable[[float], None] | None = None,
    kind: str | None = None,
    min_score: float = 0.5,
    **codec_options: Any,
) -> RemoteClassifier:
    """A :class:`RemoteClassifier` for the model at ``url``.

    Args:
        url: the model's address (an OIP v2 model URL, a KServe v1 ``:predict`` URL, or any JSON API).
        protocol: ``"oip-v2"``, ``"kserve-v1"`` or ``"json"``; None reads it from the URL.
        headers: ``["Name: value", ...]`` or a mapping; added to those in ``$PATCHLENS_HEADERS``.
        in_flight: requests sent at the same time.
        request_batch: images per request (None: the server's max batch, else 8).
        max_queries: most images ever sent; past it the explanation stops with
            :class:`~patchlens.errors.QueryBudgetError`.
        connect_timeout: seconds to connect.
        timeout: seconds to wait for an answer.
        retries: further tries on connection errors, 429 and 5xx.
        backoff: the first wait between tries, in seconds (doubling, with jitter).
        max_wait: the longest wait between tries, in seconds.
        input_size: the model's input size, overriding what the server says.
        labels: the class names, overriding what the server says.
        activation: "softmax" or "sigmoid" when the server returns logits (of competing classes, of
            independent labels), "none" or "auto" (none) when it returns probabilities.
        softmax: ``True`` is the older spelling of ``activation="softmax"``.
        progress: show a line with images sent, requests in flight and retries.
        device: where the answers are put (the masks' device).
        sleep: what waits between tries (tests pass a fake clock's).
        kind: "detector" when ``decode`` returns one dict of boxes, scores and labels per image
            (protocol json, where None means "auto": its first answer decides; the other protocols carry class
            scores).
        min_score: for a detector, the score a detection needs for the target ``all``.
        **codec_options: ``input``, ``output``, ``mean``, ``std``, ``binary`` (OIP v2; binary tensors
            are used when the server lists the ``binary_tensor_data`` extension or, without a
            ``max_queries`` budget, when a one-image probe sent both ways gets the same answer;
            ``binary=True``/``False`` decides without asking);
            ``image_format``, ``scale``, ``output`` (KServe v1); ``encode``, ``decode`` (json).
    """
    all_headers = parse_headers([line for line in os.environ.get(HEADERS_ENV, "").splitlines() if line.strip()])
    all_headers.update(parse_headers(headers))
    codec, base = _protocol_for(url, protocol, codec_options)
    if codec_options:
        flags = [f"--{k}" for k in sorted(codec_options) if k in ("binary", "output")]  # those the command line has
        also = f" ({', '.join(flags)})" if flags else ""
        raise ModelError(f"{shown_url(url)}: options {sorted(codec_options)}{also} do not apply to protocol {codec.name}")
    network = NetworkOptions(connect_timeout=connect_timeout, read_timeout=timeout, retries=retries, backoff=backoff, max_wait=max_wait)
    client = HttpClient(base, all_headers, network, **({"sleep": sleep} if sleep else {}))
    return RemoteClassifier(
        client,
        codec,
        input_size=input_size,
        labels=labels,
        activation=activation,
        softmax=softmax,
        in_flight=in_flight,
        request_batch=request_batch,
        max_queries=max_queries,
        progress=progress,
        device=device,
        kind=kind if kind is not None else "auto" if isinstance(codec, CustomJson) else "classifier",
        min_score=min_score,
    )
