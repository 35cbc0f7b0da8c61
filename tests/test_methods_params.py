"""Method parameters: finite and bounded, seeds in range, nested tensors refused.

NaN passed every bound check (``nan < low`` is False), so ``p_keep=nan`` gave a
"done" RISE map of zeros; ``grid=14000`` was announced as 2 passes and cost
2.2 GB; a seed of 2**64 was an internal ``ValueError``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import patchlens
from patchlens.batch import run_batch
from patchlens.cli import main
from patchlens.errors import ImageError, MethodError
from patchlens.images import load_image
from patchlens.methods import make_method, registry


def numeric_params():
    for name, cls in sorted(registry().items()):
        for p in cls.parameters():
            if p.type in (int, float):
                yield name, p


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("method,param", [(m, p.name) for m, p in numeric_params() if p.type is float])
def test_every_float_parameter_must_be_finite(method, param, value):
    with pytest.raises(MethodError, match=f"{method}: {param}=") as info:
        make_method(method, **{param: value})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("method,param", [(m, p.name) for m, p in numeric_params()], ids=lambda v: str(v))
def test_every_numeric_parameter_has_an_upper_bound_that_is_enforced(method, param):
    """Shape-driving parameters (grids, sample counts, windows) bound memory only if every one has a cap."""
    info = next(p for p in registry()[method].parameters() if p.name == param)
    assert info.high is not None, f"{method}.{param} has no upper bound"
    over = info.high * 10 + 1 if info.type is float else int(info.high) * 10 + 1
    with pytest.raises(MethodError, match=f"{param}=.* must be at most"):
        make_method(method, **{param: info.type(over)})


def test_rise_with_a_huge_grid_is_refused_before_any_work():
    with pytest.raises(MethodError, match="grid=14000 must be at most 32"):
        make_method("rise", grid=14000, n_masks=1)


@pytest.mark.parametrize("method,params", [("lime", {"n_samples": 100_000, "grid": 64}),
                                           ("kernelshap", {"n_samples": 50_000, "grid": 40}),
                                           ("sobol", {"n_designs": 4096, "grid": 16})])
def test_a_design_matrix_over_the_limit_is_refused(method, params):
    with pytest.raises(MethodError, match="is a design of .* entries, over the limit"):
        make_method(method, **params)
    small = {**params, "grid": 4}
    make_method(method, **small)  # the same count on a coarse grid is fine


def brightness(x: torch.Tensor) -> torch.Tensor:
    m = x.mean((1, 2, 3))
    return torch.stack([m, 1 - m], 1)


@pytest.fixture(scope="module")
def model():
    return patchlens.load_model(brightness, input_size=16)


IMAGE = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)


@pytest.mark.parametrize("seed", [2**64, 2**63, -1, 1.5, "3", True])
def test_a_seed_out_of_range_is_one_line(model, seed):
    with pytest.raises(MethodError, match=r"seed=.*: must be a whole number from 0 to 2\*\*63 - 1"):
        patchlens.explain(model, IMAGE, "rise", n_masks=8, seed=seed)


def test_the_largest_seed_works_and_is_recorded(model):
    exp = patchlens.explain(model, IMAGE, "rise", n_masks=8, seed=2**63 - 1)
    assert exp.seed == 2**63 - 1 and np.isfinite(exp.saliency).all()
    assert patchlens.explain(model, IMAGE, "rise", n_masks=8, seed=np.int64(5)).seed == 5


def test_batch_refuses_a_bad_seed_before_writing(tmp_path, model):
    with pytest.raises(MethodError, match="seed="):
        run_batch([str(tmp_path / "none.png")], str(tmp_path / "s"), model=model, method="rise", n_masks=8, seed=2**64,
                  progress=False)
    assert not (tmp_path / "s").exists()


def test_cli_explain_with_a_huge_seed_is_one_line(tmp_path, capsys):
    code = main(["explain", "example:coffee", "--seed", str(2**64), "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1 and "seed=18446744073709551616" in err


@pytest.mark.parametrize("layout", [torch.strided, torch.jagged])
def test_nested_tensors_are_one_line(layout):
    parts = [torch.rand(3, 8, 8), torch.rand(3, 6, 8)] if layout == torch.strided else [torch.rand(3, 8, 8)] * 2
    nested = torch.nested.nested_tensor(parts, layout=layout)
    with pytest.raises(ImageError, match="a nested tensor is several images"):
        load_image(nested)


@pytest.mark.parametrize("method,params", [("rise", {"p_keep": math.nan}), ("lime", {"kernel_width": math.nan}),
                                           ("lime", {"alpha": math.inf})])
def test_nan_parameters_never_give_a_done_map(model, method, params):
    """The audit's case: p_keep=nan returned "done" with a map of zeros."""
    with pytest.raises(MethodError, match="must be a finite number"):
        patchlens.explain(model, IMAGE, method, **params)
