"""The 1000 ImageNet-1k class names, shipped with the package (WordNet lemmas)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def imagenet_synonyms() -> tuple[tuple[str, ...], ...]:
    """For each class index, its WordNet lemmas (``("tabby", "tabby cat")``)."""
    text = resources.files("patchlens").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        _, lemmas = line.split("\t", 1)
        rows.append(tuple(s.strip() for s in lemmas.split(",") if s.strip()))
    return tuple(rows)


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """One display name per class: the first lemma ("tabby", "Egyptian cat", "espresso")."""
    return tuple(row[0] for row in imagenet_synonyms())
