"""Targets are resolved once to explicit class indices, which the result records."""

from __future__ import annotations

import pytest
import torch

import patchlens
from conftest import planted_image
from patchlens import TargetError
from patchlens.models import CallableClassifier, imagenet_labels
from patchlens.objectives import resolve_objective

PROBS = torch.tensor([0.1, 0.5, 0.04, 0.3, 0.06])


def resolve_targets(spec, scores: torch.Tensor, model) -> list[int]:
    """The class indices ``spec`` names, given the model's scores ``(C,)`` on the image."""
    return list(resolve_objective(spec, scores[None], model).indices)
LABELS = ["cat", "dog", "fish", "bird", "horse"]


def clf(labels=LABELS):
    return CallableClassifier(lambda x: PROBS.expand(x.shape[0], -1), labels=labels, input_size=8)


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("top1", [1]),
        ("topk:3", [1, 3, 0]),
        ("top2", [1, 3]),
        (4, [4]),
        ("2", [2]),
        ("bird", [3]),
        ("Bird", [3]),
        ("dog,fish", [1, 2]),
        (["top1", "cat", 1], [1, 0]),
        ("topk:99", [1, 3, 0, 4, 2]),
    ],
)
def test_resolution(spec, expected):
    assert resolve_targets(spec, PROBS, clf()) == expected


@pytest.mark.parametrize(
    "spec,message",
    [
        (7, "out of range"),
        (-1, "out of range"),
        ("topk:0", "positive"),
        ("topk:x", "positive"),
        ("unicorn", "not a class"),
        ("do", "did you mean 'dog'"),
        ([], "no target"),
        (2.5, "a target is"),
    ],
)
def test_bad_targets(spec, message):
    with pytest.raises(TargetError, match=message):
        resolve_targets(spec, PROBS, clf())


def test_names_need_labels():
    with pytest.raises(TargetError, match="no class labels"):
        resolve_targets("cat", PROBS, clf(labels=None))


def test_imagenet_synonyms_and_ambiguity():
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[281] == "tabby" and labels[967] == "espresso"
    probs = torch.full((1000,), 0.001)
    c = CallableClassifier(lambda x: probs.expand(x.shape[0], -1), labels=labels, input_size=8)
    assert resolve_targets("tabby cat", probs, c) == [281]
    with pytest.raises(TargetError, match="several classes"):
        resolve_targets("crane", probs, c)  # the bird (134) and the machine (517)


def test_topk_returns_one_explanation_per_class_from_one_run(planted):
    exps = patchlens.explain(planted, planted_image(), "rise", n_masks=50, target="topk:2")
    assert [e.target for e in exps] == [1, 0]
    assert exps[0].forward_passes == exps[1].forward_passes == 51  # the same masks serve both classes


# -- one parser: what validation accepts is what execution accepts ------------------------------------------

#: every syntax, valid and not: keywords, indices, names, lists, thresholds, odd spacing and case
SYNTAXES = [
    "top1", "TOP1", "top3", "topk:3", "topk:1", "topk:0", "topk:x", "topk:", "top0", "top", "present", "present:0.3",
    "present:1", "present:2", "present:-1", "present:x", "present:", "0", "4", "5", "-1", "dog", "Dog", " dog ",
    "do", "unicorn", "dog,fish", "topk:3,dog", "topk:3,tabby", "dog,,fish", ",", "", "label", "top1,present",
    7, 2, -1, True, 2.5, [], ["top1", "cat", 1], ["topk:2", "present:0.3"], ["dog", 9],
]


def accepts(check) -> bool:
    try:
        check()
        return True
    except TargetError:
        return False


@pytest.mark.parametrize("spec", SYNTAXES, ids=repr)
def test_validation_and_execution_accept_exactly_the_same_targets(spec):
    from patchlens.objectives import check_targets, resolve_objective

    model = clf()
    output = model(torch.zeros(1, 3, 8, 8))
    checked = accepts(lambda: check_targets(spec, model))
    resolved = accepts(lambda: resolve_objective(spec, output, model))
    assert checked == resolved, (spec, checked, resolved)


def test_the_issue_example_runs_where_it_validates(default_model, tmp_path):
    """`topk:3,tabby` passed the run-level check and then failed on every image; now both accept it."""
    from patchlens.validation import check_target

    check_target(default_model, "topk:3,tabby")
    exps = patchlens.explain(default_model, "example:chelsea", "occlusion", window=112, stride=112, target="topk:3,tabby")
    assert len(exps) in (3, 4) and 281 in [e.target for e in exps]  # tabby is among the top 3 or added after them


def test_present_resolves_labels_at_or_above_the_threshold_highest_first():
    from patchlens.objectives import resolve_objective

    model = clf()
    objective = resolve_objective("present:0.1", PROBS[None], model)
    assert objective.indices == (1, 3, 0) and objective.threshold == 0.1  # 0.5, 0.3, 0.1 (>= 0.1 counts)
    none = resolve_objective("present", torch.full((1, 5), 0.2), model)
    assert len(none) == 0 and "no class present" in none.note
