"""The embedded EfficientNet-Lite0 on real photos: right classes, right preprocessing."""

from __future__ import annotations

import numpy as np
import torch

import patchlens
from patchlens.images import load_image, resize, to_tensor
from patchlens.models import TorchClassifier, imagenet_labels
from patchlens.models.default import build_efficientnet_lite0

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968}  # espresso, cup


def top(classifier, name, k=1):
    x = resize(to_tensor(load_image(f"example:{name}").pixels), classifier.input_size)
    return classifier(x[None])[0].topk(k)


def test_real_photos_get_their_classes(default_model):
    p, i = top(default_model, "chelsea")
    assert int(i[0]) in CATS and float(p[0]) > 0.5
    p, i = top(default_model, "coffee")
    assert int(i[0]) in COFFEE and float(p[0]) > 0.5
    assert default_model.labels[int(i[0])] == "espresso"


def test_the_tf_style_scaling_is_the_right_preprocessing(default_model):
    """Lite models were trained on (x - 127) / 128 inputs; with that scaling the model is
    clearly more confident on the bundled photos than with ImageNet's mean/std."""
    imagenet_style = TorchClassifier(build_efficientnet_lite0(), input_size=224, labels=imagenet_labels())
    names = ("chelsea", "coffee", "astronaut", "rocket")
    ours = np.mean([float(top(default_model, n)[0][0]) for n in names])
    theirs = np.mean([float(top(imagenet_style, n)[0][0]) for n in names])
    assert ours > theirs + 0.05, (ours, theirs)


def test_default_model_facts(default_model):
    assert default_model.model_id == "default"
    assert default_model.input_size == (224, 224)
    assert len(default_model.labels) == 1000
    assert default_model.device == torch.device("cpu")


def test_the_hot_region_of_coffee_is_on_the_cup(default_model):
    exp = patchlens.explain(default_model, "example:coffee", "occlusion", window=64, stride=32)
    assert exp.label == "espresso" and exp.saliency.shape == (400, 600)
    # The cup and its coffee occupy roughly rows 30-270 and columns 160-430 of the photo.
    y, x = np.unravel_index(np.argmax(exp.saliency), exp.saliency.shape)
    assert 30 <= y <= 270 and 160 <= x <= 430, (y, x)
    cup = np.zeros_like(exp.saliency, bool)
    cup[30:270, 160:430] = True
    assert exp.saliency[cup].mean() > exp.saliency[~cup].mean()
