"""Honest defaults: no black-box method costs much more than RISE's default on the default model."""

from __future__ import annotations

import patchlens
from conftest import prepared_cost
from patchlens.methods import registry
from patchlens.models.default import INPUT_SIZE


def test_every_black_box_default_costs_about_rise_default_or_less():
    """Each method's default, prepared on a photo at the default model's input size (superpixels cut on it)."""
    size = INPUT_SIZE if isinstance(INPUT_SIZE, int) else tuple(INPUT_SIZE)
    model = patchlens.load_model(lambda x: x.mean((2, 3)).softmax(1), input_size=size)  # the size is what matters
    methods = {name: cls() for name, cls in registry().items() if cls.kind() == "black-box"}
    rise = prepared_cost(model, "example:coffee", methods["rise"])
    assert rise == 1001
    for name, method in methods.items():
        passes = prepared_cost(model, "example:coffee", method)
        assert passes is not None and passes <= 1.1 * rise, (name, passes, rise)
