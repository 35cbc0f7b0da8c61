"""Objectives: what a score is, declared once, for every method, metric and front-end.

A target spec (``"top1"``, ``"present"``, ``"topk:3,tabby"``) is parsed once
(:mod:`.requests`) and resolved once per image, from the unmasked image's
output, into an :class:`Objective`: a value that turns a batch of the model's
output into one score per target. The engine, the methods and the metrics only
call it (:mod:`.base` explains the contract); classifiers and multi-label
models have theirs in :mod:`.classes`, object detectors in :mod:`.detections`, and a new kind of model adds its own
objective and resolver (:mod:`.families`).
"""

from .base import Objective, objective_from_record, register_objective
from .classes import ClassScores, LabelScores, class_index, class_objective
from .detections import DEFAULT_MIN_SCORE, DetectionScores, detection_predictions, pairwise_iou
from .families import check_targets, predictions, register_family, resolve_objective
from .requests import (
    MAX_TARGETS,
    PRESENT_THRESHOLD,
    All,
    Box,
    Index,
    Labelled,
    Name,
    Present,
    Request,
    TargetSpec,
    Top,
    TrueLabel,
    names_several,
    parse_targets,
)

__all__ = [
    "Objective",
    "ClassScores",
    "LabelScores",
    "DetectionScores",
    "DEFAULT_MIN_SCORE",
    "pairwise_iou",
    "detection_predictions",
    "All",
    "Box",
    "Labelled",
    "objective_from_record",
    "register_objective",
    "register_family",
    "resolve_objective",
    "check_targets",
    "class_objective",
    "class_index",
    "predictions",
    "parse_targets",
    "names_several",
    "Request",
    "Top",
    "Index",
    "Name",
    "Present",
    "TrueLabel",
    "TargetSpec",
    "MAX_TARGETS",
    "PRESENT_THRESHOLD",
]
