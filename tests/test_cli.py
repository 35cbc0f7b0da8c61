"""The command line, end to end, on real photos and bad files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from patchlens.cli import main
from patchlens.examples import example_path

FAST = ["--method", "occlusion", "--window", "112", "--stride", "112"]


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "patchlens", *args], capture_output=True, text=True, cwd=cwd, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


@pytest.mark.slow
def test_explain_a_real_photo_end_to_end(tmp_path):
    out = tmp_path / "maps"
    result = run_cli("explain", str(example_path("coffee")), *FAST, "--out", str(out), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "espresso" in result.stdout
    assert "5 passes in" in result.stdout  # 2x2 windows + the unmasked image
    png, npy, js = (out / f"coffee_occlusion_967_default_window112_stride112.{ext}" for ext in ("png", "npy", "json"))
    for f in (png, npy, js):
        assert f.exists() and str(f) in result.stdout
    assert np.load(npy).shape == (400, 600)
    meta = json.loads(js.read_text())
    assert meta["label"] == "espresso" and meta["method"] == "occlusion" and meta["params"]["window"] == 112
    assert meta["model"] == "default" and meta["forward_passes"] == 5
    overlay = Image.open(png)
    assert overlay.size[0] > 600 and overlay.size[1] > 400  # photo plus colour bar and title


def test_bad_files_do_not_stop_the_others(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    gray = tmp_path / "gray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70), dtype=np.uint8), "L").save(gray)
    out = tmp_path / "out"
    code = main(["explain", str(bad), str(gray), str(tmp_path / "missing.jpg"), *FAST, "--out", str(out), "--quiet"])
    assert code == 1
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 3 and all(p.startswith("gray_occlusion_") for p in written)


@pytest.mark.slow
def test_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("hello")
    result = run_cli("explain", str(bad), *FAST, "--out", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"patchlens: error: {bad}: cannot read image: not an image file" in result.stderr
    result = run_cli("explain", str(example_path("coffee")), "--method", "rise", "--p-keep", "3", "--out", str(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr and "p_keep=3.0 must be at most 0.99" in result.stderr
    result = run_cli("explain", str(example_path("coffee")), *FAST, "--target", "unicornfish", "--out", str(tmp_path))
    assert result.returncode != 0 and "not a class of default" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("explain", str(example_path("coffee")), "--model", "onnx:nope.onnx", "--out", str(tmp_path))
    assert result.returncode == 2 and "onnx:nope.onnx: no such file" in result.stderr


def test_help_lists_examples_and_generated_method_options(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text and "--n-masks" in text and "--p-keep" in text
    with pytest.raises(SystemExit):
        main(["explain", "--method", "occlusion", "--help"])
    text = capsys.readouterr().out
    assert "occlusion options:" in text and "--window WINDOW" in text or "--window INT" in text
    assert "rise options:" not in text and "--n-masks INT" not in text


def test_methods_and_models_listings(capsys):
    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    assert "rise" in text and "occlusion" in text and "--n-masks" in text
    assert main(["methods", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rise"]["parameters"][0]["name"] == "n_masks"
    assert main(["models"]) == 0
    assert "timm:<name>" in capsys.readouterr().out


def test_installed_console_script():
    result = subprocess.run(["patchlens", "--version"], capture_output=True, text=True)
    if result.returncode == 127 or "not found" in result.stderr:
        pytest.skip("console script not on PATH")
    assert result.stdout.startswith("patchlens ")


def test_explain_help_points_up_to_the_method_options_it_shows(capsys):
    """argparse prints the epilog last: the method options are above it, not "below"."""
    from patchlens.cli import main

    with pytest.raises(SystemExit):
        main(["explain", "--method", "occlusion", "--help"])
    out = capsys.readouterr().out
    assert out.index("occlusion options:") < out.index("the 'occlusion options' above are those of --method occlusion")
    assert "below" not in out and "'patchlens explain --method NAME --help' shows another's" in out


@pytest.mark.slow
def test_runs_with_other_parameters_write_other_files(tmp_path, capsys):
    """Output names carry what was chosen, so a rerun with another window or seed does not overwrite the first."""
    from patchlens.cli import main

    out = tmp_path / "out"
    base = ["explain", "example:coffee", "--out", str(out), "--quiet"]
    assert main([*base, "--method", "occlusion", "--window", "112", "--stride", "112"]) == 0
    assert main([*base, "--method", "occlusion", "--window", "56", "--stride", "112"]) == 0
    assert main([*base, "--method", "occlusion", "--window", "56", "--stride", "112"]) == 0  # the same run: the same files
    assert main([*base, "--method", "rise", "--n-masks", "20", "--seed", "4"]) == 0
    names = sorted(p.stem for p in out.glob("*.json"))
    assert names == ["example_coffee_occlusion_967_default_window112_stride112",
                     "example_coffee_occlusion_967_default_window56_stride112",
                     "example_coffee_rise_967_default_n_masks20_seed4"], names
    assert main([*base, "--method", "gradient"]) == 0  # defaults only: the plain name
    assert (out / "example_coffee_gradient_967_default.json").exists()


def test_the_run_header_says_torch_runs_a_gradient_method(tmp_path, capsys):
    from patchlens.cli import main

    assert main(["explain", "example:coffee", "--method", "gradient", "--out", str(tmp_path)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith("gradient on default (cpu, ") and ("torch for the rest" in header or "cpu, torch)" in header)
    assert not header.endswith("onnxruntime): 2 forward passes per image")
