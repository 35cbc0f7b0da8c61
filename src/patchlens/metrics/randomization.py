"""Model-randomization sanity check (Adebayo et al., 2018), on a copy of the model.

Re-initialise the model's layers in a cascade, from the output layer down,
re-run the same method at each stage, and measure the Spearman rank
correlation between the new map and the original one. A map that stays the
same while the model's weights are destroyed does not explain the model: lower
correlation is better. The user's model is deep-copied and never touched.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from ..explanation import Explanation
from ..images import load_image
from ..methods import Method, make_method
from ..models.classifier import Classifier
from ..models.torch_module import TorchClassifier
from ..objectives import objective_from_record
from ..request import RunRequest
from .base import Case, MetricError, metric


def layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Submodules that own parameters, input side first (definition order)."""
    return [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]


def _reinitialise(layer: torch.nn.Module, generator: torch.Generator) -> None:
    # New random values with each tensor's own mean and spread: the learned
    # structure is gone but activations keep their scale (constant tensors,
    # such as fresh BatchNorm weights, stay as they are).
    with torch.no_grad():
        for p in layer.parameters(recurse=False):
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.device, p.dtype)
            spread = p.float().std() if p.numel() > 1 else torch.tensor(0.0)
            p.copy_(noise * spread.to(p.device, p.dtype) + p.float().mean().to(p.dtype))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (0 when either is constant)."""
    from scipy.stats import spearmanr  # slow to import; only this check needs it

    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def randomization(
    classifier: Classifier,
    explanation: Explanation,
    *,
    stages: int = 4,
    seed: int = 0,
    absolute: bool = False,
    batch_size: int | None = None,
    method: Method | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fractions of layers re-initialised and the rank correlation at each stage.

    The method is ``method``, or else rebuilt by name and parameters from the
    explanation's provenance; the image is the explanation's own photo. ``absolute`` compares
    ``|map|`` instead of the signed map (Adebayo et al. report both).
    """
    from ..api import explain_one

    # an ONNX Runtime model is re-initialised through the torch classifier it was exported from
    classifier = getattr(classifier, "torch_classifier", classifier)
    if not isinstance(classifier, TorchClassifier):
        raise MetricError(f"{classifier.model_id}: the randomization check needs a PyTorch model to copy and re-initialise")
    if explanation.image is None:
        raise MetricError(f"{explanation.image_name}: the explanation carries no image")
    method = method or make_method(explanation.method, **explanation.params)
    image = load_image(explanation.image, name=explanation.image_name)
    clone_module = copy.deepcopy(classifier.module)
    clone = copy.copy(classifier)
    clone._module = clone_module  # the adapter's settings (normalisation, labels) with the copied weights
    found = layers(clone_module)[::-1]  # output side first
    if not found:
        raise MetricError(f"{classifier.model_id}: the model has no parameters to re-initialise")
    generator = torch.Generator().manual_seed(seed)
    original = np.abs(explanation.saliency) if absolute else explanation.saliency
    done, fractions, rhos = 0, [], []
    for stage in range(1, stages + 1):
        upto = math.ceil(stage * len(found) / stages)
        for layer in found[done:upto]:
            _reinitialise(layer, generator)
        done = upto
        target = objective_from_record(explanation.objective)  # the same target, on the changed model
        request = RunRequest(method, seed=explanation.seed, batch_size=batch_size)
        new = explain_one(clone, image, request, target=target)[0]
        rhos.append(spearman(original, np.abs(new.saliency) if absolute else new.saliency))
        fractions.append(done / len(found))
    return np.array(fractions), np.array(rhos)


@metric(
    "randomization",
    "mean Spearman correlation with maps of the model with layers re-initialised (cascading); lower is better",
    {"randomization": "lower"},
    ("module",),
)
def _randomization(case: Case) -> dict[str, float]:
    o = case.options
    assert case.classifier is not None  # declared: needs the module
    x, y = randomization(case.classifier, case.explanation, stages=o.stages, seed=o.seed, batch_size=o.batch_size)
    case.curves["randomization"] = (x, y)
    return {"randomization": float(y.mean())}
