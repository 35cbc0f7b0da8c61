"""Honest defaults: no black-box method costs much more than RISE's default on the default model."""

from __future__ import annotations

from patchlens.methods import registry
from patchlens.models.default import INPUT_SIZE


def test_every_black_box_default_costs_about_rise_default_or_less():
    size = (INPUT_SIZE, INPUT_SIZE) if isinstance(INPUT_SIZE, int) else tuple(INPUT_SIZE)
    methods = {name: cls() for name, cls in registry().items() if cls.kind() == "black-box"}
    rise = methods["rise"].passes(size)
    for name, method in methods.items():
        passes = method.passes(size)
        if passes is None:  # superpixel regions: the count depends on the image; the sample count bounds it
            passes = getattr(method, "n_samples", None)
        assert passes is not None and passes <= 1.1 * rise, (name, passes, rise)
