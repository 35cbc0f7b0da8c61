"""``--help`` without importing torch.

Building the full parser imports every subcommand's module, and with them the
methods, the engine and torch: 4-6 s before a line of help appeared (issue 27).
Two ways around it, both giving the text the full parser gives (tests/test_cli_help.py):

* the top-level help (``patchlens``, ``patchlens --help``) needs only each
  command's one-line summary; every command module declares them in a
  ``COMMANDS`` dict, read here from the module's source without running it;
* a command's own help (``patchlens explain --help``, ``... --method lime --help``)
  is kept in the cache folder after it is first built, under a key made of
  everything that can change it: the arguments, patchlens' version and source
  files (path, size, modification time), the interpreter, the import path and
  the modification time of each of its folders, ``PATCHLENS_*`` variables and
  the terminal width. Installing, upgrading or removing any distribution adds
  or removes a ``*.dist-info`` folder in a folder of the import path, so it
  changes the key (a plug-in's methods, a new timm).

A plug-in (an entry point in a ``patchlens.*`` group of another distribution)
may be an editable install whose source lives anywhere: no key could follow
its edits without importing it. While one is installed, a command's help is
built every time, as without the cache (seconds), never read from it.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

HELP_FLAGS = ("-h", "--help")
#: help texts kept in the cache folder (a few KB each)
KEEP = 64


def asks_for_help(argv: Sequence[str]) -> bool:
    """Whether argparse will answer ``argv`` with a help text (a help flag before any ``--``)."""
    for arg in argv:
        if arg == "--":
            return False
        if arg in HELP_FLAGS:
            return True
    return False


def top_level(argv: Sequence[str]) -> bool:
    """``patchlens`` alone or ``patchlens --help``: the help that lists the commands."""
    return not argv or (len(argv) == 1 and argv[0] in HELP_FLAGS)


def command_summaries(package_dir: Path, names: Sequence[str]) -> dict[str, str] | None:
    """Each command's one-line help from the ``COMMANDS`` dicts of the modules ``names``; None if one has none."""
    found: dict[str, str] = {}
    for name in names:
        try:
            tree = ast.parse((package_dir / f"{name}.py").read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            return None  # no source to read (a zipped or compiled-only install): build the parser
        commands = None
        for node in tree.body:
            assigned = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            if isinstance(node, ast.Assign) and "COMMANDS" in assigned:
                try:
                    commands = ast.literal_eval(node.value)
                except ValueError:
                    return None
        if not isinstance(commands, dict):
            return None  # a module that does not declare its commands: only importing it tells
        found.update({str(k): str(v) for k, v in commands.items()})
    return found


def summary_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], summaries: dict[str, str]) -> None:
    """Add one bare subparser per command, with its one-line help: enough for the top-level help."""
    for name, text in summaries.items():
        sub.add_parser(name, help=text)


# -- a command's help, kept between runs ------------------------------------------------------
def cacheable(argv: Sequence[str]) -> bool:
    """Only the usual shapes (``CMD [SUB] [--method NAME] --help``): a key per image name would only fill the folder."""
    rest = [a for a in argv if a not in HELP_FLAGS]
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--method" and i + 1 < len(rest):
            i += 2
            continue
        if arg.startswith("--method="):
            i += 1
            continue
        if arg.startswith("-") or not arg.replace("-", "").replace("_", "").isalnum():
            return False
        i += 1
    return len(rest) <= 4


def _fingerprint(argv: Sequence[str]) -> str:
    from .._version import __version__

    package = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    h.update(repr((list(argv), __version__, sys.version, sys.executable, shutil.get_terminal_size().columns)).encode())
    h.update(repr(sorted((k, v) for k, v in os.environ.items() if k.startswith("PATCHLENS_"))).encode())
    for entry in sys.path:  # where distributions are found: an install or removal changes its folder's mtime
        try:
            h.update(f"{entry}|{os.stat(entry or '.').st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{entry}|-\n".encode())
    for root, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                info = os.stat(os.path.join(root, name))
                h.update(f"{os.path.relpath(os.path.join(root, name), package)}|{info.st_size}|{info.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _path(argv: Sequence[str]) -> Path:
    from .._paths import cache_dir

    return cache_dir() / "help" / f"{_fingerprint(argv)}.txt"


def remembered(argv: Sequence[str]) -> str | None:
    """The help text kept for ``argv``, if any."""
    if not cacheable(argv):
        return None
    try:
        return _path(argv).read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None


def remember(argv: Sequence[str], text: str) -> None:
    """Keep ``text`` for ``argv`` (atomically; a read-only cache just stays empty)."""
    if not cacheable(argv) or not text or plugins():
        return
    path = _path(argv)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        _prune(path.parent)
    except OSError:
        tmp.unlink(missing_ok=True)


def plugins() -> list[str]:
    """Entry points of other distributions in ``patchlens.*`` groups (``group:name``): plug-ins whose help no key can follow."""
    from importlib.metadata import distributions

    found = []
    for dist in distributions():
        if dist.metadata["Name"] == "patchlens":
            continue
        found += [f"{ep.group}:{ep.name}" for ep in dist.entry_points if ep.group.split(".")[0] == "patchlens"]
    return found


def _prune(folder: Path, keep: int = KEEP) -> None:
    """Every edit of the source makes new keys: keep the newest ``keep`` texts."""
    texts = sorted(folder.glob("*.txt"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in texts[keep:]:
        old.unlink(missing_ok=True)
