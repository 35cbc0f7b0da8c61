"""Object detectors: the planted detector's maps find its box, D-RISE equals a per-mask loop, targets resolve as typed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import patchlens
from conftest import BOX, SIZE, SMALL, planted_classifier, planted_image
from detector_fixtures import DECOY, LABELS, PlantedDetector, planted_detector, planted_scene, top_area_inside, xyxy
from patchlens.capabilities import ModelKind
from patchlens.errors import MethodError, ModelError, TargetError
from patchlens.methods.rise import RiseMasks
from patchlens.models.detections import Detections, as_detections
from patchlens.objectives import DetectionScores, objective_from_record, resolve_objective


@pytest.mark.parametrize(
    "method,params",
    [("drise", {"n_masks": 500, "grid": 8}), ("occlusion", {"window": 8, "stride": 4}), ("gradcam", {})],
)
def test_maps_of_the_planted_detector_lie_in_its_box(method, params, one_torch_thread):
    exp = patchlens.explain(planted_detector(), planted_scene(), method, target="top1", **params)
    assert exp.label == "square" and exp.target == 0 and exp.objective["box"] == xyxy(BOX)
    share = top_area_inside(exp.saliency)
    assert share >= 0.75, f"{method}: only {share:.0%} of the top box-sized area is in the box"


def test_the_box_measure_can_fail():
    """A map hot on the decoy scores nothing in the square's box."""
    decoy = np.zeros((SIZE, SIZE))
    t, l, b, r = DECOY
    decoy[t:b, l:r] = 1
    assert top_area_inside(decoy) == 0.0


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _match(answer: dict, box: list[float], label: int, vector: list[float] | None) -> float:
    """D-RISE's weight of one masked answer for one target, one detection at a time, in plain floats."""
    best = 0.0
    for j in range(len(answer["boxes"])):
        other = [float(v) for v in answer["boxes"][j]]
        if vector is not None:
            mine = [float(v) for v in answer["class_scores"][j]]
            similarity = sum(a * b for a, b in zip(vector, mine)) / (math.hypot(*vector) * math.hypot(*mine))
        else:
            similarity = float(answer["scores"][j]) if int(answer["labels"][j]) == label else 0.0
        best = max(best, _iou(box, other) * similarity)
    return best


@pytest.mark.parametrize("vectors", [False, True])
@pytest.mark.parametrize("centre", [True, False])
def test_drise_equals_a_per_mask_loop_on_the_same_masks(vectors, centre, one_torch_thread):
    module = PlantedDetector(vectors=vectors)
    model = patchlens.load_model(module, input_size=SIZE, mean=(0, 0, 0), std=(1, 1, 1), labels=LABELS)
    image = planted_scene()
    n, grid, p = 120, 6, 0.5
    exps = patchlens.explain(model, image, "drise", target="all:0.1", n_masks=n, grid=grid, p_keep=p, centre=centre,
                             seed=4, batch_size=7)
    assert [e.label for e in exps] == ["square", "decoy"]
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    masks = RiseMasks(n, grid, p, SIZE, SIZE, torch.Generator().manual_seed(4), torch.device("cpu")).masks(0, n)[:, 0]
    with torch.no_grad():
        plain = module(x[None])[0]
    targets = [(xyxy(BOX), 1), (xyxy(DECOY), 2)]
    for t, (box, label) in enumerate(targets):
        vector = [float(v) for v in plain["class_scores"][t]] if vectors else None
        weights = []
        for m in masks:
            with torch.no_grad():
                answer = module((0.5 + m * (x - 0.5))[None])[0]  # the grey baseline where the mask hides
            weights.append(_match(answer, box, label, vector))
        mean = sum(weights) / n if centre else 0.0
        reference = sum((w - mean) * m.double() for w, m in zip(weights, masks)) / (n * p)
        np.testing.assert_allclose(exps[t].saliency, reference.numpy(), atol=1e-5, rtol=0)


def test_targets_of_a_detector(one_torch_thread):
    model = planted_detector(min_score=0.3)
    image = planted_scene()
    output = model(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    size = (SIZE, SIZE)

    def resolve(spec):
        return resolve_objective(spec, output, model, image_size=size)

    assert resolve("top1").labels == ("square",)
    assert resolve("topk:2").indices == (0, 1)
    assert resolve("all").labels == ("square",)  # the decoy (0.29) is under the model's min_score 0.3
    assert resolve("all:0.2").labels == ("square", "decoy")
    assert resolve("label:decoy").labels == () and resolve("label:decoy").note.startswith(
        "no 'decoy' detection scoring at least 0.3: the strongest 'decoy' is detection 1 with score 0.2")  # not "use top1"
    assert "use decoy (its strongest)" in resolve("label:decoy").note
    assert resolve("decoy").indices == (1,)  # a bare class name: its strongest detection, whatever its score
    assert resolve("1").labels == ("decoy",)
    box = resolve("box:6,44,20,58:decoy")
    rec = box.records()[0]
    assert rec["index"] == -1 and rec["label"] == "decoy" and rec["box"] == [6.0, 44.0, 20.0, 58.0]
    assert rec["score"] == pytest.approx(resolve("1").scores[0], rel=1e-6)  # the decoy's own detection matches it exactly
    assert resolve("box:0,0,10,10").records()[0]["score"] == 0.0  # nothing there
    with pytest.raises(TargetError, match="the model found detections 0..1"):
        resolve("2")
    with pytest.raises(TargetError, match="present is for multi-label models"):
        resolve("present")
    with pytest.raises(TargetError, match="not a class"):
        resolve("label:cat")
    with pytest.raises(TargetError, match="starts outside"):
        resolve("box:70,0,80,10")
    with pytest.raises(TargetError, match=r"box:0,0,5000,5000: the box ends outside the 64x64 photo"):
        resolve("box:0,0,5000,5000")  # was clipped to the whole photo without a word
    assert resolve("box:0,0,65,65").records()[0]["box"] == [0.0, 0.0, 64.0, 64.0]  # one pixel of slack: inclusive ends
    with pytest.raises(TargetError, match=r"^box:1,2,3: a box is box:x0,y0,x1,y1"):
        resolve("box:1,2,3")  # named as typed, not "box:1"


def test_random_detector_weights_are_drawn_from_the_seed_and_leave_the_callers_state_alone():
    pytest.importorskip("torchvision")
    from patchlens.models.hub import load_torchvision

    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a, b = (load_torchvision("ssdlite320_mobilenet_v3_large", pretrained=False) for _ in range(2))
    c = load_torchvision("ssdlite320_mobilenet_v3_large", pretrained=False, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    wa, wb, wc = (dict(m.module.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # each load was another detector, explaining other boxes
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_a_detector_runs_at_fp32_even_when_bf16_autocast_was_asked():
    """On a GPU "auto" means bf16 for a classifier; under it torchvision's boxes snap to multiples of 16."""
    model = planted_detector(amp=torch.bfloat16)
    assert model.model_kind == ModelKind.DETECTOR and model.autocast_dtype is None


def test_a_box_is_drawn_in_the_photos_pixels_when_the_map_has_another_size(one_torch_thread):
    from patchlens.explanation import Explanation

    model = planted_detector()
    exp = patchlens.explain(model, planted_scene(), "occlusion", target="box:6,44,20,58:decoy", window=8, stride=8)
    small = Explanation(**{**exp.__dict__, "saliency": exp.saliency[::2, ::2].copy()})
    assert small.boxes()[0][0] == [3.0, 22.0, 10.0, 29.0]  # the map's pixels
    assert small.boxes((SIZE, SIZE))[0][0] == [6.0, 44.0, 20.0, 58.0]  # the photo's, where overlay() draws it


def test_a_detection_record_rebuilds_the_same_objective(one_torch_thread):
    model = planted_detector()
    exp = patchlens.explain(model, planted_scene(), "occlusion", target="box:6,44,20,58:decoy", window=16, stride=16)
    rebuilt = objective_from_record(exp.objective)
    assert isinstance(rebuilt, DetectionScores) and rebuilt.records() == [dict(exp.objective)]
    x = torch.from_numpy(planted_scene()).permute(2, 0, 1)[None].float() / 255
    assert float(rebuilt(model(x))[0, 0]) == pytest.approx(exp.score)


def test_a_function_returning_detections_is_recognised_and_a_classifier_is_not_one():
    module = PlantedDetector()

    def detect(batch: np.ndarray) -> list[dict]:  # numpy in, numpy out: a black box
        with torch.no_grad():
            out = module(torch.from_numpy(batch).permute(0, 3, 1, 2))
        return [{k: v.numpy() for k, v in d.items()} for d in out]

    model = patchlens.load_model(detect, input_size=SIZE, numpy=True, labels=LABELS)
    assert not model.kind_settled
    exp = patchlens.explain(model, planted_scene(), "drise", n_masks=300, grid=8)  # the kind is asked once, first
    assert model.model_kind == ModelKind.DETECTOR and exp.label == "square" and top_area_inside(exp.saliency) >= 0.75
    with pytest.raises(MethodError, match="drise: explains object detectors, but planted is one of the classifiers"):
        patchlens.explain(planted_classifier(), planted_image(), "drise")
    declared = patchlens.load_model(lambda x: torch.ones(len(x), 2), input_size=SIZE, kind="detector")
    with pytest.raises(ModelError, match="a detector returns one dict of boxes, scores and labels"):
        patchlens.explain(declared, planted_image(), "occlusion")
    with pytest.raises(TargetError, match="a target of object detectors"):
        patchlens.explain(planted_classifier(), planted_image(), "occlusion", target="box:1,1,5,5")


@pytest.mark.parametrize(
    "answer,message",
    [
        ([{"boxes": [[0, 0, 1, 1]], "scores": [0.5]}], "has no labels"),
        ([{"boxes": [[0, 0, 1]], "scores": [0.5], "labels": [1]}], r"shape \[1, 3\]"),
        ([{"boxes": [[0, 0, 1, 1]], "scores": [0.5, 0.2], "labels": [1]}], "1 detections boxes but 2 scores"),
        ([{"boxes": [[0, 0, 1, float("nan")]], "scores": [0.5], "labels": [1]}], "NaN"),
        ([{"boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": [1]}] * 2, "2 answers for a batch of 1"),
    ],
)
def test_a_malformed_answer_is_one_line(answer, message):
    with pytest.raises(ModelError, match=message):
        as_detections(answer, 1, (8, 8), "det")


def test_batches_of_detections_join_and_split():
    a = as_detections([{"boxes": [[0, 0, 4, 4]], "scores": [0.9], "labels": [1]}], 1, (8, 8), "det")
    b = as_detections([{"boxes": [[0, 0, 8, 8], [4, 4, 8, 8]], "scores": [0.5, 0.4], "labels": [2, 1]}] * 2, 2, (8, 8), "det")
    joined = Detections.cat([a, b])
    assert len(joined) == 3 and joined.boxes.shape == (3, 2, 4) and joined.valid.tolist() == [[True, False], [True, True], [True, True]]
    assert joined[1:].listed(0) == b.listed(0) and joined[0].listed(0)[0]["box"] == [0.0, 0.0, 0.5, 0.5]


@pytest.mark.slow
def test_a_remote_detector_through_a_custom_json_api(one_torch_thread):
    """decode() returns one dict of boxes, scores and labels per image: the remote model is a detector."""
    import json as jsonlib

    from remote_fakes import FakeServer, send

    module = PlantedDetector()

    def respond(handler, method, path, body):
        pixels = torch.tensor(jsonlib.loads(body)["pixels"]).permute(0, 3, 1, 2)
        with torch.no_grad():
            out = module(pixels)
        send(handler, 200, {"results": [{k: v.tolist() for k, v in d.items()} for d in out]})

    with FakeServer(respond) as server:
        remote = patchlens.load_model(
            server.base + "/detect", protocol="json", input_size=SIZE, labels=LABELS,
            encode=lambda b: {"pixels": b.tolist()}, decode=lambda answer: answer["results"],
        )
        exp = patchlens.explain(remote, planted_scene(), "drise", n_masks=200, grid=8, batch_size=50)
        assert remote.model_kind == ModelKind.DETECTOR and exp.label == "square" and exp.objective["box"] == xyxy(BOX)
        assert top_area_inside(exp.saliency) >= 0.75
        remote.close()


def test_ultralytics_results_become_detections(monkeypatch, one_torch_thread):
    """The YOLO adapter reads ultralytics' Results (boxes.xyxy, conf, cls, names); here a stand-in package
    answers with the planted detector's boxes, so the maps must find its box."""
    import sys
    import types

    module = PlantedDetector()
    calls = []

    class Boxes:
        def __init__(self, d):
            self.xyxy, self.conf, self.cls = d["boxes"], d["scores"], d["labels"].float()

    class YOLO:
        names = {0: "background", 1: "square", 2: "decoy"}

        def __init__(self, weights):
            self.weights = weights

        def predict(self, batch, verbose, conf, imgsz, device):
            calls.append((tuple(batch.shape), conf, tuple(imgsz)))
            with torch.no_grad():
                return [types.SimpleNamespace(boxes=Boxes(d)) for d in module(torch.nn.functional.interpolate(batch, size=SIZE))]

    monkeypatch.setitem(sys.modules, "ultralytics", types.SimpleNamespace(YOLO=YOLO))
    model = patchlens.load_model("ultralytics:yolo-planted.pt", input_size=SIZE)
    assert model.model_kind == ModelKind.DETECTOR and model.labels == LABELS
    exp = patchlens.explain(model, planted_scene(), "occlusion", window=8, stride=4)
    assert exp.label == "square" and top_area_inside(exp.saliency) >= 0.75
    assert calls[0][1:] == (0.001, (SIZE, SIZE))
    monkeypatch.setitem(sys.modules, "ultralytics", None)
    with pytest.raises(ModelError, match="pip install 'patchlens\\[ultralytics\\]'"):
        patchlens.load_model("ultralytics:yolo-planted.pt")


def test_metrics_and_compare_measure_a_detection_in_its_own_box(one_torch_thread):
    from patchlens.metrics import compare, evaluate

    model = planted_detector()
    image = planted_scene()
    exp = patchlens.explain(model, image, "occlusion", window=8, stride=4)
    decoy_map = exp.saliency.copy()
    decoy_map[...] = 0
    t, l, b, r = DECOY
    decoy_map[t:b, l:r] = 1  # a map of the wrong place
    table = evaluate(model, [image, image], [exp, decoy_map], ["energy_in_region", "pointing_game", "deletion"], target="top1")
    assert table[0]["energy_in_region"] > 0.75 and table[0]["pointing_game"] == 1.0
    assert table[1]["energy_in_region"] == 0.0 and table[1]["pointing_game"] == 0.0
    assert table[0]["deletion"] < table[1]["deletion"]  # removing the box first drops the detection's score first
    result = compare(model, image, ["occlusion", "drise"], ["deletion", "insertion", "energy_in_region"], target="all:0.2",
                     method_params={"occlusion": {"window": 8, "stride": 4}, "drise": {"n_masks": 300, "grid": 8}}, baselines=())
    rows = result.table
    assert len(rows) == 4 and {r["label"] for r in rows} == {"square", "decoy"}
    assert all(r["energy_in_region"] > 0.5 for r in rows if r["label"] == "square")


def test_drise_agrees_with_vision_explanation_methods_on_the_same_masks(one_torch_thread):
    """Microsoft's D-RISE on the same detector and masks (run where it is installed: see benchmarks/drise_peer.py)."""
    pytest.importorskip("vision_explanation_methods.explanations.drise")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import drise_peer

    drise, common, wrapper_class = drise_peer.vem_modules()
    ours, wrapper = drise_peer.planted_pair(common)
    masks = RiseMasks(150, 16, 0.5, SIZE, SIZE, torch.Generator().manual_seed(2), torch.device("cpu")).masks(0, 150)[:, 0]
    mine, _, exp = drise_peer.run_ours(ours, planted_scene(), 150, 2, None)
    theirs, _ = drise_peer.run_vem(drise, common, wrapper, planted_scene(), masks, exp.objective["box"])
    assert drise_peer.pearson(mine, theirs) >= 0.95


@pytest.mark.parametrize("name", sorted(patchlens.list_methods()))
def test_every_method_that_explains_detectors_runs_on_one(name, one_torch_thread):
    """Each registered method either explains the planted detector through its objective (a finite map of the
    photo's shape, a detection recorded) or says in one line why it cannot (attention rollout needs a ViT)."""
    from patchlens.methods import registry

    cls = registry()[name]
    model = planted_detector()
    if ModelKind.DETECTOR not in cls.models:
        pytest.skip(f"{name} does not explain detectors")
    if name == "attention_rollout":
        with pytest.raises(MethodError, match="Vision Transformer"):
            patchlens.explain(model, planted_scene(), name)
        return
    exp = patchlens.explain(model, planted_scene(), name, target="top1", **SMALL.get(name, {}))
    assert exp.saliency.shape == (SIZE, SIZE) and np.isfinite(exp.saliency).all()
    assert exp.objective["kind"] == "detection" and exp.label == "square" and exp.objective["box"] == xyxy(BOX)
