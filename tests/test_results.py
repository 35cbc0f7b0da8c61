"""One result record, results that compare and cannot be edited, one return type per call shape, maps from elsewhere."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

import patchlens
from conftest import planted_classifier, planted_image
from patchlens.explanation import RECORD_SCHEMA, record
from patchlens.metrics import MetricError


@pytest.fixture(scope="module")
def exp() -> patchlens.Explanation:
    return patchlens.explain(planted_classifier(), planted_image(), "rise", n_masks=40, seed=3)


def test_explanations_compare_by_value_and_never_raise(exp):
    again = patchlens.explain(planted_classifier(), planted_image(), "rise", n_masks=40, seed=3)
    other = patchlens.explain(planted_classifier(), planted_image(), "rise", n_masks=40, seed=4)
    assert exp == again and exp != other and exp != "a string"
    assert (exp == again) is True  # a plain bool, not an array
    with pytest.raises(TypeError):
        hash(exp)


def test_params_are_a_record_that_cannot_be_changed(exp):
    with pytest.raises(TypeError, match="cannot be changed"):
        exp.params["n_masks"] = 5
    with pytest.raises(TypeError):
        exp.params.update(n_masks=5)
    assert exp.params["n_masks"] == 40 and pickle.loads(pickle.dumps(exp)).params == exp.params


def test_one_record_with_schema_and_versions_serves_save_store_and_web(exp, tmp_path):
    rec = record(exp)
    assert rec["schema"] == RECORD_SCHEMA and rec["versions"]["patchlens"] == patchlens.__version__
    assert rec["versions"]["torch"] == torch.__version__
    saved = json.loads(exp.save(tmp_path)["json"].read_text())
    assert {k: v for k, v in saved.items() if k != "versions"} == {k: v for k, v in rec.items() if k != "versions"}
    with pytest.raises(ValueError, match="may not replace"):
        record(exp, method="other")


def test_the_return_type_follows_the_call_not_the_image():
    clf, img = planted_classifier(), planted_image()
    assert isinstance(patchlens.explain(clf, img, "occlusion", window=16, stride=16), patchlens.Explanation)
    one_of_many = patchlens.explain(clf, img, "occlusion", target="topk:1", window=16, stride=16)
    assert isinstance(one_of_many, patchlens.Explanation)  # topk:1 asks for one class
    listed = patchlens.explain(clf, img, "occlusion", target=[1], window=16, stride=16)
    assert isinstance(listed, list) and len(listed) == 1  # a list always gives a list, even of one
    two = patchlens.explain(clf, img, "occlusion", target="topk:2", window=16, stride=16)
    assert [e.target for e in two] == [1, 0]
    per_image = patchlens.explain(clf, [img, img], "occlusion", target="topk:2", window=16, stride=16)
    assert len(per_image) == 2 and all(isinstance(r, list) and len(r) == 2 for r in per_image)


def test_maps_made_elsewhere_are_scored_like_explanations(exp):
    clf, img = planted_classifier(), planted_image()
    as_exp = patchlens.evaluate(clf, img, exp, ["deletion", "insertion", "sparseness"], steps=8)
    as_array = patchlens.evaluate(clf, img, exp.saliency.copy(), ["deletion", "insertion", "sparseness"], target=1, steps=8)
    as_tensor = patchlens.evaluate(clf, img, torch.from_numpy(exp.saliency), ["deletion"], target="evidence", steps=8)
    for column in ("deletion", "insertion", "sparseness"):
        assert as_array[0][column] == pytest.approx(as_exp[0][column], abs=1e-9)
    assert as_tensor[0]["deletion"] == pytest.approx(as_exp[0]["deletion"], abs=1e-9)
    assert as_array[0]["method"] == "external"
    with pytest.raises(MetricError, match="target="):
        patchlens.evaluate(clf, img, exp.saliency, ["deletion"])
    with pytest.raises(MetricError, match="NaN"):
        patchlens.evaluate(clf, img, np.full((64, 64), np.nan, np.float32), ["deletion"], target=1)


def test_compare_never_applies_a_flag_silently(tmp_path, capsys):
    from patchlens.cli import main

    base = ["compare", "example:coffee", "--methods", "rise,lime", "--metrics", "sparseness", "--out", str(tmp_path)]
    assert main([*base, "--grid", "4"]) == 2
    err = capsys.readouterr().err
    assert "--grid means different things for rise, lime" in err and "--set lime.grid=VALUE" in err
    model = ["--model", "onnx:/nonexistent/model.onnx"]  # fails after the note, so nothing runs
    assert main([*base, *model, "--baseline", "blur"]) != 0
    assert "note: --baseline applies to rise, lime" in capsys.readouterr().err


def test_the_batch_store_keeps_the_whole_record(tmp_path):
    """Read back from a store: the kind of score and the extras (runtime, convergence...) are those recorded."""
    pytest.importorskip("pyarrow")
    from PIL import Image

    from patchlens.batch import open_store, run_batch

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(planted_image()).save(folder / "a.png")
    scores = patchlens.load_model(lambda x: x.mean((2, 3))[:, :2] * 5, input_size=64, probabilities=False)
    run_batch(str(folder), str(tmp_path / "store"), model=scores, method="rise", n_masks=40, converge=0.5, round_size=20, progress=False)
    direct = patchlens.explain(scores, planted_image(), "rise", n_masks=40, converge=0.5, round_size=20)
    stored = open_store(tmp_path / "store").explanation(0)
    assert stored.score_is_probability is False and "score =" in stored.title
    assert stored.extras["convergence"] == direct.extras["convergence"]
    assert stored.extras["runtime"]["runtime"] == direct.extras["runtime"]["runtime"]
