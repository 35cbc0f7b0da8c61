"""The command line's mistakes: one line per mistake, checked before the work; one bad image does not stop the others."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import patchlens.cli.explain as explain_cli
from patchlens.cli import main


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


FAST = ["--method", "occlusion", "--window", "112", "--stride", "112", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory) -> list[str]:
    """A model spec the CLI can load that costs next to nothing per pass."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.AvgPool2d(32), torch.nn.Flatten(), torch.nn.Linear(147, 4)).eval()
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.jit.save(torch.jit.trace(net, torch.rand(1, 3, 224, 224)), str(path))
    return ["--model", f"torchscript:{path}"]


def one_clean_line(err: str) -> str:
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("size", ["0", "-3"])
@pytest.mark.parametrize("command", ["explain", "batch"])
def test_a_batch_size_below_one_is_a_clean_error(command, size, photo, tmp_path, capsys):
    args = [command, str(photo), "--batch-size", size, "--out", str(tmp_path / "out"), *FAST]
    assert main(args) == 2
    assert f"--batch-size {size}: must be at least 1" in one_clean_line(capsys.readouterr().err)


def test_an_out_that_is_a_file_or_unwritable_is_refused_before_any_work(photo, tmp_path, capsys, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(explain_cli, "load_cli_model", no_model)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("precious")
    assert main(["explain", str(photo), "--out", str(blocker), *FAST]) == 2
    assert "is a file, not a folder" in one_clean_line(capsys.readouterr().err)
    assert main(["explain", str(photo), "--out", str(blocker / "maps"), *FAST]) == 2
    assert "cannot write there" in one_clean_line(capsys.readouterr().err)
    assert blocker.read_text() == "precious"


def test_one_bad_image_does_not_stop_the_others(photo, tmp_path, capsys, tiny_spec):
    too_long = "x" * 5000 + ".png"
    out = tmp_path / "out"
    assert main(["explain", too_long, str(photo), "--out", str(out), *FAST, *tiny_spec]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "too long" in err and max(len(line) for line in err.splitlines()) < 300
    assert sorted(p.suffix for p in out.iterdir()) == [".json", ".npy", ".png"]  # the good photo was done


@pytest.mark.slow
def test_a_closed_pipe_ends_the_listing_without_a_traceback() -> None:
    # `patchlens methods | head -1`: the reader leaves early; the writer must not print a traceback
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "patchlens", "methods"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the listing is written: its first write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "layercam", "scorecam"])
def test_cam_methods_on_a_torchscript_file_are_one_line_naming_what_works(method, photo, tiny_spec, tmp_path, capsys):
    """A ScriptModule takes no forward hooks: declared as a missing capability, not a RuntimeError mid-run."""
    assert main(["explain", str(photo), *tiny_spec, "--method", method, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = one_clean_line(capsys.readouterr().err)
    assert f"{method}: needs layers" in err and "TorchScript module, which takes no forward hooks" in err
    assert "use one of gradient, gradient_x_input, integrated_gradients" in err and "gradcam," not in err
    assert not (tmp_path / "out").exists()


def test_gradients_still_flow_through_a_torchscript_file(photo, tiny_spec, tmp_path, capsys):
    assert main(["explain", str(photo), *tiny_spec, "--method", "gradient", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""  # no failed ONNX export line either: auto keeps a ScriptModule in torch
    saliency = np.load(next((tmp_path / "out").glob("*.npy")))
    assert np.isfinite(saliency).all() and saliency.max() > 0


# -- run-level mistakes found before any work, spelled as typed (issue 27, point 9) --------------


@pytest.fixture
def no_model(monkeypatch):
    import patchlens.cli.batch as batch_cli
    import patchlens.cli.compare as compare_cli

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the mistake was found")

    for module in (explain_cli, batch_cli, compare_cli):
        monkeypatch.setattr(module, "load_cli_model", refuse)


@pytest.mark.parametrize("argv, said", [
    (["explain", "P", "--method", "occlusion", "--n-masks", "10"], "occlusion has no --n-masks (drise, rise have it)"),
    (["explain", "P", "--method", "occlusion", "--round-size", "10"], "occlusion has no --round-size (drise, kernelshap, lime, rise, sobol have it)"),
    (["batch", "P", "--out", "S", "--method", "gradient", "--window", "8"], "gradient has no --window (occlusion has it)"),
    (["compare", "P", "--methods", "occlusion,gradient", "--n-masks", "4"], "occlusion and gradient have no --n-masks (drise, rise have it)"),
    (["explain", "P", "--method", "risee"], "risee: unknown method (did you mean rise?)"),
    (["explain", "P", "--method", "rise", "--nmasks", "4"], "--nmasks: not an option of patchlens explain (did you mean --n-masks?)"),
])
def test_run_level_mistakes_are_one_line_before_the_model_is_loaded(argv, said, photo, tmp_path, no_model, capsys):
    argv = [str(photo) if a == "P" else str(tmp_path / "store") if a == "S" else a for a in argv]
    assert main([*argv, "--quiet"] if argv[0] != "compare" else argv) == 2
    assert said in one_clean_line(capsys.readouterr().err)


def test_a_metric_without_its_region_is_one_line_before_any_map(photo, monkeypatch, capsys):
    """Checked once the model is loaded (a detector's own box is its region), before the first map."""
    import patchlens.api
    from patchlens.errors import MetricError
    from patchlens.metrics.compare import compare

    monkeypatch.setattr(patchlens.api, "explain_one", lambda *a, **k: pytest.fail("a map was made"))
    with pytest.raises(MetricError, match=r"pointing_game needs a ground-truth region .* give regions=\[...\]"):
        compare("default", [str(photo)], ["occlusion"], ["pointing_game"])
    assert main(["compare", str(photo), "--metrics", "deletion,pointing_game"]) == 2
    said = "pointing_game needs a ground-truth region for each image (a box or a mask); give --regions FILE"
    assert said in one_clean_line(capsys.readouterr().err)
