"""Who may talk to the server: a Host-header allowlist and a same-origin rule for writes.

A server on 127.0.0.1 is still reachable from any web page the user opens:
through DNS rebinding (``evil.example`` re-pointed at 127.0.0.1 after the page
loaded, so the browser sends ``Host: evil.example``) or through a plain
cross-origin form post. Refusing unknown Host names stops the first; refusing
writes whose ``Origin`` is not this server stops the second. Requests without
an Origin (curl, scripts) are not from a browser page and are let through.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

#: the names a loopback server is reached by
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")

_WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def host_name(netloc: str) -> str:
    """``"127.0.0.1:8000"`` -> ``"127.0.0.1"``, ``"[::1]:80"`` -> ``"::1"``, lower-cased."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1:].split("]", 1)[0]
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def refusal(method: str, host: str | None, origin: str | None, allowed: Iterable[str]) -> tuple[int, str] | None:
    """``(status, reason)`` when the request must be refused, else None."""
    names = {h.lower() for h in allowed}
    if "*" not in names and (not host or host_name(host) not in names):
        shown = (host or "(none)")[:100]
        return 400, f"Host {shown!r} is not one this server answers to ({', '.join(sorted(names))}); see --allowed-hosts"
    if method.upper() in _WRITES and origin is not None:
        parts = urlsplit(origin) if origin != "null" else None
        if parts is None or not parts.netloc or parts.netloc.lower() != (host or "").strip().lower():
            return 403, f"cross-origin request from {origin[:100]!r} refused: only this server's own page may change it"
    return None
