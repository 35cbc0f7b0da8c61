"""Draw docs/gradient_overlays.png: the gradient family on the bundled cat, patchlens next to Captum.

Each row is one method's map (computed once, by patchlens, on the default model);
the columns draw that same map with patchlens's overlay and with Captum's
``visualize_image_attr`` at its defaults (heat map of |attribution|, 2% outliers
clipped) and blended over the photo. Run: ``python docs/gradient_overlays.py``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from captum.attr import visualization as viz

import patchlens
from patchlens.examples import example_path

METHODS = ("gradient", "gradient_x_input", "smoothgrad", "integrated_gradients")


OUT = Path(__file__).with_name("gradient_overlays.png")


def main(out: Path = OUT) -> None:
    model = patchlens.load_model("default")
    photo = example_path("chelsea")
    fig, axes = plt.subplots(len(METHODS), 3, figsize=(12, 3.4 * len(METHODS)))
    for row, method in zip(axes, METHODS):
        exp = patchlens.explain(model, photo, method)
        row[0].imshow(exp.overlay())
        row[0].set_title(f"patchlens: {method}", fontsize=10)
        attr = exp.saliency[..., None]  # Captum wants (H, W, C); the map is one channel
        for ax, how in zip(row[1:], ("heat_map", "blended_heat_map")):
            viz.visualize_image_attr(attr, exp.image, method=how, plt_fig_axis=(fig, ax), use_pyplot=False)
            ax.set_title(f"Captum visualize_image_attr ({how})", fontsize=10)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
