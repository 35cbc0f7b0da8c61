"""torchvision's object detectors (Faster R-CNN, RetinaNet, FCOS, SSD, SSDlite) as patchlens models.

A torchvision detector takes a batch of [0, 1] images and normalises and
resizes them itself, so the adapter hands them over as they are (mean 0, std
1) at the size the model resizes to anyway (its transform's ``min_size``).
Boxes come back in the input's pixels; labels index COCO's 91 categories
(``__background__`` and ``N/A`` included), whose names torchvision keeps with
its weights' descriptions, offline.

Proposals before non-maximum suppression (what D-RISE matches masked answers
against, with their full class probability vectors) are read from the two-stage
models (Faster R-CNN, Mask and Keypoint R-CNN): temporary hooks on
``roi_heads`` catch the region proposals and the box predictor's class logits
and box deltas of one forward pass; each proposal becomes an entry with the
softmax over all classes (background included) and the box of its most
probable foreground class, decoded and clipped as ``postprocess_detections``
does. Each final detection gets the class vector of the proposal it came
from. The hooks are removed after every pass, also when the model raises.
One-stage models (RetinaNet, FCOS, SSD) expose no such vectors: their final
detections are used, weighed by their scores. Loaded by name, a model keeps
detections down to a score of 0.001 (torchvision's default is 0.05, 0.2 for
FCOS), so that weak matches still count and random weights still detect.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from ...errors import ModelError
from ..torch_module import TorchClassifier

#: the detection models of torchvision, by constructor name, and the keyword of their score threshold
SCORE_KEYWORDS = {
    "fasterrcnn": "box_score_thresh",
    "maskrcnn": "box_score_thresh",
    "keypointrcnn": "box_score_thresh",
    "retinanet": "score_thresh",
    "fcos": "score_thresh",
    "ssd": "score_thresh",
    "ssdlite": "score_thresh",
}
#: the score threshold a detector loaded by name keeps
LOW_SCORE = 0.001
#: what ``proposals=`` accepts
PROPOSALS = ("auto", "detections")


def is_torchvision_detector(module: Any) -> bool:
    """Whether ``module`` is one of torchvision's detection models."""
    try:
        from torchvision.models.detection import FCOS, SSD, GeneralizedRCNN, RetinaNet
    except ImportError:
        return False
    return isinstance(module, (GeneralizedRCNN, RetinaNet, FCOS, SSD))


def coco_labels() -> list[str]:
    """COCO's 91 category names as torchvision's detectors number them (no download)."""
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    return list(FasterRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"])


def _class_count(module: torch.nn.Module) -> int | None:
    predictor = getattr(getattr(module, "roi_heads", None), "box_predictor", None)
    cls_score = getattr(predictor, "cls_score", None)
    if cls_score is not None:
        return int(cls_score.out_features)
    head = getattr(getattr(module, "head", None), "classification_head", None)
    return int(getattr(head, "num_classes", 0)) or None


def _input_side(module: torch.nn.Module) -> int:
    sizes = getattr(getattr(module, "transform", None), "min_size", None) or (800,)
    return int(sizes[-1])


class TorchvisionDetector(TorchClassifier):
    """A torchvision detection model; see the module's notes.

    Args:
        module: the model (never modified: no eval mode, hooks or thresholds left behind).
        proposals: "auto" reads pre-NMS proposals where the model has them (two-stage models),
            "detections" uses only the final detections.
        input_size, labels, device, model_id, min_score: as for any torch module (labels: COCO's by default).
    """

    kind = "detector"

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        input_size: int | tuple[int, int] | None = None,
        labels: Any = None,
        proposals: str = "auto",
        min_score: float = 0.5,
        device: str | torch.device | None = None,
        model_id: str | None = None,
        **options: Any,
    ) -> None:
        if options.pop("kind", "detector") != "detector":
            raise ModelError(f"{model_id or type(module).__name__}: a torchvision detection model is a detector (kind='detector')")
        for fixed in ("mean", "std", "activation", "softmax"):
            if fixed in options:
                raise ModelError(f"{model_id or type(module).__name__}: {fixed}= does not apply: torchvision's detectors normalise their inputs themselves")
        if proposals not in PROPOSALS:
            raise ModelError(f"{model_id or type(module).__name__}: proposals={proposals!r}: use one of {', '.join(PROPOSALS)}")
        count = _class_count(module)
        if labels is None and count == 91:
            labels = coco_labels()
        super().__init__(
            module, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), input_size=input_size or _input_side(module), labels=labels,
            activation="none", device=device, model_id=model_id or type(module).__name__, kind="detector",
            min_score=min_score, **{"amp": None, **options},  # fp32 on a GPU too: bf16 moves boxes (runtime.py)
        )
        self.outputs_probabilities = False
        self.proposals = proposals
        self.details = {"proposals": self.proposal_source}

    @property
    def cam_layer(self) -> str | None:
        """What ``layer="auto"`` means for CAM methods: the backbone's last stage (a map of the whole image).

        Left to the automatic choice, CAMs would read the last spatial output of the pass, which in a
        two-stage detector is the RoI head's features of each proposal, not a map of the image.
        """
        body = getattr(getattr(self.module, "backbone", None), "body", None)
        if body is not None and len(list(body.named_children())):
            return f"backbone.body.{list(body.named_children())[-1][0]}"
        features = getattr(getattr(self.module, "backbone", None), "features", None)  # SSD, SSDlite
        if features is not None and len(list(features.named_children())):
            return f"backbone.features.{list(features.named_children())[-1][0]}"  # a child runs, whoever calls it
        return None

    @property
    def proposal_source(self) -> str:
        """What D-RISE matches against, in words (recorded with every result)."""
        if self.proposals == "auto" and _two_stage(self.module):
            return "pre-NMS region proposals with softmax class vectors (roi_heads hooks)"
        return "final detections, weighed by their scores"

    @property
    def runtime_details(self) -> dict[str, object]:
        return {**super().runtime_details, "proposals": self.proposal_source}

    def _forward(self, x: torch.Tensor) -> Any:
        if self.proposals != "auto" or not _two_stage(self.module):
            return super()._forward(x)
        with _catching(self.module) as caught:
            out = super()._forward(x)
        return _with_proposals(self.module, out, caught, self.input_size)


def _two_stage(module: torch.nn.Module) -> bool:
    heads = getattr(module, "roi_heads", None)
    return heads is not None and hasattr(heads, "box_predictor") and hasattr(heads, "box_coder")


@contextlib.contextmanager
def _catching(module: torch.nn.Module) -> Iterator[dict[str, Any]]:
    """Hooks for one pass: the proposals and image sizes entering ``roi_heads``, the predictor's outputs."""
    heads: Any = module.roi_heads
    caught: dict[str, Any] = {}

    def before_heads(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        caught["proposals"] = kwargs.get("proposals", args[1] if len(args) > 1 else None)
        caught["image_shapes"] = kwargs.get("image_shapes", args[2] if len(args) > 2 else None)

    def after_predictor(_m: Any, _args: Any, out: Any) -> None:
        caught["class_logits"], caught["box_regression"] = out

    handles = [
        heads.register_forward_pre_hook(before_heads, with_kwargs=True),
        heads.box_predictor.register_forward_hook(after_predictor),
    ]
    try:
        yield caught
    finally:
        for h in handles:
            h.remove()


def _with_proposals(module: torch.nn.Module, out: Any, caught: dict[str, Any], size: tuple[int, int]) -> Any:
    """The model's detections, each with its class vector, and every proposal before suppression."""
    if not all(k in caught for k in ("proposals", "image_shapes", "class_logits")):
        return out  # the heads did not run as expected (a subclass): final detections only
    heads: Any = module.roi_heads
    proposals, shapes = caught["proposals"], caught["image_shapes"]
    counts = [len(p) for p in proposals]
    decoded = heads.box_coder.decode(caught["box_regression"], proposals)  # (sum P, C, 4), resized frame
    probabilities = torch.softmax(caught["class_logits"], -1)
    h, w = size
    answers = []
    for i, (boxes, probs) in enumerate(zip(decoded.split(counts), probabilities.split(counts))):
        rh, rw = shapes[i]
        scale = boxes.new_tensor([w / rw, h / rh, w / rw, h / rh])
        clipped = torch.stack([boxes[..., 0].clamp(0, rw), boxes[..., 1].clamp(0, rh),
                               boxes[..., 2].clamp(0, rw), boxes[..., 3].clamp(0, rh)], -1) * scale  # input pixels
        foreground = probs[:, 1:].argmax(1) + 1
        rows = torch.arange(len(probs), device=probs.device)
        final = dict(out[i])
        if len(final["boxes"]):  # each detection's source: the proposal whose box of its class it is
            candidates = clipped[:, final["labels"]]  # (P, K, 4)
            source = (candidates - final["boxes"][None]).abs().sum(-1).argmin(0)
            final["class_scores"] = probs[source]
        else:
            final["class_scores"] = probs.new_zeros(0, probs.shape[1])
        final["proposals"] = {"boxes": clipped[rows, foreground], "scores": probs[rows, foreground],
                              "labels": foreground, "class_scores": probs}
        answers.append(final)
    return answers
