"""The perturbation engine shared by every black-box method."""

from .baselines import BASELINES, gaussian_blur, make_baseline
from .batcher import COMBINE_CHUNK, Engine, MaskSource, combine_masks
from .partitions import PARTITIONS, FeatureMasks, make_partition, patch_grid, superpixels

__all__ = [
    "Engine",
    "MaskSource",
    "combine_masks",
    "make_baseline",
    "gaussian_blur",
    "BASELINES",
    "COMBINE_CHUNK",
    "FeatureMasks",
    "make_partition",
    "patch_grid",
    "superpixels",
    "PARTITIONS",
]
