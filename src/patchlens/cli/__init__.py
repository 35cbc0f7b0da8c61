"""The ``patchlens`` command. Each subcommand lives in its own module here.

A module that defines ``register(subparsers, argv)`` is found automatically;
``register`` adds its parser and sets ``run=function(args) -> exit code``.
The CLI calls only the public API; a :class:`PatchlensError` becomes a one-line
message, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from .._version import __version__
from ..errors import PatchlensError


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    names = sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))
    # A command run from its own module (explain.py runs "explain") needs only that module:
    # the others import metrics, scipy, the audit and the batch store, a second or more on
    # a busy 2-core CPU. Anything else (no command, --help, a name no module has) registers all.
    command = argv[0] if argv and not argv[0].startswith("-") else None
    if command and command.replace("-", "_") in names:
        parser, sub = _bare_parser()
        if _register(sub, command.replace("-", "_"), argv) and command in sub.choices:
            return parser
    parser, sub = _bare_parser()
    for name in names:
        _register(sub, name, argv)
    return parser


def _bare_parser() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(
        prog="patchlens",
        description="See which parts of an image drive a classifier's decision.",
        epilog="Run 'patchlens COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"patchlens {__version__}")
    return parser, parser.add_subparsers(dest="command", metavar="COMMAND")


def _register(sub: Any, name: str, argv: Sequence[str]) -> bool:
    module = importlib.import_module(f"{__name__}.{name}")
    if not hasattr(module, "register"):
        return False
    module.register(sub, list(argv))
    return True


def _unknown_option(parser: argparse.ArgumentParser, args: argparse.Namespace, given: str) -> str:
    """One line for an option the command does not have, with the closest it does have."""
    import difflib

    command = getattr(args, "command", None)
    subparsers = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    sub = subparsers.choices.get(command) if subparsers is not None and command else None
    if sub is None:
        return f"{given}: not an option of patchlens; 'patchlens --help' lists the commands"
    options = [o for o in sub._option_string_actions if o.startswith("--")]
    close = difflib.get_close_matches(given.split("=")[0], options, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{given}: not an option of patchlens {command}{hint}; 'patchlens {command} --help' lists them"


def error(message: str) -> None:
    print(f"patchlens: error: {message}", file=sys.stderr)


def _one_line_warnings() -> None:
    """Patchlens's own warnings print as one line (``patchlens: warning: ...``), not with a source line under them."""
    plain = warnings.showwarning

    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if not category.__module__.startswith("patchlens"):
            return plain(message, category, filename, lineno, file, line)
        print(f"patchlens: warning: {' '.join(str(message).split())}", file=file or sys.stderr)

    if getattr(plain, "__name__", "") != "show":
        warnings.showwarning = show


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _one_line_warnings()
    if argv[:1] == ["--version"]:  # before the parser: its subcommands import torch (seconds) for nothing
        print(f"patchlens {__version__}")
        return 0
    parser = build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would print the top-level usage, which says nothing about the command's options
        error(_unknown_option(parser, args, unknown[0]))
        return 2
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
    except BrokenPipeError:  # `patchlens methods | head`: the reader has what it wanted
        # Python would print a traceback on flushing stdout at exit; point it at /dev/null first
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # the shell's code for a command ended by SIGPIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
