"""One HTTP/JSON client for remote models: timeouts, retries with back-off, Retry-After.

Standard library only (``http.client``), so explaining a remote model needs
no extra install. One keep-alive connection per worker thread: the
:class:`~patchlens.models.remote.classifier.RemoteClassifier` runs several
requests in flight from a thread pool, and ``http.client`` connections are
not thread-safe.

Header values are secrets (``Authorization: Bearer ...``): they are kept in
a private attribute, never formatted into a message, and scrubbed from any
text the server sends back before it reaches an error.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from ...errors import ModelError

#: statuses worth another try: the server is busy, restarting or overloaded.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: errors of the connection itself (refused, reset, dropped mid-answer, stalled).
NETWORK_ERRORS = (ConnectionError, http.client.HTTPException, socket.timeout, TimeoutError, OSError)


@dataclass(frozen=True)
class NetworkOptions:
    """How patient the client is. Times in seconds."""

    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    #: further tries after the first, on connection errors, timeouts, 429 and 5xx.
    retries: int = 5
    #: first back-off wait; doubled on each retry, times a random jitter in [0.5, 1.5).
    backoff: float = 0.5
    #: longest single wait, a server's Retry-After included.
    max_wait: float = 30.0


@dataclass
class Traffic:
    """What the client has done so far, for progress lines and reports."""

    requests: int = 0
    retries: int = 0
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown_url(url: str) -> str:
    """The URL without user:password or query string, both of which may hold secrets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (a number of seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class HttpClient:
    """JSON over HTTP to one server, with the patience set in :class:`NetworkOptions`."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        options: NetworkOptions = NetworkOptions(),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelError(f"{shown_url(url)}: not an http:// or https:// URL with a host")
        self.url = shown_url(url)
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._query = f"?{parts.query}" if parts.query else ""
        self.base_path = parts.path.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json", **dict(headers or {})}
        # The whole value and its words ("Bearer", then the token): a server may echo either.
        values = list((headers or {}).values())
        self._secrets = sorted({v for v in values if len(v) >= 4} | {w for v in values for w in v.split() if len(w) >= 8}, key=len, reverse=True)
        self.options = options
        self.traffic = Traffic()
        self._sleep = sleep  # tests pass their own to see the waits without timing anything
        self._local = threading.local()
        self._jitter = random.Random()

    def __repr__(self) -> str:  # never the headers
        return f"HttpClient({self.url!r}, {len(self._headers) - 2} extra header(s))"

    # -- one try -----------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.options.connect_timeout)
            conn.connect()
            assert conn.sock is not None
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small requests go out at once
            conn.sock.settimeout(self.options.read_timeout)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _once(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = self._connection()
        try:
            conn.request(method, path + self._query, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
        except BaseException:
            self._drop_connection()  # a half-used connection cannot be reused
            raise
        if answer.will_close:
            self._drop_connection()
        return answer.status, answer.msg, data

    # -- with retries --------------------------------------------------------------
    def call(self, method: str, path: str = "", payload: Any = None, *, absolute: bool = False) -> Any:
        """``method`` on ``base_path + path`` (or on ``path`` itself); the decoded JSON answer, after any retries."""
        body = None if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        _, data = self.exchange(method, path, body, absolute=absolute)
        return self.decode(data, path)

    def exchange(
        self, method: str, path: str = "", body: bytes | None = None, headers: Mapping[str, str] | None = None, *, absolute: bool = False
    ) -> tuple[http.client.HTTPMessage, bytes]:
        """One request, retried until it gets a 2xx/3xx answer: that answer's headers and body.

        A 4xx other than 429 is an error at once, naming URL, status and the
        server's message; connection errors, timeouts, 429 and 5xx are retried.
        """
        target = path if absolute else self.base_path + path
        netloc = self._host + (f":{self._port}" if self._port else "")
        where = f"{self._scheme}://{netloc}{path}" if absolute else self.url + path
        sent = {**self._headers, **(headers or {})}
        tries = self.options.retries + 1
        problem = ""
        for attempt in range(tries):
            if attempt:
                self.traffic.add(retries=1)
            self.traffic.add(requests=1, in_flight=1)
            try:
                status, answer_headers, data = self._once(method, target, body, sent)
            except NETWORK_ERRORS as exc:
                problem = self._describe(exc)
                wait = None
            else:
                if status < 400:
                    return answer_headers, data
                message = self._server_message(data)
                if status not in RETRY_STATUSES:
                    raise ModelError(f"{where}: HTTP {status}: {message}")
                problem, wait = f"HTTP {status}: {message}", retry_after(answer_headers.get("Retry-After"))
            finally:
                self.traffic.add(in_flight=-1)
            if attempt + 1 < tries:
                self._sleep(self._wait(attempt, wait))
        raise ModelError(f"{where}: {problem} (gave up after {tries} tries)")

    def _wait(self, attempt: int, server_says: float | None) -> float:
        if server_says is not None:
            return min(server_says, self.options.max_wait)
        return min(self.options.backoff * 2**attempt * self._jitter.uniform(0.5, 1.5), self.options.max_wait)

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return f"no answer within {self.options.read_timeout:g}s"
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused (is the server running?)"
        if isinstance(exc, http.client.RemoteDisconnected):
            return "the server closed the connection without answering"
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve host {self._host}"
        return self._scrub(one_line(f"{type(exc).__name__}: {exc}"))

    def decode(self, data: bytes, path: str = "") -> Any:
        """A JSON answer, or a one-line error quoting the start of what came instead."""
        where = self.url + path
        try:
            return json.loads(data)
        except ValueError:
            shown = self._scrub(one_line(data.decode("utf-8", "replace"), 60))
            raise ModelError(f"{where}: the server's answer is not JSON: {shown!r}") from None

    def _server_message(self, data: bytes) -> str:
        """The server's own words: the ``error`` field of a JSON body (OIP, KServe), else its text."""
        text = data.decode("utf-8", "replace")
        try:
            decoded = json.loads(text)
            if isinstance(decoded, dict):
                text = str(decoded.get("error") or decoded.get("detail") or decoded.get("message") or text)
        except ValueError:
            pass
        return self._scrub(one_line(text)) or "(no message)"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def close(self) -> None:
        self._drop_connection()
