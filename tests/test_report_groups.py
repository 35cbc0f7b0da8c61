"""The audit finds strategies (issue 22): a shortcut carried by a third of a class is flagged as a SpRAy group,
and a class of centred objects, decided by the object, is not flagged when its boxes are given."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import patchlens
from patchlens.audit.signals import fixed_position, packed_object
from patchlens.batch import open_store, run_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_fixtures import OCCLUSION, TAGGED, subpopulation_classifier, subpopulation_dataset, write_csv

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The subpopulation set explained for each image's own class, from a source list with boxes."""
    root = tmp_path_factory.mktemp("groups")
    run_batch(str(write_csv(root / "boxes.csv", subpopulation_dataset(root))), str(root / "store"),
              model=subpopulation_classifier(), target="label", progress=False, **OCCLUSION)
    return root / "store"


def test_the_tagged_third_is_a_flagged_group_and_the_centred_class_is_not_flagged(store, tmp_path: Path) -> None:
    findings = patchlens.report(store, tmp_path / "audit.html")
    dog, cup = (next(c for c in findings.classes if c.label == name) for name in ("dog", "cup"))
    # class-wide shares stay under their thresholds: a third of the class is not most of it
    assert {s.kind for s in dog.flagged} == {"group"}
    (signal,) = dog.flagged
    group = dog.groups[signal.group]
    tagged = {f"dog_{i:02d}.png" for i in TAGGED}
    assert {Path(findings.images[i].path).name for i in group.members} == tagged
    assert group.flagged and group.size == 4 and signal.images == 4
    assert group.outside > 0.9 and group.rest_outside < 0.5 and group.place[0] < 0.2 and group.place[1] > 0.8
    assert "4 of 12 images (33%)" in signal.sentence and "outside the object's box" in signal.sentence
    assert signal.tier == 0
    # the false flag: every cup image has its evidence at one central point, inside every box
    fixed = next(s for s in cup.signals if s.kind == "fixed_position")
    assert fixed.value >= 0.6 and not fixed.flagged and "not a shortcut" in fixed.sentence
    assert cup.flagged == [] and not any(g.flagged for g in cup.groups)
    # the page shows the group with its share, mean map, sentence and examples, and links to its rows
    html = (tmp_path / "audit.html").read_text()
    card = html[html.index(f'id="class-{findings.classes.index(dog)}-group-{signal.group}"'):]
    card = card[:card.index('<div class="group', 10) if '<div class="group' in card[10:] else len(card)]
    assert "FLAGGED" in card and "4 map(s), 33% of the class" in card and 'alt="mean map of group' in card
    assert "show its 4 image(s)" in card and card.count('class="ex"') == 3
    assert f'href="#class-{findings.classes.index(dog)}-group-{signal.group}"' in html  # from "Look at these first"
    # findings.json has the groups, with all their members and what was measured
    data = json.loads((tmp_path / "findings.json").read_text())
    assert data["version"] == 2
    dog_json = next(c for c in data["classes"] if c["label"] == "dog")
    flagged_json = [g for g in dog_json["groups"] if g["flagged"]]
    assert [sorted(g["members"]) for g in flagged_json] == [sorted(group.members)]
    assert sum(g["size"] for g in dog_json["groups"]) == 12
    assert {i["group"] for i in data["images"] if i["label"] == "dog"} == set(range(len(dog.groups)))
    assert [(f["label"], f["kind"], f["group"]) for f in data["flagged"]] == [("dog", "group", signal.group)]


def test_without_boxes_the_centred_class_is_flagged_with_its_caveat_and_ranked_last(store) -> None:
    with open_store(store) as opened:  # the same maps as if the source list had given no boxes
        opened.manifest[["box_x0", "box_y0", "box_x1", "box_y1"]] = np.nan
        findings = patchlens.report(opened)
    cup = next(c for c in findings.classes if c.label == "cup")
    (fixed,) = [s for s in cup.flagged if s.kind == "fixed_position"]
    assert fixed.tier == 2 and "centred objects" in fixed.sentence and "may be the object itself" in fixed.sentence
    dog = next(c for c in findings.classes if c.label == "dog")
    groups = [s for s in dog.flagged if s.kind == "group"]
    assert groups and all("cannot be told from objects" in s.sentence for s in groups)
    assert findings.flagged[-1] is fixed or findings.flagged[-1].tier == 2
    assert [s.tier for s in findings.flagged] == sorted(s.tier for s in findings.flagged)


def test_a_fixed_point_on_the_objects_is_not_flagged_and_one_beside_them_is() -> None:
    peaks = np.array([[0.5, 0.5], [0.51, 0.5], [0.5, 0.49], [0.49, 0.5]])
    centre, corner = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    centre[20:44, 20:44] = True
    corner[:10, :10] = True
    on = fixed_position("cup", list("abcd"), peaks, np.ones(4), [packed_object(centre)] * 4)
    beside = fixed_position("cup", list("abcd"), peaks, np.ones(4), [packed_object(corner)] * 4)
    bare = fixed_position("cup", list("abcd"), peaks, np.ones(4))
    assert not on.flagged and on.tier == 0 and "in 4 of the 4" in on.sentence
    assert beside.flagged and beside.tier == 0 and "beside the object" in beside.sentence
    assert bare.flagged and bare.tier == 2


def test_a_result_framed_on_its_own_box_is_measured_relative_to_that_box() -> None:
    """The seam for detectors: a frame (the box widened by half its side each way) puts the box in the grid's middle
    half, wherever it is in the photo and even when the frame reaches past the photo's edge."""
    from patchlens.audit.maps import GRID, align, framed, object_mask, peak
    from patchlens.audit.subjects import subject, widened

    for box in [(10.0, 20.0, 50.0, 60.0), (150.0, 0.0, 200.0, 30.0)]:  # the second one touches two edges
        saliency = np.zeros((100, 200), np.float32)
        x0, y0, x1, y1 = (int(v) for v in box)
        saliency[y0:y0 + (y1 - y0) // 4, x0:x0 + (x1 - x0) // 4] = 1  # evidence in the box's top-left quarter
        frame = widened(box)
        obj = object_mask(200, 100, box, None, frame=frame)
        quarter, half = GRID // 4, GRID // 2
        assert obj[quarter:quarter + half, quarter:quarter + half].all() and obj.sum() == half * half
        x, y = peak(align(framed(saliency, frame)))
        assert 0.25 <= x <= 0.40 and 0.25 <= y <= 0.40
    row = {"label": "cat", "box_x0": 1.0, "box_y0": 2.0, "box_x1": 3.0, "box_y1": 4.0, "mask_path": None}
    assert subject(row).key == "cat" and subject(row).box == (1.0, 2.0, 3.0, 4.0) and subject(row).frame is None
    assert subject({**row, "box_x1": float("nan")}).box is None
