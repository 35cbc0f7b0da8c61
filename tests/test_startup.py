"""What a fresh ``patchlens`` process imports: start-up is a large share of the README demo (issue 11).

Each check runs a new interpreter, because this test process has long since
imported everything. They assert which modules are loaded, never how long
anything took: someone re-adding an eager import of a heavy module fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HEAVY = ("torch", "scipy", "skimage", "pandas", "pyarrow", "fastapi", "uvicorn", "matplotlib", "ray", "onnx", "timm")


def loaded_after(code: str) -> set[str]:
    """Top-level packages and patchlens modules loaded by a fresh interpreter after running ``code``."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    names = json.loads(done.stdout.strip().splitlines()[-1])
    return {n for n in names if n.startswith("patchlens")} | {n.split(".")[0] for n in names}


def test_importing_the_package_and_the_cli_loads_no_heavy_module():
    loaded = loaded_after("import patchlens, patchlens.cli")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_version_prints_without_torch():
    code = "import contextlib, io\nfrom patchlens.cli import main\nout = io.StringIO()\n"
    code += "with contextlib.redirect_stdout(out):\n    assert main(['--version']) == 0\nassert out.getvalue().startswith('patchlens ')"
    loaded = loaded_after(code)
    assert "torch" not in loaded


@pytest.mark.slow
def test_the_explain_command_registers_only_its_own_module():
    """``patchlens explain`` needs torch, not the metrics, the audit, scipy or the batch store."""
    loaded = loaded_after("from patchlens.cli import build_parser\nbuild_parser(['explain', 'x.png']).parse_args(['explain', 'x.png'])")
    assert "torch" in loaded  # the explain command's own imports: the check below is not vacuous
    unwanted = {"scipy", "skimage", "pandas", "pyarrow", "fastapi", "patchlens.metrics", "patchlens.audit", "patchlens.batch"}
    assert not loaded & unwanted, sorted(loaded & unwanted)


def test_describing_a_map_needs_no_scipy():
    code = "import numpy as np\nfrom patchlens.describe import hot_regions\n"
    code += "y, x = np.mgrid[:64, :64]\nfound, smoothed = hot_regions(np.exp(-((y - 20) ** 2 + (x - 40) ** 2) / 50.0))\n"
    code += "assert found and not smoothed"
    assert "scipy" not in loaded_after(code)


def test_the_public_names_still_import_from_the_package():
    import patchlens

    for name in patchlens.__all__:
        assert getattr(patchlens, name) is not None, name
    from patchlens import PatchlensError, explain, load_model  # noqa: F401  (the form users write)

    with pytest.raises(AttributeError):
        patchlens.no_such_name  # noqa: B018


@pytest.mark.slow
def test_subpackages_are_still_reachable_as_attributes_of_a_fresh_import():
    # code written against the eager package reads patchlens.api.explain after `import patchlens` alone
    code = "import patchlens\nassert callable(patchlens.api.explain) and patchlens.models.CallableClassifier\n"
    code += "assert patchlens.engine.Engine\ntry:\n    patchlens.no_such_module\nexcept AttributeError:\n    pass\n"
    code += "else:\n    raise SystemExit('no AttributeError')"
    assert "patchlens.api" in loaded_after(code)


def test_top_level_help_and_unknown_commands_still_see_every_command(capsys):
    from patchlens.cli import build_parser

    choices = build_parser([])._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"explain", "compare", "batch", "methods", "models", "serve", "serve-model", "report", "store"} <= set(choices)
    with pytest.raises(SystemExit):
        build_parser(["explian"]).parse_args(["explian"])
    assert "compare" in capsys.readouterr().err  # argparse's "invalid choice" lists all commands
    only = build_parser(["explain", "x.png"])._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(only) == {"explain"}


@pytest.mark.parametrize("seed", range(4))
def test_label_components_equals_scipy_label(seed, monkeypatch):
    """The connected components behind ``describe`` against scipy's, on random masks of every density and shape.

    Odd seeds take the branch that hands a speckled mask to scipy itself, so its output format is checked too.
    """
    from scipy import ndimage

    from patchlens import describe
    from patchlens.describe import label_components

    if seed % 2:
        monkeypatch.setattr(describe, "MAX_RUNS", 0)
    rng = np.random.default_rng(seed)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        mask = rng.random((h, w)) < rng.random()
        ours, n = label_components(mask)
        theirs, m = ndimage.label(mask, structure=np.ones((3, 3)))
        assert n == m and ours.dtype == np.int32 and np.array_equal(ours, theirs), (h, w)


def run_program(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``patchlens ARGS`` through the program's entry point, with an exit handler that says whether it ran."""
    code = (
        "import atexit, sys\natexit.register(lambda: print('interpreter torn down'))\n"
        f"sys.argv = ['patchlens', *{args!r}]\nfrom patchlens.cli import console\nconsole()\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


def test_a_finished_explain_ends_the_process_without_the_teardown_and_loses_no_output(tmp_path):
    """Freeing every module after torch costs 0.6 s of CPU; explain skips it once its files are written."""
    done = run_program(["explain", "example:coffee", "--model", "default", "--method", "occlusion", "--window", "112",
                        "--stride", "112", "--out", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    assert "interpreter torn down" not in done.stdout
    assert done.stdout.rstrip().endswith(".json")  # the last line made it out
    assert len(list(tmp_path.iterdir())) == 3
    failed = run_program(["explain", str(tmp_path / "missing.jpg"), "--out", str(tmp_path)])
    assert failed.returncode == 1 and "no such file" in failed.stderr


def test_commands_that_may_leave_things_open_still_tear_down(tmp_path):
    done = run_program(["store", "verify", str(tmp_path / "no-store")])
    assert done.returncode == 2 and "interpreter torn down" in done.stdout


def test_the_console_script_is_the_program_entry_point():
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["patchlens"] == "patchlens.cli:console"
