r"""File names as the file system has them, and as a line of text can show them.

On POSIX a file name is bytes; Python decodes the bytes that are not UTF-8 to
lone surrogates (``b"caf\xe9.png"`` becomes ``"caf\udce9.png"``), which open
the file again but cannot be written as UTF-8: printing one to a UTF-8 terminal,
a JSON file or a Parquet string column raises ``UnicodeEncodeError``. Messages
show :func:`printable` names; the batch store keeps the bytes (see
:mod:`patchlens.batch.store`).
"""

from __future__ import annotations


def printable(name: str) -> str:
    r"""``name`` as valid UTF-8 text: undecodable bytes shown as ``\xNN``, everything else unchanged."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        raw = name.encode("utf-8", "surrogateescape")  # the bytes the file system gave
    except UnicodeEncodeError:  # a surrogate that did not come from a file name
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def is_printable(name: str) -> bool:
    """True when ``name`` can be written as UTF-8 as it is."""
    return printable(name) is name
