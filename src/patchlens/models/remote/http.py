"""One HTTP/JSON client for remote models: deadlines, size limits, retries with back-off, Retry-After.

Standard library only (``http.client``), so explaining a remote model needs
no extra install. One keep-alive connection per worker thread: the
:class:`~patchlens.models.remote.classifier.RemoteClassifier` runs several
requests in flight from a thread pool, and ``http.client`` connections are
not thread-safe.

What a server cannot do to the client:

- hold it past its timeout by trickling bytes: the timeout is a deadline for
  the whole answer, not for each read of the socket;
- fill its memory: an answer longer than the request's limit is refused
  unread (by its Content-Length) or as soon as it passes the limit;
- hide its own error behind a socket error: a kept-alive connection that the
  server closed while idle (uvicorn's keep-alive is 5 s) is reconnected at
  once, not counted as a try, and the last HTTP status with the server's
  message is what the error reports;
- learn or show a secret: header values live in a private attribute and
  every text a server sends goes through :class:`~.secrets.Secrets` before
  it reaches a message.
"""

from __future__ import annotations

import http.client
import io
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ...errors import ModelError, ServerUnavailableError
from .secrets import Secrets, one_line

__all__ = ["HttpClient", "NetworkOptions", "Traffic", "check_header", "one_line", "retry_after", "shown_url"]

#: statuses worth another try: the server is busy, restarting or overloaded.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: a 500 is most often the server's own bug, the same on every try: one more try, not the full patience.
RETRIES_ON_500 = 1
#: errors of the connection itself (refused, reset, dropped mid-answer, stalled).
NETWORK_ERRORS = (ConnectionError, http.client.HTTPException, socket.timeout, TimeoutError, OSError)
#: largest answer to a GET (model metadata, with labels for 100,000 classes, is ~2 MB).
METADATA_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True)
class NetworkOptions:
    """How patient the client is. Times in seconds."""

    connect_timeout: float = 5.0
    #: the whole answer must have arrived this long after the request went out.
    read_timeout: float = 60.0
    #: further tries after the first, on connection errors, timeouts, 429 and 5xx (a 500: one at most).
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
    reconnects: int = 0
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


def shown_url(url: str) -> str:
    """The URL without user:password or query string, both of which may hold secrets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # "host:abc": the port is not a number
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def check_header(name: str, value: str) -> None:
    """Refuse a header that ``http.client`` would refuse later with a traceback quoting it.

    A CR or LF in a value (a token read from a file with its newline, or an
    attempt to smuggle a second header) and other control characters are named
    by the header's name only: the value may be a secret.
    """
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
        what = "a line break" if ("\r" in value or "\n" in value) else "a control character"
        raise ModelError(f"header {name}: the value holds {what}; remove it (the value is not shown: it may be a secret)")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ModelError(f"header {name}: the value has characters HTTP headers cannot carry (the value is not shown)") from None


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
    except (TypeError, ValueError, OverflowError):
        return None


class _StaleConnection(Exception):
    """A kept-alive connection failed before the first byte of the answer: the server had closed it."""


class _Deadline(io.RawIOBase):
    """The socket's reads, each given only the time left until the answer's deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the answer did not arrive in time")
        self._sock.settimeout(left)
        n = self._sock.recv_into(buffer)
        self.received += n
        return n


class _Watched:
    """Stands in for a connection's socket when ``http.client`` builds a response: reads keep the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.raw = _Deadline(sock, deadline)

    def makefile(self, mode: str) -> io.BufferedReader:  # noqa: ARG002  (an interface: other implementations use it)
        return io.BufferedReader(self.raw)


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
        try:
            port = parts.port
        except ValueError:
            raise ModelError(f"{shown_url(url)}: the port is not a number from 0 to 65535") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ModelError(f"{shown_url(url)}: not an http:// or https:// URL with a host")
        for name, value in (headers or {}).items():
            check_header(name, value)
        self.url = shown_url(url)
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = port
        self._query = f"?{parts.query}" if parts.query else ""
        self.base_path = parts.path.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json", **dict(headers or {})}
        # Header values, a password in the URL and the query's values (?api_key=...) are all secrets.
        hidden = [*(headers or {}).values(), parts.password or "", *(v for _, v in parse_qsl(parts.query))]
        self.secrets = Secrets(hidden)
        self.options = options
        self.traffic = Traffic()
        self._sleep = sleep  # tests pass their own to see the waits without timing anything
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()  # every thread's connection, so close() reaches them all
        self._open_lock = threading.Lock()
        self._jitter = random.Random()
        #: why the server was last found unreachable; while set, a request is tried once, not retried
        self.down: str | None = None
        #: the Server header of the last answer ("uvicorn"), when the server says nothing better about itself
        self.server_header: str | None = None

    def __repr__(self) -> str:  # never the headers
        return f"HttpClient({self.url!r}, {len(self._headers) - 2} extra header(s))"

    # -- one try -----------------------------------------------------------------
    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection, and whether it was used before (so the server may have closed it)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=self.options.connect_timeout)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small requests go out at once
        conn.sock.settimeout(self.options.read_timeout)
        self._local.conn = conn
        with self._open_lock:
            self._open.add(conn)
        return conn, False

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            with self._open_lock:
                self._open.discard(conn)

    def _once(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], limit: int
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn, reused = self._connection()
        deadline = time.monotonic() + self.options.read_timeout
        watched: list[_Watched] = []

        def response(sock: socket.socket, *args: Any, **kwargs: Any) -> http.client.HTTPResponse:
            watched.append(_Watched(sock, deadline))
            return http.client.HTTPResponse(watched[-1], *args, **kwargs)  # type: ignore[arg-type]

        conn.response_class = response  # type: ignore[assignment]
        try:
            assert conn.sock is not None
            conn.sock.settimeout(self.options.read_timeout)
            conn.request(method, path + self._query, body=body, headers=headers)
            answer = conn.getresponse()
            data = self._read(answer, limit)
        except NETWORK_ERRORS as exc:
            self._drop_connection()  # a half-used connection cannot be reused
            nothing_came = not watched or watched[0].raw.received == 0
            if reused and nothing_came and not isinstance(exc, (socket.timeout, TimeoutError)):
                raise _StaleConnection() from exc
            raise
        except BaseException:
            self._drop_connection()
            raise
        if answer.will_close:
            self._drop_connection()
        server = answer.getheader("Server")
        if server:
            self.server_header = self.secrets.quote(server, 60)
        return answer.status, answer.msg, data

    def _read(self, answer: http.client.HTTPResponse, limit: int) -> bytes:
        """The answer's body, refused as soon as it is known to pass ``limit`` bytes."""
        length = answer.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > limit:
            raise _TooLarge(int(length), limit)
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = answer.read(min(1 << 20, limit + 1 - size))
            if not chunk:
                return b"".join(parts)
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                raise _TooLarge(None, limit)

    # -- with retries --------------------------------------------------------------
    def call(self, method: str, path: str = "", payload: Any = None, *, absolute: bool = False) -> Any:
        """``method`` on ``base_path + path`` (or on ``path`` itself); the decoded JSON answer, after any retries."""
        body = None if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        _, data = self.exchange(method, path, body, absolute=absolute)
        return self.decode(data, path)

    def exchange(
        self,
        method: str,
        path: str = "",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        absolute: bool = False,
        limit: int = METADATA_LIMIT,
        retries: int | None = None,
    ) -> tuple[http.client.HTTPMessage, bytes]:
        """One request, retried until it gets a 2xx/3xx answer: that answer's headers and body.

        A 4xx other than 429 is an error at once, naming URL, status and the
        server's message; connection errors, timeouts, 429 and 5xx are retried
        (``retries``: how often, default the options'). When every try failed
        without the server's own error (refused, reset, timed out, 502-504),
        the error is :class:`~patchlens.errors.ServerUnavailableError`.
        """
        target = path if absolute else self.base_path + path
        netloc = self._host + (f":{self._port}" if self._port else "")
        where = f"{self._scheme}://{netloc}{path}" if absolute else self.url + path
        sent = {**self._headers, **(headers or {})}
        if retries is None:
            retries = 0 if self.down else self.options.retries  # a server found gone is asked once, not waited for
        tries = retries + 1
        problem, server_said, gone = "", "", True
        attempt = 0
        while True:
            if attempt:
                self.traffic.add(retries=1)
            attempt += 1
            self.traffic.add(requests=1, in_flight=1)
            wait: float | None = None
            status = 0  # no HTTP answer (yet)
            try:
                try:
                    status, answer_headers, data = self._once(method, target, body, sent, limit)
                except _StaleConnection:
                    self.traffic.add(reconnects=1)  # the server closed it while idle: reconnect, not a try
                    status, answer_headers, data = self._once(method, target, body, sent, limit)
            except _TooLarge as exc:
                raise ModelError(f"{where}: {exc}") from None
            except (NETWORK_ERRORS + (_StaleConnection,)) as exc:
                problem, gone = self._describe(exc.__cause__ if isinstance(exc, _StaleConnection) else exc), True
            else:
                if status < 400:
                    self.down = None
                    return answer_headers, data
                message = self._server_message(data)
                if status not in RETRY_STATUSES:
                    self.down = None
                    raise ModelError(f"{where}: HTTP {status}: {message}")
                problem = server_said = f"HTTP {status}: {message}"
                gone = status != 500  # 502-504 and 429: the server (or what is behind a gateway) is not there for us
                wait = retry_after(answer_headers.get("Retry-After"))
            finally:
                self.traffic.add(in_flight=-1)
            if attempt >= tries or (status == 500 and attempt > RETRIES_ON_500):
                break
            self._sleep(self._wait(attempt - 1, wait))
        said = server_said if server_said and server_said != problem else ""
        message = f"{where}: {problem} (gave up after {attempt} tr{'y' if attempt == 1 else 'ies'}" + (
            f"; the server said earlier: {said})" if said else ")"
        )
        if gone:
            self.down = problem
            raise ServerUnavailableError(message)
        raise ModelError(message)

    def _wait(self, attempt: int, server_says: float | None) -> float:
        if server_says is not None:
            return min(server_says, self.options.max_wait)
        return min(self.options.backoff * 2**attempt * self._jitter.uniform(0.5, 1.5), self.options.max_wait)

    def _describe(self, exc: BaseException | None) -> str:
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return f"no complete answer within {self.options.read_timeout:g}s"
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused (is the server running?)"
        if isinstance(exc, http.client.RemoteDisconnected):
            return "the server closed the connection without answering"
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
            return "the server closed the connection in the middle of the exchange"
        if isinstance(exc, socket.gaierror):
            return f"cannot resolve host {self._host}"
        return self.secrets.quote(f"{type(exc).__name__}: {exc}")

    def decode(self, data: bytes, path: str = "") -> Any:
        """A JSON answer, or a one-line error quoting the start of what came instead."""
        where = self.url + path
        try:
            return json.loads(data)
        except RecursionError:
            raise ModelError(f"{where}: the server's answer is JSON nested too deeply to read") from None
        except ValueError:
            shown = self.secrets.quote(data[:65536].decode("utf-8", "replace"), 60)
            raise ModelError(f"{where}: the server's answer is not JSON: {shown!r}") from None

    def _server_message(self, data: bytes) -> str:
        """The server's own words: the ``error`` field of a JSON body (OIP, KServe), else its text; scrubbed, one line."""
        text = data[:1 << 20].decode("utf-8", "replace")
        try:
            decoded = json.loads(text)
            if isinstance(decoded, dict):
                text = str(decoded.get("error") or decoded.get("detail") or decoded.get("message") or text)
        except (ValueError, RecursionError):
            pass
        if "Traceback (most recent call last)" in text:  # a server in debug mode (MLServer's default): its last line says why
            lines = [line for line in self.secrets.scrub(text[-65536:]).splitlines() if line.strip()]
            text = lines[-1] if lines else text
        return self.secrets.quote(text) or "(no message)"

    def close(self) -> None:
        """Close every thread's connection (the pool's threads each opened one)."""
        with self._open_lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            conn.close()
        self._local = threading.local()


class _TooLarge(Exception):
    def __init__(self, length: int | None, limit: int) -> None:
        size = f"of {length:,} bytes" if length is not None else f"of more than {limit:,} bytes"
        super().__init__(f"the server's answer {size} is over the {limit:,} bytes this request may bring back; refused unread")
