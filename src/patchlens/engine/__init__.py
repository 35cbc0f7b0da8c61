"""The engine: the one loop that runs a model over many inputs (:mod:`.engine`), and what feeds it.

Partitions (patch grids, superpixels), baselines, convergence of sampling
methods, and batch mode's shared batches (:mod:`.shared_batches`, several
images' forward passes in one stream of full batches).
"""

from .baselines import BASELINES, gaussian_blur, make_baseline
from .engine import COMBINE_CHUNK, Engine, Hooks, MaskSource, combine_masks, is_out_of_memory, measured_batch_size
from .partitions import PARTITIONS, FeatureMasks, make_partition, patch_grid, superpixels

__all__ = [
    "Engine",
    "Hooks",
    "is_out_of_memory",
    "measured_batch_size",
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
