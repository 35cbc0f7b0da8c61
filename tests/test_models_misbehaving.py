"""Model adapters and models that misbehave: one-line ModelErrors, never a wrong map."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

import patchlens
from conftest import BOX, SIZE, box_mask, planted_classifier, planted_image
from patchlens.errors import ModelError
from patchlens.models import CallableClassifier, TorchClassifier


def _in_box_share(saliency: np.ndarray) -> float:
    pos = np.clip(saliency, 0, None)
    return float(pos[box_mask()].sum() / max(pos.sum(), 1e-12))


# -- a callable that changes its input in place ----------------------------------------


@pytest.mark.parametrize("numpy", [False, True])
def test_a_callable_that_scribbles_on_its_input_cannot_change_the_map(numpy):
    reference = planted_classifier()
    t, l, b, r = BOX

    def scribbler(batch):
        if numpy:
            out = reference(torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2))
            batch[:] = 0.0  # "normalises" in place, as careless numpy code does
            return out.numpy()
        out = reference(batch)
        batch.zero_()
        return out

    clf = CallableClassifier(scribbler, input_size=SIZE, labels=["background", "evidence"], numpy=numpy)
    image = planted_image()
    got = patchlens.explain(clf, image, "occlusion", window=8, stride=8, target=1)
    want = patchlens.explain(reference, image, "occlusion", window=8, stride=8, target=1)
    np.testing.assert_allclose(got.saliency, want.saliency, atol=1e-6)
    assert _in_box_share(got.saliency) > 0.9


# -- a white-box model's own exception ------------------------------------------------


class Fragile(torch.nn.Module):
    """Fine when scoring under inference mode, broken when a gradient is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("custom CUDA kernel has no backward")
        return self.head(self.conv(x).mean((2, 3)))


@pytest.mark.parametrize("method", ["gradient", "gradcam", "integrated_gradients", "smoothgrad"])
def test_white_box_methods_turn_the_models_exception_into_a_model_error(method):
    clf = TorchClassifier(Fragile(), input_size=32, model_id="fragile")
    with pytest.raises(ModelError, match="fragile: the model raised RuntimeError: custom CUDA kernel") as info:
        patchlens.explain(clf, np.zeros((32, 32, 3), np.uint8), method)
    assert "\n" not in str(info.value)


# -- scores that are not probabilities ---------------------------------------------------


def _logits(x: torch.Tensor) -> torch.Tensor:
    inside = x[:, :, 8:24, 8:24].mean((1, 2, 3))
    return torch.stack([-3 * inside, 5 * inside + 1], 1)  # logits: negative, above 1


def test_logits_from_a_callable_are_refused_with_what_to_pass():
    with pytest.raises(ModelError, match="not probabilities.*softmax=True.*probabilities=False") as info:
        patchlens.explain(patchlens.load_model(_logits, input_size=SIZE), planted_image(), "occlusion")
    assert "\n" not in str(info.value)


def test_logits_are_converted_when_the_user_says_so():
    clf = patchlens.load_model(_logits, input_size=SIZE, softmax=True)
    exp = patchlens.explain(clf, planted_image(), "occlusion", window=8, stride=8)
    assert 0 <= exp.score <= 1 and clf.outputs_probabilities
    plain = patchlens.load_model(_logits, input_size=SIZE, probabilities=False)
    exp = patchlens.explain(plain, planted_image(), "occlusion", window=8, stride=8)
    assert exp.score > 1 and not plain.outputs_probabilities


def test_rows_in_0_1_that_are_not_a_distribution_are_marked_as_scores():
    def sigmoids(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3))], 1))  # rows sum to ~1.2

    clf = patchlens.load_model(sigmoids, input_size=SIZE)
    patchlens.explain(clf, planted_image(), "occlusion", window=16, stride=16)
    assert clf.outputs_probabilities is False
    assert planted_classifier().outputs_probabilities is True


def test_torch_models_say_whether_they_output_probabilities():
    assert TorchClassifier(Fragile(), softmax=True).outputs_probabilities
    assert not TorchClassifier(Fragile(), softmax=False).outputs_probabilities


# -- callables that misbehave in other ways ------------------------------------------------


def _shifty() -> Callable[[torch.Tensor], torch.Tensor]:
    calls = []

    def shifty(x: torch.Tensor) -> torch.Tensor:  # 2 classes on the first call, 3 after
        calls.append(1)
        c = 2 if len(calls) == 1 else 3
        return torch.full((x.shape[0], c), 1.0 / c)

    return shifty


def _raises(x: torch.Tensor) -> torch.Tensor:
    raise ValueError("weights not loaded")


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: lambda x: torch.full((x.shape[0], 3), float("nan")), "NaN"),
        (lambda: lambda x: torch.ones(x.shape[0], 3, 2), "shape"),
        (lambda: lambda x: torch.ones(x.shape[0] + 1, 3), "shape"),
        (lambda: lambda x: "not scores", "scores"),
        (lambda: lambda x: np.tile(np.array([[0, 1]], dtype=np.int64), (x.shape[0], 1)), "integers"),
        (lambda: _raises, "weights not loaded"),
        (_shifty, "3 classes, but 2 on an earlier call"),
    ],
    ids=["nan", "3d", "rows", "string", "integers", "raises", "class-count-changes"],
)
def test_a_callable_that_answers_badly_is_one_model_error_naming_the_model(make, message):
    clf = CallableClassifier(make(), input_size=16, model_id="bad-model")
    with pytest.raises(ModelError, match=message) as info:
        patchlens.explain(clf, planted_image(16), "occlusion", window=8, stride=8)
    assert "bad-model" in str(info.value) and "\n" not in str(info.value)


def test_a_callable_whose_output_requires_grad_is_just_scores():
    weight = torch.nn.Parameter(torch.ones(2))

    def differentiable(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(False):  # carries a graph the caller never asked for
            return torch.full((x.shape[0], 2), 0.5) * weight

    clf = patchlens.load_model(differentiable, input_size=SIZE)
    assert not clf(torch.zeros(2, 3, SIZE, SIZE)).requires_grad
    exp = patchlens.explain(clf, planted_image(), "rise", n_masks=64)
    assert np.isfinite(exp.saliency).all() and exp.score == 0.5
