"""Real photos that ship with patchlens (CC0 / public domain, from scikit-image)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import ImageError

EXAMPLES = {
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "astronaut": "astronaut.png",
    "rocket": "rocket.jpg",
    "camera": "camera.png",
}


def example_path(name: str) -> Path:
    """Path of a bundled photo: ``chelsea`` (cat), ``coffee`` (espresso), ``astronaut``, ``rocket``, ``camera`` (tripod)."""
    if name not in EXAMPLES:
        raise ImageError(f"example:{name}: no such example; bundled: {', '.join(EXAMPLES)}")
    return Path(str(resources.files("patchlens").joinpath("data/examples", EXAMPLES[name])))
