"""Secrets (header values, a URL's query) kept out of every message: one scrubbing function.

Whatever a server sends back can quote what it was sent: an ``Authorization``
header echoed in a 401 body, an HTML error page, a lower-cased log line, a
token cut short by the server itself. Every message that can carry a
server's answer or a user's header therefore goes through :meth:`Secrets.quote`,
which scrubs the *whole* text first and only then shortens it to one line;
cutting first would leave the start of a token that ran past the cut.

Scrubbing is case-insensitive and also removes any stretch of
:data:`FRAGMENT` or more characters of a secret word (a server that prints
only the first 12 characters of a token, or a token split by our own cut).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: the shortest run of a secret's characters that is removed on its own
FRAGMENT = 6
#: what stands where a secret was
REDACTED = "<redacted>"


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line, cut to ``limit`` characters. Only for text that holds no secret:
    anything a server sent goes through :meth:`Secrets.quote` instead.
    """
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Secrets:
    """The values that must never be shown, and the one function that hides them."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        # The whole value and its words ("Bearer", then the token): a server may echo either.
        whole = {v.strip().lower() for v in values if len(v.strip()) >= 4}
        words = {w.lower() for v in whole for w in v.split() if len(w) >= FRAGMENT and w not in _SCHEMES}
        self._exact = sorted(whole | words, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in self._exact), re.IGNORECASE) if self._exact else None
        # Every FRAGMENT-long piece of every secret word: a partial echo is found by its pieces.
        self._pieces = {w[i : i + FRAGMENT] for w in words for i in range(len(w) - FRAGMENT + 1)}

    def __bool__(self) -> bool:
        return bool(self._exact)

    def __repr__(self) -> str:  # never the values
        return f"Secrets({len(self._exact)} value(s))"

    def scrub(self, text: str) -> str:
        """``text`` with every secret, whole or in part, in any case, replaced by ``<redacted>``."""
        if self._pattern is None or not text:
            return text
        text = self._pattern.sub(REDACTED, text)
        lower = text.lower()
        hidden = bytearray(len(text))
        for i in range(len(text) - FRAGMENT + 1):
            if lower[i : i + FRAGMENT] in self._pieces:
                hidden[i : i + FRAGMENT] = b"\1" * FRAGMENT
        if not any(hidden):
            return text
        out: list[str] = []
        for i, ch in enumerate(text):
            if not hidden[i]:
                out.append(ch)
            elif i == 0 or not hidden[i - 1]:
                out.append(REDACTED)
        return "".join(out)

    def quote(self, text: object, limit: int = 200) -> str:
        """What a server (or a user's header) said, scrubbed, then on one line of at most ``limit`` characters.

        Scrubbing looks at a window well past the cut (``4 * limit`` characters
        plus the longest secret twice), so a secret that straddles the cut is
        still found whole; a body of megabytes is not scanned to its end.
        """
        text = str(text)
        window = 4 * limit + 2 * max((len(s) for s in self._exact), default=0) + 64
        if len(text) > window:
            text = " ".join(text[: 4 * window].split())[:window]  # its end is far past what is shown
        return one_line(self.scrub(text), limit)


#: authorization schemes: words of a header value that are no secret on their own
_SCHEMES = frozenset({"bearer", "basic", "digest", "token", "apikey"})
