"""``patchlens cache info|clear``: the exported models patchlens keeps outside the project."""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLES = """examples:
  patchlens cache info       the folder, each export with its size and last use, the total and the bound
  patchlens cache clear      remove every export (the next run of each model exports it again)

The folder is $PATCHLENS_CACHE/onnx (default ~/.cache/patchlens/onnx). It is bounded by
$PATCHLENS_CACHE_MAX (default 2G): after each new export the least recently used
exports are removed until it fits.
"""

#: the commands this module adds and their one-line help (read without importing this module: cli/_help.py)
COMMANDS = {"cache": "show or empty the cache of exported models (cache info, cache clear)"}


def register(sub: Any, _argv: list[str]) -> None:
    p = sub.add_parser(
        "cache",
        help=COMMANDS["cache"],
        description="The ONNX exports that --runtime auto keeps between runs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("info", help="what the cache holds and its bound").set_defaults(run=run_info)
    actions.add_parser("clear", help="remove every cached export").set_defaults(run=run_clear)


def _mb(size: int) -> str:
    return f"{size / 1024**2:,.1f} MB"


def run_info(_args: argparse.Namespace) -> int:
    from ..models import export_cache as cache

    found = cache.entries()
    others = cache.other_files()
    total = sum(e.size for e in found) + sum(f.stat().st_size for f in others if f.exists())
    print(f"{cache.folder()}: {len(found)} export(s), {_mb(total)} of at most {_mb(cache.limit())} (${cache.LIMIT_ENV})")
    for entry in reversed(found):  # most recently used first
        print(f"  {entry.name}  {_mb(entry.size)}  used {cache.age(entry.last_used)}")
    if others:
        print(f"  and {len(others)} small record(s) ({_mb(sum(f.stat().st_size for f in others if f.exists()))})")
    return 0


def run_clear(_args: argparse.Namespace) -> int:
    from ..models import export_cache as cache

    count, size = cache.clear()
    print(f"{cache.folder()}: removed {count} file(s), {_mb(size)}")
    return 0
