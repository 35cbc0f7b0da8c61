"""Multi-label models: one map per present label, each inside its own label's evidence, from every front-end.

The planted model (docs/multilabel.py) reads each of three labels from one
quadrant of the image; the scene shows the sun's and the boat's evidence and a
distractor in the quadrant no label reads. A faithful map of a label keeps its
top-ranked area (as large as one planted square) inside that label's quadrant.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import patchlens
from conftest import top_fraction_inside
from patchlens.api import NothingToExplain
from patchlens.cli import main
from patchlens.errors import TargetError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs"))
from multilabel import LABELS, SIZE, SQUARE, QuadrantTagger, quadrant_mask, scene, write  # noqa: E402

#: the top-ranked area compared with a label's quadrant: as large as one planted square
TOP = SQUARE**2 / SIZE**2
#: cheap settings; superpixels of this flat synthetic scene straddle the quadrants, so LIME and
#: KernelSHAP use an 8 x 8 grid of regions (aligned with them, as any grid of an even size is)
SETTINGS = {
    "occlusion": {},
    "rise": {"n_masks": 300},
    "lime": {"n_samples": 250, "features": "grid", "grid": 8},
    "kernelshap": {"n_samples": 250, "features": "grid", "grid": 8},
    "gradcam": {},
    "integrated_gradients": {"steps": 16},
}


def tagger(activation: str = "sigmoid") -> patchlens.Classifier:
    return patchlens.load_model(QuadrantTagger(), input_size=SIZE, mean=(0, 0, 0), std=(1, 1, 1), labels=LABELS,
                                activation=activation)


def inside(saliency: np.ndarray, label: str) -> float:
    return top_fraction_inside(saliency, quadrant_mask(label), TOP)


@pytest.fixture(scope="module")
def model() -> patchlens.Classifier:
    return tagger()


def test_the_planted_model_sees_the_sun_and_the_boat(model):
    p = model(torch.from_numpy(scene()).permute(2, 0, 1)[None].float() / 255)[0]
    assert p[0] > 0.9 and p[1] > 0.9 and p[2] < 0.5  # sun, boat present; tree not
    assert model.model_kind == patchlens.ModelKind.MULTI_LABEL and model.outputs_probabilities


@pytest.mark.parametrize("method", list(SETTINGS))
def test_present_gives_one_map_per_present_label_inside_its_own_quadrant(model, method, one_torch_thread):
    exps = patchlens.explain(model, scene(), method, target="present", seed=0, **SETTINGS[method])
    assert sorted(e.label for e in exps) == ["boat", "sun"]
    for e in exps:
        assert inside(e.saliency, e.label) >= 0.7, (method, e.label, inside(e.saliency, e.label))
        # titled with its label and p, and recording what selected it
        assert e.title.startswith(f"{method}: {e.label} (label {LABELS.index(e.label)}), p = ")
        assert e.objective["kind"] == "label" and e.objective["threshold"] == 0.5 and e.objective["request"] == "present"
        assert sorted(e.objective["labels"]) == ["boat", "sun"]


def test_the_sigmoid_is_applied_once_and_gradients_see_the_logits(model):
    x = torch.from_numpy(scene()).permute(2, 0, 1)[None].float() / 255
    logits = QuadrantTagger()(x)
    torch.testing.assert_close(model(x), logits.sigmoid())
    torch.testing.assert_close(model.logits(x), logits)


def test_thresholds_and_names_still_work(model):
    low = patchlens.explain(model, scene(), "occlusion", target="present:0.2")  # p(tree) is 0.27
    assert sorted(e.label for e in low) == ["boat", "sun", "tree"] and low[-1].label == "tree"  # by p, highest first
    tree = patchlens.explain(model, scene(), "occlusion", target="tree")  # absent, but asked for by name
    assert tree.label == "tree" and tree.score < 0.5 and inside(tree.saliency, "tree") >= 0.7
    assert len(patchlens.explain(model, scene(), "occlusion", target="topk:2")) == 2


def test_an_image_with_no_label_present_says_so_instead_of_failing(model):
    blank = np.full((SIZE, SIZE, 3), 128, np.uint8)
    with pytest.warns(NothingToExplain, match=r"no label present \(at least 0.5\): the highest is '(sun|boat|tree)'"):
        exps = patchlens.explain(model, blank, "occlusion", target="present")
    assert exps == [] and "top1" in exps.note


def test_present_needs_probabilities_or_a_threshold():
    raw = tagger(activation="none")
    with pytest.raises(TargetError, match="plain scores, not probabilities.*present:T.*activation='sigmoid'"):
        patchlens.explain(raw, scene(), "occlusion", target="present")
    exps = patchlens.explain(raw, scene(), "occlusion", target="present:0")  # logit >= 0 is p >= 0.5
    assert sorted(e.label for e in exps) == ["boat", "sun"] and not exps[0].score_is_probability
    with pytest.raises(TargetError, match="between 0 and 1"):
        patchlens.explain(tagger(), scene(), "occlusion", target="present:2")


def test_the_record_keeps_the_objective(model, tmp_path):
    exp = patchlens.explain(model, scene(), "occlusion", target="present")[0]
    saved = json.loads(exp.save(tmp_path)["json"].read_text())
    assert saved["objective"] == {**dict(exp.objective)} and saved["objective"]["kind"] == "label"
    assert saved["objective"]["title"] == f"{exp.label} (label {exp.target})"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("multilabel")
    paths = write(out)
    Image.fromarray(np.full((SIZE, SIZE, 3), 128, np.uint8)).save(out / "blank.png")
    return paths


MODEL_FLAGS = ["--labels", "{labels}", "--input-size", "64", "--mean", "0,0,0", "--std", "1,1,1", "--activation", "sigmoid"]


def model_flags(files: dict[str, Path]) -> list[str]:
    return ["--model", f"torchscript:{files['model']}"] + [f.format(labels=files["labels"]) for f in MODEL_FLAGS]


def test_cli_activation_sigmoid_target_present(files, tmp_path, capsys):
    out = tmp_path / "out"
    blank = files["scene"].parent / "blank.png"
    code = main(["explain", str(files["scene"]), str(blank), *model_flags(files), "--target", "present",
                 "--method", "occlusion", "--runtime", "torch", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "sun (label 0, p=0.9" in text and "boat (label 1, p=0.9" in text
    assert "blank.png: no label present" in text  # said, and not a failure
    maps = {json.loads(p.read_text())["label"]: np.load(p.with_suffix(".npy")) for p in out.glob("*.json")}
    assert sorted(maps) == ["boat", "sun"]
    assert all(inside(m, label) >= 0.7 for label, m in maps.items())


def test_batch_present_and_label_columns_with_several_labels(files, tmp_path):
    pytest.importorskip("pyarrow")
    from patchlens.batch import open_store, run_batch

    blank = files["scene"].parent / "blank.png"
    source = tmp_path / "list.csv"
    source.write_text(f"path,label\n{files['scene']},sun;tree\n{blank},boat\n", encoding="utf-8")
    common = {"model": tagger(), "method": "occlusion", "progress": False}
    summary = run_batch(str(source), str(tmp_path / "present.store"), target="present", **common)
    assert (summary.done, summary.empty, summary.failed) == (1, 1, 0)
    store = open_store(tmp_path / "present.store")
    ok = store.ok
    assert sorted(ok.label) == ["boat", "sun"]
    for _, row in ok.iterrows():
        assert inside(store.map(row), row.label) >= 0.7
        assert json.loads(row.objective)["kind"] == "label"
        assert store.explanation(row).objective["threshold"] == 0.5
    empty = store.manifest[store.manifest.status == "empty"]
    assert len(empty) == 1 and "no label present" in empty.error.iloc[0]
    # the label column names several labels: each is explained, present or not
    run_batch(str(source), str(tmp_path / "label.store"), target="label", **common)
    labelled = open_store(tmp_path / "label.store").ok
    assert sorted(zip(labelled.path.map(lambda p: Path(p).name), labelled.label)) == [
        ("blank.png", "boat"), ("scene.png", "sun"), ("scene.png", "tree")]


def test_batch_cli_and_the_audit_group_by_label(files, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(scene(seed=i)).save(folder / f"s{i}.png")
    out = tmp_path / "cli.store"
    code = main(["batch", str(folder), "--out", str(out), *model_flags(files), "--target", "present",
                 "--method", "occlusion", "--runtime", "torch", "--quiet", "--report"])
    assert code == 0, capsys.readouterr()
    from patchlens.audit import report

    findings = report(out)
    assert sorted(c.label for c in findings.classes) == ["boat", "sun"]
    assert all(c.images == 3 for c in findings.classes)


def test_web_api_lists_present_labels_and_explains_each(model):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from patchlens.web.app import create_app

    client = TestClient(create_app(classifier=model), base_url="http://127.0.0.1")
    info = client.get("/api/info").json()
    assert info["model"]["multi_label"] and info["model"]["activation"] == "sigmoid"
    import io

    buf = io.BytesIO()
    Image.fromarray(scene()).save(buf, format="PNG")
    image = client.post("/api/images", files={"file": ("scene.png", buf.getvalue(), "image/png")}).json()
    present = sorted(p["label"] for p in image["predictions"] if p["present"])
    assert present == ["boat", "sun"]
    results = finished(client, client.post("/api/jobs", json={
        "image_id": image["id"], "methods": [{"name": "occlusion"}], "target": "present"}).json())
    assert sorted(r["label"] for r in results) == ["boat", "sun"]
    for r in results:
        assert r["title"].startswith(f"occlusion: {r['label']} (label") and r["objective"]["kind"] == "label"
        saliency = np.load(io.BytesIO(client.get(f"/api/results/{r['id']}/map.npy").content))
        assert inside(saliency, r["label"]) >= 0.7
    # any one label can be explained alone, and an image without a present label says so
    one = finished(client, client.post("/api/jobs", json={
        "image_id": image["id"], "methods": [{"name": "occlusion"}], "target": "boat"}).json())
    assert [r["label"] for r in one] == ["boat"]
    buf = io.BytesIO()
    Image.fromarray(np.full((SIZE, SIZE, 3), 128, np.uint8)).save(buf, format="PNG")
    blank = client.post("/api/images", files={"file": ("blank.png", buf.getvalue(), "image/png")}).json()
    assert not any(p["present"] for p in blank["predictions"])
    none = finished(client, client.post("/api/jobs", json={
        "image_id": blank["id"], "methods": [{"name": "occlusion"}], "target": "present"}).json())
    assert len(none) == 1 and "no label present" in none[0]["note"] and "error" not in none[0]


def finished(client, job: dict) -> list[dict]:
    """The results of a web job, once it is done."""
    import time

    for _ in range(600):
        if job["status"] in ("done", "error", "cancelled"):
            break
        time.sleep(0.05)
        job = client.get(f"/api/jobs/{job['id']}").json()
    assert job["status"] == "done", job
    return job["results"]


def test_compare_and_evaluate_take_several_targets_per_image(model):
    from patchlens.metrics import compare

    result = compare(model, [scene()], ["occlusion", "rise"], ["deletion", "insertion"], target="present",
                     method_params={"rise": {"n_masks": 100}}, baselines=None)
    rows = list(result.table)
    assert sorted((r["method"], r["label"]) for r in rows) == [
        ("occlusion", "boat"), ("occlusion", "sun"), ("rise", "boat"), ("rise", "sun")]
    assert len(result.explanations) == 2 and all(len(row) == 2 for row in result.explanations)
    # deletion scores the label the map explains: hiding the sun's square first drops p(sun) at once
    for r in rows:
        assert r["deletion"] < 0.5 < r["insertion"], r


def test_old_results_without_an_objective_read_as_a_class():
    exp = patchlens.Explanation(saliency=np.array([[0, 1], [0.5, 0.25]], np.float32), target=3, label="cat", score=0.5, method="x",
                                params={}, seed=None, model="m", forward_passes=1, seconds=0.0)
    assert dict(exp.objective) == {"kind": "class", "index": 3, "label": "cat"}
    assert exp.title == "x: cat (class 3), p = 0.500"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert patchlens.objectives.objective_from_record(exp.objective).indices == (3,)


def test_methods_declare_the_kinds_of_model_they_explain(model, capsys):
    from dataclasses import dataclass

    from patchlens.errors import MethodError
    from patchlens.methods import Method
    from patchlens.validation import check_supported

    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    every = "classifiers, multi-label classifiers, object detectors"
    assert "rise  [black-box]" in text and f"explains: {every}\n" in text
    assert f"explains: {every}; one map per image, the same for every target" in text
    assert "explains: object detectors\n" in text  # drise

    @dataclass(frozen=True)
    class SingleLabelOnly(Method):  # not registered: a value to check, not a method for everyone
        name = "single_label_only"
        models = patchlens.ModelKind.CLASSIFIER

    with pytest.raises(MethodError, match="single_label_only: explains classifiers, but QuadrantTagger is one of the "
                                          "multi-label classifiers; use one of"):
        check_supported(SingleLabelOnly(), model)
    check_supported(SingleLabelOnly(), tagger("softmax"))


@pytest.mark.parametrize("command", ["explain", "compare", "batch", "benchmark", "serve", "serve-model", "models"])
def test_every_command_with_a_model_takes_activation(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert "--model" in text or command == "models"
    assert "--activation {auto,softmax,sigmoid,none}" in text


def test_activation_and_softmax_are_one_setting():
    assert tagger("softmax").activation == "softmax" and patchlens.load_model(QuadrantTagger(), softmax=True).activation == "softmax"
    assert patchlens.load_model(QuadrantTagger(), softmax=False).activation == "none"
    assert patchlens.load_model(QuadrantTagger(), softmax=False, activation="sigmoid").activation == "sigmoid"
    assert patchlens.load_model(lambda x: x.mean((2, 3)), input_size=8).activation == "none"  # callables: auto is none
    with pytest.raises(patchlens.ModelError, match="softmax=True and activation='sigmoid' disagree"):
        patchlens.load_model(QuadrantTagger(), softmax=True, activation="sigmoid")
    with pytest.raises(patchlens.ModelError, match="activation='tanh': use one of auto, softmax, sigmoid, none"):
        patchlens.load_model(QuadrantTagger(), activation="tanh")


def test_a_store_written_before_objectives_were_recorded_still_opens_and_resumes(tmp_path, planted):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from conftest import planted_image
    from patchlens.batch import open_store, run_batch
    from patchlens.batch.health import file_sha256

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(planted_image(seed=i)).save(folder / f"p{i}.png")
    store = tmp_path / "old.store"
    run_batch(str(folder), str(store), model=planted, method="occlusion", progress=False)
    # as the store was written before this column existed: the part without it, its checksum to match
    for part in sorted((store / "manifest").glob("part-*.parquet")):
        table = pq.read_table(part)
        pq.write_table(table.drop(["objective"]), part)
        sums = store / "checksums" / f"{part.stem}.json"
        recorded = json.loads(sums.read_text())
        sums.write_text(json.dumps({**recorded, "manifest": file_sha256(part)}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no damage reported
        opened = open_store(store)
    assert "objective" not in pq.read_table(next((store / "manifest").glob("*.parquet"))).column_names
    exp = opened.explanation(0)
    assert dict(exp.objective) == {"kind": "class", "index": 1, "label": "evidence"} and exp.title.startswith("occlusion: evidence (class 1)")
    for i in range(4, 6):  # resuming writes new rows with the column; both kinds of row read
        Image.fromarray(planted_image(seed=i)).save(folder / f"p{i}.png")
    summary = run_batch(str(folder), str(store), model=planted, method="occlusion", progress=False, resume=True)
    assert (summary.done, summary.skipped) == (2, 3)
    rows = open_store(store).manifest
    assert rows.objective.isna().sum() == 3 and rows.objective.notna().sum() == 2
