"""The ``patchlens`` command. Each subcommand lives in its own module here.

A module that defines ``register(subparsers, argv)`` is found automatically;
``register`` adds its parser and sets ``run=function(args) -> exit code``.
The CLI calls only the public API; a :class:`PatchlensError` becomes a one-line
message, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from .._version import __version__
from ..errors import PatchlensError


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchlens",
        description="See which parts of an image drive a classifier's decision.",
        epilog="Run 'patchlens COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"patchlens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub, list(argv))
    return parser


def error(message: str) -> None:
    print(f"patchlens: error: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        from ._checks import positive_batch_size

        positive_batch_size(getattr(args, "batch_size", None))  # every command that runs a model has it
        return int(args.run(args) or 0)
    except PatchlensError as exc:
        error(str(exc))
        return 2
    except KeyboardInterrupt:
        error("interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
