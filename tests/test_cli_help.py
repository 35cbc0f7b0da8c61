"""``--help`` answers without importing torch, with the same text the full parser gives (issue 27: 4-6 s per help).

Each check that looks at imports runs a fresh interpreter (this process has
imported torch long ago); none asserts a time.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from patchlens.cli import _help, build_parser, command_modules, main


def run_cli(args: list[str], cache: Path) -> tuple[int, str, list[str]]:
    """``patchlens ARGS`` in a fresh interpreter: exit code, stdout, and the top-level modules it loaded."""
    code = (
        "import contextlib, io, json, sys\nfrom patchlens.cli import main\nout = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n    try:\n"
        f"        rc = main({args!r})\n    except SystemExit as exc:\n        rc = exc.code\n"
        "print(json.dumps([rc, out.getvalue(), sorted({m.split('.')[0] for m in sys.modules})]))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), PATCHLENS_CACHE=str(cache))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    rc, out, modules = json.loads(done.stdout.strip().splitlines()[-1])
    return rc, out, modules


def full_help(argv: list[str]) -> str:
    """What the full parser prints for ``argv`` (every command registered, torch imported)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser(argv).parse_args(argv)
    return out.getvalue()


def test_every_command_module_declares_its_commands_and_their_help_matches_the_parser():
    summaries = _help.command_summaries(Path(_help.__file__).parent, command_modules())
    assert summaries is not None, "a command module without COMMANDS makes every top-level help import torch"
    sub = build_parser([])._subparsers._group_actions[0]  # type: ignore[union-attr]
    registered = {a.dest: a.help for a in sub._choices_actions}
    assert summaries == registered


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"]])
def test_the_top_level_help_is_the_full_parsers_text_without_torch(argv, tmp_path):
    rc, out, modules = run_cli(argv, tmp_path)
    assert "torch" not in modules
    assert rc == (2 if not argv else 0)
    assert out == build_parser([]).format_help()


def test_a_commands_help_is_kept_and_then_answered_without_torch(tmp_path):
    argv = ["explain", "--method", "occlusion", "--help"]
    expected = full_help(argv)
    assert "--window" in expected  # occlusion's own options: the key holds --method
    rc, first, modules = run_cli(argv, tmp_path)
    assert (rc, first) == (0, expected) and "torch" in modules  # built once, the slow way
    rc, second, modules = run_cli(argv, tmp_path)
    assert (rc, second) == (0, expected) and "torch" not in modules
    rc, other, _ = run_cli(["explain", "--help"], tmp_path)  # another method's options: its own entry
    assert other == full_help(["explain", "--help"]) != expected


def test_a_changed_source_file_is_a_new_key(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHLENS_CACHE", str(tmp_path))
    argv = ["store", "--help"]
    _help.remember(argv, "old text")
    assert _help.remembered(argv) == "old text"
    source = Path(_help.__file__)
    info = source.stat()
    try:
        os.utime(source, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
        assert _help.remembered(argv) is None
    finally:
        os.utime(source, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert _help.remembered(argv) == "old text"


def test_help_with_image_names_is_answered_but_not_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATCHLENS_CACHE", str(tmp_path))
    assert not _help.cacheable(["explain", "photo.jpg", "--help"])
    assert _help.cacheable(["explain", "--method=lime", "-h"]) and _help.cacheable(["store", "verify", "--help"])
    with pytest.raises(SystemExit) as exc:
        main(["explain", "photo.jpg", "--help"])
    assert exc.value.code == 0
    assert "--method" in capsys.readouterr().out
    assert not (tmp_path / "help").exists() or not list((tmp_path / "help").iterdir())


def test_a_usage_error_before_the_help_flag_is_still_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATCHLENS_CACHE", str(tmp_path))
    with pytest.raises(SystemExit) as exc:
        main(["explain", "--batch-size", "--help"])  # --batch-size takes a number
    assert exc.value.code == 2
    assert not (tmp_path / "help").exists() or not list((tmp_path / "help").iterdir())


def test_only_the_newest_texts_are_kept(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.txt").write_text(str(i))
        os.utime(tmp_path / f"{i}.txt", ns=(i * 10**9, i * 10**9))
    _help._prune(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2.txt", "3.txt", "4.txt"]


def _distribution(folder: Path, name: str, entry_points: str = "") -> None:
    """A minimal installed distribution in ``folder`` (what pip leaves: a ``*.dist-info`` folder)."""
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    if entry_points:
        (info / "entry_points.txt").write_text(entry_points)


def test_installing_any_distribution_is_a_new_key(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHLENS_CACHE", str(tmp_path / "cache"))
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    argv = ["explain", "--help"]
    _help.remember(argv, "text before")
    assert _help.remembered(argv) == "text before"
    info = site.stat()
    _distribution(site, "timm_like")  # e.g. a library that adds model specs to the help
    os.utime(site, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))  # as a coarse clock would still show it
    assert _help.remembered(argv) is None


def test_with_a_plugin_installed_a_commands_help_is_never_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("PATCHLENS_CACHE", str(tmp_path / "cache"))
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    assert _help.plugins() == []
    _distribution(site, "patchlens_extra", "[patchlens.methods]\nmine = patchlens_extra:Mine\n")
    assert _help.plugins() == ["patchlens.methods:mine"]
    argv = ["explain", "--help"]
    _help.remember(argv, "a text an editable plug-in could make stale")
    assert _help.remembered(argv) is None
    assert not (tmp_path / "cache" / "help").exists()
