"""Object detectors from every front-end: the command line, batch mode and the web API find the planted box;
a random-weight torchvision detector runs D-RISE from the command line, offline, with its box drawn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import patchlens
from conftest import BOX, SIZE
from detector_fixtures import LABELS, PlantedDetector, planted_detector, planted_scene, top_area_inside, xyxy
from patchlens.batch import run_batch
from patchlens.cli import main

FRONT = [("drise", {"n_masks": 400, "grid": 8}), ("occlusion", {"window": 8, "stride": 4}), ("gradcam", {})]
TESTS = Path(__file__).parent


def _flags(params: dict) -> list[str]:
    return [f for k, v in params.items() for f in (f"--{k.replace('_', '-')}", str(v))]


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    path = tmp_path / "scene.png"
    Image.fromarray(planted_scene()).save(path)
    return path


@pytest.fixture
def model_file(tmp_path: Path) -> str:
    """The planted detector as Python code the command line can name (python:FILE.py:NAME)."""
    source = tmp_path / "planted_model.py"
    source.write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nfrom detector_fixtures import PlantedDetector  # noqa\n")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    return f"python:{source}:PlantedDetector --input-size {SIZE} --mean 0,0,0 --std 1,1,1 --labels {labels}"


@pytest.mark.parametrize("method,params", FRONT)
def test_command_line_maps_lie_in_the_box(method, params, scene, model_file, tmp_path, capsys, one_torch_thread):
    out = tmp_path / "maps"
    code = main(["explain", str(scene), "--model", *model_file.split(), "--method", method, *_flags(params),
                 "--converge", "0", "--out", str(out)] if method == "drise" else
                ["explain", str(scene), "--model", *model_file.split(), "--method", method, *_flags(params), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "square (detection 0, score=0.971)" in printed
    stem = next(out.glob(f"scene_{method}_0_*.npy")).with_suffix("")
    assert top_area_inside(np.load(stem.with_suffix(".npy"))) >= 0.75
    record = json.loads(stem.with_suffix(".json").read_text())
    assert record["objective"]["kind"] == "detection" and record["objective"]["box"] == xyxy(BOX)


def test_command_line_all_detections_and_their_combined_picture(scene, model_file, tmp_path, capsys, one_torch_thread):
    out = tmp_path / "maps"
    code = main(["explain", str(scene), "--model", *model_file.split(), "--min-score", "0.2", "--method", "occlusion",
                 "--window", "8", "--stride", "8", "--target", "all", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "decoy (detection 1" in printed and "its 2 targets in one picture" in printed
    assert len(list(out.glob("scene_occlusion_*_*.npy"))) == 2 and list(out.glob("scene_occlusion_combined_*.png"))


def test_batch_gives_one_row_per_detection_with_its_box(tmp_path, one_torch_thread):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for seed in range(2):
        Image.fromarray(planted_scene(seed=seed)).save(folder / f"s{seed}.png")
    for method, params in FRONT:
        store = tmp_path / f"{method}.store"
        summary = run_batch(str(folder), str(store), model=planted_detector(min_score=0.2), method=method,
                                      target="all", progress=False, **params)
        assert summary.done == 2 and summary.failed == 0
        with patchlens.open_store(store) as opened:
            ok = opened.ok
            assert len(ok) == 4 and sorted(ok.label) == ["decoy", "decoy", "square", "square"]
            for _, row in ok[ok.label == "square"].iterrows():
                assert [row.target_x0, row.target_y0, row.target_x1, row.target_y1] == xyxy(BOX)
                assert top_area_inside(opened.map(row)) >= 0.75, method
                assert opened.explanation(row, photo=False).boxes()[0][0] == xyxy(BOX)


def test_web_api_lists_detections_and_explains_the_clicked_one(one_torch_thread):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import io

    from fastapi.testclient import TestClient

    from patchlens.web import WebConfig, create_app

    model = patchlens.load_model(PlantedDetector(), input_size=SIZE, mean=(0, 0, 0), std=(1, 1, 1), labels=LABELS)
    buf = io.BytesIO()
    Image.fromarray(planted_scene()).save(buf, format="PNG")
    with TestClient(create_app(model, config=WebConfig(grid=8)), base_url="http://127.0.0.1") as client:
        assert client.get("/api/info").json()["model"]["detector"] is True
        info = client.post("/api/images", files={"file": ("scene.png", buf.getvalue(), "image/png")}).json()
        first = info["predictions"][0]
        assert first["label"] == "square" and first["index"] == 0 and first["box"] == xyxy(BOX)
        methods = [{"name": m, "params": p} for m, p in FRONT]
        job = client.post("/api/jobs", json={"image_id": info["id"], "methods": methods, "target": str(first["index"])}).json()
        for _ in range(600):
            job = client.get(f"/api/jobs/{job['id']}").json()
            if job["status"] not in ("queued", "running"):
                break
            __import__("time").sleep(0.05)
        assert job["status"] == "done", job
        assert [r["method"] for r in job["results"]] == [m for m, _ in FRONT]
        for r in job["results"]:
            assert r["objective"]["box"] == xyxy(BOX)
            saliency = np.load(io.BytesIO(client.get(f"/api/results/{r['id']}/map.npy").content))
            assert top_area_inside(saliency) >= 0.75, r["method"]
        bad = client.post("/api/jobs", json={"image_id": info["id"], "methods": methods[:1], "target": "5"})
        assert bad.status_code == 422 and "detections 0..1" in bad.json()["detail"]


def test_random_torchvision_detector_from_the_command_line_offline(tmp_path, capsys, one_torch_thread):
    photo = tmp_path / "street.png"
    Image.fromarray((np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8)).save(photo)
    out = tmp_path / "maps"
    code = main(["explain", str(photo), "--model", "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", "--no-pretrained",
                 "--method", "drise", "--n-masks", "6", "--batch-size", "3", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    record = json.loads(next(out.glob("street_drise_0_*.json")).read_text())
    box = record["objective"]["box"]
    assert record["objective"]["kind"] == "detection" and len(box) == 4
    assert "pre-NMS region proposals" in record["extras"]["runtime"]["proposals"]
    drawn = np.asarray(Image.open(next(out.glob("street_drise_0_*.png"))).convert("RGB")).astype(int)
    exp = patchlens.Explanation(  # the same overlay without its box: the difference is the box's outline
        saliency=np.load(next(out.glob("street_drise_0_*.npy"))), target=0, label=record["label"], score=record["score"],
        method="drise", params=record["params"], seed=0, model=record["model"], forward_passes=7, seconds=0.0,
        image_name=str(photo), image=np.asarray(Image.open(photo).convert("RGB")), objective=record["objective"],
        score_is_probability=False,
    )
    plain = np.asarray(exp.overlay(boxes=[])).astype(int)
    changed = np.abs(drawn - plain).sum(-1) > 0
    ys, xs = changed.nonzero()
    title = plain.shape[0] - 240  # the title band above the photo (the colour bar is to the right)
    assert changed.any()
    assert xs.min() >= box[0] - 3 and ys.min() >= title + box[1] - 30  # the label's tab sits above the box
    assert xs.max() <= max(box[2] + 3, box[0] + 200) and ys.max() <= title + box[3] + 3


class BoxedElsewhere(PlantedDetector):
    """Scores the square but reports its box where the decoy is: evidence far from its own box."""

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = super().forward(x)
        for d in out:
            d["boxes"] = d["boxes"].flip(0)
        return out


def test_the_audit_measures_evidence_against_each_detections_own_box(tmp_path, one_torch_thread):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for seed in range(3):
        Image.fromarray(planted_scene(seed=seed)).save(folder / f"s{seed}.png")
    found = {}
    for name, module in (("honest", PlantedDetector()), ("elsewhere", BoxedElsewhere())):
        store = tmp_path / f"{name}.store"
        model = patchlens.load_model(module, input_size=SIZE, mean=(0, 0, 0), std=(1, 1, 1), labels=LABELS)
        run_batch(str(folder), str(store), model=model, method="occlusion", target="top1", window=8, stride=4, progress=False)
        page = tmp_path / f"{name}.html"
        found[name] = patchlens.report(str(store), page)
        assert 'id="detections"' in page.read_text()
        assert json.loads((tmp_path / "findings.json").read_text())["detections"]["classes"]["square"]["detections"] == 3
    honest, elsewhere = found["honest"].detections["classes"]["square"], found["elsewhere"].detections["classes"]["square"]
    assert honest["inside"] >= 0.75 and not found["honest"].detections["flagged"]
    assert elsewhere["far"] > 0.9 and "lies far from their boxes" in found["elsewhere"].detections["flagged"][0]


def test_cams_of_a_torchvision_detector_read_its_backbone(one_torch_thread):
    """layer='auto' is the backbone's last stage: left to itself it would find the RoI head's per-proposal features."""
    model = patchlens.load_model("torchvision:ssdlite320_mobilenet_v3_large", pretrained=False)
    assert model.labels[1] == "person" and model.cam_layer == "backbone.features.1"
    image = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
    exp = patchlens.explain(model, image, "gradcam")
    assert exp.extras["layer"] == "backbone.features.1" and exp.saliency.shape == (120, 160) and np.isfinite(exp.saliency).all()
    assert exp.objective["kind"] == "detection" and "final detections" in exp.extras["runtime"]["proposals"]
    with pytest.raises(patchlens.MethodError, match="rows for one image"):
        patchlens.explain(patchlens.load_model("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", pretrained=False),
                          image, "gradcam", layer="roi_heads.box_roi_pool")
