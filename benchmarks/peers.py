"""Side by side with Captum and pytorch-grad-cam: the same model, image, target and configuration, in one run.

Each pair is timed (with CUDA synchronisation), its forward passes counted, and
the two maps compared, so a speed-up is never bought with a different answer:
occlusion, feature ablation and Integrated Gradients have the same definition
on both sides and must be *equal*; KernelSHAP and LIME sample, so their
per-region values are compared by Spearman rank correlation; CAMs are compared
after pytorch-grad-cam's min-max scaling. The raw model's throughput at the
same batch size and dtype gives each of our methods its engine efficiency.

Alignment: every peer calls ``classifier.logits`` (normalisation inside, the
same dtype/autocast as ours) on the same quantised [0, 1] image at the model's
input size, with a softmax where our method scores probabilities (occlusion,
feature ablation, KernelSHAP, LIME). Captum's LIME gets our kernel (cosine
distance of the on/off vector to all-on, width 0.25) and a ridge surrogate
(alpha 1), as our LIME uses. Peers are benchmark-only dependencies
(captum, grad-cam, scikit-learn for Captum's LIME surrogate).

    python benchmarks/peers.py --quick                     # smoke run, a minute or two on a CPU
    python benchmarks/peers.py --write                     # full run, into benchmarks/RESULTS.md
    python benchmarks/peers.py --model torchvision:resnet50 --device cuda --batch-size 256 --write
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's ScoreCAM draws a progress bar per call

import numpy as np
import torch
from scipy.stats import spearmanr

import patchlens
from _common import machine, markdown_table, raw_images_per_second, timed, write_section
from patchlens.engine import patch_grid
from patchlens.engine.engine import measured_batch_size
from patchlens.images import load_image, resize, to_tensor
from patchlens.models.layers import find_layer, split_call
from patchlens.models.torch_module import eval_mode

HEADING = "Side by side with Captum and pytorch-grad-cam"


@dataclass(frozen=True)
class Budget:
    """One configuration, used by both sides of every pair."""

    batch_size: int
    window: int = 32  # occlusion window and stride, in model-input pixels
    stride: int = 16
    grid: int = 7  # feature ablation, KernelSHAP, LIME: grid x grid regions
    n_samples: int = 1000  # KernelSHAP and LIME
    ig_steps: int = 50
    scorecam_max_channels: int | None = None  # None: the CAM layer as it is, whatever its width
    unbatched: bool = True  # also time Captum with perturbations_per_eval=1 for KernelSHAP/LIME


@dataclass
class Row:
    method: str
    impl: str
    seconds: float
    passes: int
    agreement: str = ""
    agree: bool | None = None  # None where the definitions differ and only a correlation is reported
    ratio: float | None = None  # this row's time / ours
    efficiency: float | None = None  # ours: passes/s over the raw model's images/s


@dataclass
class Setup:
    """The shared inputs: classifier, the image at its input size (uint8 and [0, 1]), the target class."""

    clf: Any
    pixels: np.ndarray
    x: torch.Tensor = field(init=False)
    target: int = field(init=False)

    def __post_init__(self) -> None:
        self.x = to_tensor(self.pixels)[None].to(self.clf.device)
        self.target = int(self.clf(self.x)[0].argmax())

    @classmethod
    def from_image(cls, clf: Any, image: Any) -> Setup:
        # Resize once and quantise, so patchlens (which takes uint8 photos) and the peers see the same floats.
        photo = resize(to_tensor(load_image(image).pixels), clf.input_size)
        return cls(clf, (photo * 255).round().byte().permute(1, 2, 0).numpy())

    @property
    def device(self) -> torch.device:
        return self.clf.device

    def tolerance(self, rtol: float) -> float:
        """``rtol`` in float32; under 16-bit autocast (GPUs) rounding alone reaches percents of a map, so 5 %."""
        return max(rtol, 5e-2) if self.clf.autocast_dtype in (torch.float16, torch.bfloat16) else rtol

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        return self.clf.logits(batch).softmax(dim=1)


class Counted:
    """A forward function that counts the images it is given."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn, self.passes = fn, 0

    def __call__(self, batch: torch.Tensor, *args: Any) -> torch.Tensor:
        self.passes += batch.shape[0]
        return self.fn(batch)


class LogitsModule(torch.nn.Module):
    """The classifier as a module for pytorch-grad-cam: normalisation inside, the user's module as a child."""

    def __init__(self, clf: Any) -> None:
        super().__init__()
        self.net, self.passes = clf.module, 0
        self._clf = clf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes += x.shape[0]
        return self._clf.logits(x)


def ours(s: Setup, b: Budget, method: str, warmup: bool = False, **params: Any) -> tuple[Row, Any]:
    call = partial(patchlens.explain, s.clf, s.pixels, method, target=s.target, batch_size=b.batch_size, **params)
    exp, seconds = timed(call, s.device, warmup)
    return Row(method, "patchlens", seconds, exp.forward_passes), exp


def seeded(fn: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """Captum samples from torch's global generator: seed it for this call only, and give its state back after."""

    def run() -> Any:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            return fn()

    return run


def equality(ours_map: np.ndarray, theirs: np.ndarray, rtol: float = 1e-3) -> tuple[bool, str]:
    """Equal up to float rounding, measured against the map's largest value.

    Batch composition and memory layout change the convolution algorithm, so
    the same definition differs in the last digits (up to ~5e-4 of the map's
    range seen on random-weight ResNets; 0 on the default model); a different
    definition (window grid, baseline, quadrature rule) differs by percents.
    """
    scale = float(np.abs(theirs).max()) or 1.0
    diff = float(np.abs(ours_map - theirs).max())
    ok = diff <= rtol * scale
    verdict = "equal" if ok else "DIFFERENT"
    return ok, f"max abs diff {diff:.1e} = {diff / scale:.0e} of the map's max: {verdict} (tolerance {rtol:.0e})"


def per_eval(b: Budget, include_unbatched: bool = True) -> list[int]:
    return sorted({1, b.batch_size} if include_unbatched else {b.batch_size})


def _captum_rows(s: Setup, name: str, make: Callable[[Counted, int], Any], reduce: Callable, mine: np.ndarray,
                 compare: Callable, sizes: list[int]) -> list[Row]:
    """Captum at each ``perturbations_per_eval`` in ``sizes``: timed, passes counted, map compared with ``mine``."""
    rows = []
    for n in sizes:
        fwd = Counted(s.probabilities)
        out, seconds = timed(seeded(partial(make, fwd, n), s.device), s.device)
        agree, text = compare(mine, reduce(out.detach()).cpu().numpy())
        rows.append(Row(name, f"captum, perturbations_per_eval={n}", seconds, fwd.passes, text, agree))
    return rows


def occlusion(s: Setup, b: Budget) -> list[Row]:
    """Mean probability drop over the windows covering each pixel; gray (0.5) windows on both sides."""
    from captum.attr import Occlusion

    h, w = s.x.shape[-2:]
    if (h - b.window) % b.stride or (w - b.window) % b.stride:
        raise ValueError(f"window {b.window}, stride {b.stride}: must tile {h}x{w} exactly (Captum drops a last partial step)")
    row, exp = ours(s, b, "occlusion", window=b.window, stride=b.stride, baseline="gray")

    def make(fwd: Counted, n: int) -> torch.Tensor:
        return Occlusion(fwd).attribute(
            s.x, sliding_window_shapes=(3, b.window, b.window), strides=(3, b.stride, b.stride),
            baselines=0.5, target=s.target, perturbations_per_eval=n,
        )

    reduce = lambda a: a[0].mean(0)  # the same value in every channel: a window covers all three
    same = partial(equality, rtol=s.tolerance(1e-3))
    return [row] + _captum_rows(s, "occlusion", make, reduce, exp.saliency, same, per_eval(b))


def feature_ablation(s: Setup, b: Budget) -> list[Row]:
    """Each grid cell grayed out alone: our occlusion with window = stride = cell vs Captum's FeatureAblation."""
    from captum.attr import FeatureAblation

    h, w = s.x.shape[-2:]
    if h != w or h % b.grid:
        raise ValueError(f"grid {b.grid}: must divide the square input {h}x{w}")
    cell = h // b.grid
    row, exp = ours(s, b, "occlusion", window=cell, stride=cell, baseline="gray")
    row.method = "feature_ablation"
    mask = patch_grid(h, w, b.grid, device=s.device)[None, None]

    def make(fwd: Counted, n: int) -> torch.Tensor:
        return FeatureAblation(fwd).attribute(s.x, baselines=0.5, target=s.target, feature_mask=mask, perturbations_per_eval=n)

    reduce = lambda a: a[0].mean(0)
    same = partial(equality, rtol=s.tolerance(1e-3))
    return [row] + _captum_rows(s, row.method, make, reduce, exp.saliency, same, per_eval(b))


def rank_agreement(mine: np.ndarray, theirs: np.ndarray) -> tuple[None, str]:
    rho = spearmanr(mine, theirs.ravel()).statistic
    return None, f"Spearman {rho:.3f} over {mine.size} regions"


def kernelshap(s: Setup, b: Budget) -> list[Row]:
    from captum.attr import KernelShap

    row, exp = ours(s, b, "kernelshap", features="grid", grid=b.grid, n_samples=b.n_samples, baseline="gray")
    mask = patch_grid(*s.x.shape[-2:], b.grid, device=s.device)[None, None]

    def make(fwd: Counted, n: int) -> torch.Tensor:
        return KernelShap(fwd).attribute(
            s.x, baselines=0.5, target=s.target, feature_mask=mask, n_samples=b.n_samples,
            perturbations_per_eval=n, return_input_shape=False,
        )

    mine = np.asarray(exp.extras["shapley_values"])
    return [row] + _captum_rows(s, "kernelshap", make, lambda a: a[0], mine, rank_agreement, per_eval(b, b.unbatched))


def lime(s: Setup, b: Budget) -> list[Row]:
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime

    width = 0.25  # our LIME's default kernel width
    row, exp = ours(s, b, "lime", features="grid", grid=b.grid, n_samples=b.n_samples, baseline="gray", kernel_width=width)
    mask = patch_grid(*s.x.shape[-2:], b.grid, device=s.device)[None, None]
    regions = b.grid * b.grid

    def kernel(_original: Any, _perturbed: Any, z: torch.Tensor, **kw: Any) -> float:
        # Ours: cosine distance of the binary on/off vector to all-on, exp(-d^2 / (2 width^2)) (= sqrt(exp(-d^2/width^2))).
        d = 1.0 - math.sqrt(float(z.sum()) / regions)
        return math.exp(-(d**2) / (2 * width**2))

    def make(fwd: Counted, n: int) -> torch.Tensor:
        peer = Lime(fwd, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=kernel)
        return peer.attribute(
            s.x, baselines=0.5, target=s.target, feature_mask=mask, n_samples=b.n_samples,
            perturbations_per_eval=n, return_input_shape=False,
        )

    mine = np.asarray(exp.extras["coefficients"])
    return [row] + _captum_rows(s, "lime", make, lambda a: a[0], mine, rank_agreement, per_eval(b, b.unbatched))


def integrated_gradients(s: Setup, b: Budget) -> list[Row]:
    """Gauss-Legendre on both sides (Captum's default rule; our trapezoid differs from Captum's by (n-1)/n)."""
    from captum.attr import IntegratedGradients

    row, exp = ours(s, b, "integrated_gradients", warmup=True, steps=b.ig_steps, baseline="black", rule="gausslegendre")
    fwd = Counted(s.clf.logits)
    call = lambda: IntegratedGradients(fwd).attribute(
        s.x, baselines=0.0, target=s.target, n_steps=b.ig_steps, method="gausslegendre", internal_batch_size=b.batch_size
    )
    out, seconds = timed(call, s.device, warmup=True)
    # Gradients of an untrained network can amplify rounding (4e-3 seen on a random ResNet-50); the trapezoid
    # convention alone would differ by 1/steps (2 % at 50 steps), so a 1 % tolerance still tells them apart.
    agree, text = equality(exp.saliency, out.detach()[0].sum(0).cpu().numpy(), rtol=s.tolerance(1e-2))
    return [row, Row(row.method, f"captum, internal_batch_size={b.batch_size}", seconds, fwd.passes // 2, text, agree)]


def cam_layer(s: Setup, max_channels: int | None = None) -> tuple[str, str]:
    """Our automatic CAM layer, or the nearest layer that pytorch-grad-cam reads the same way; and why.

    pytorch-grad-cam keeps the *first* call of a layer that runs more than once
    per forward (EfficientNet's shared ``_swish`` runs at the stem and the head),
    so such a layer would compare different feature maps. Then, and when the
    layer is wider than ``max_channels``, the last 4-D layer that runs exactly
    once is used, by both sides.
    """
    auto = patchlens.explain(s.clf, s.pixels, "gradcam", target=s.target).extras["layer"]
    module_name, _ = split_call(auto)  # "_swish@2": the module's name, then which of its calls
    calls: dict[str, list[tuple[int, ...]]] = {}
    order: list[str] = []

    def record(name: str, _module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        calls.setdefault(name, []).append(tuple(output.shape) if isinstance(output, torch.Tensor) else ())
        order.append(name)

    handles = [m.register_forward_hook(partial(record, n)) for n, m in s.clf.module.named_modules() if n]
    try:
        with torch.no_grad():
            s.clf.logits(s.x)
    finally:
        for handle in handles:
            handle.remove()
    modules = dict(s.clf.module.named_modules())
    fits = lambda n: (
        len(calls[n]) == 1
        and len(calls[n][0]) == 4
        and min(calls[n][0][2:]) > 1
        and (max_channels is None or calls[n][0][1] <= max_channels)
        and not pass_through(modules[n])
    )
    if fits(module_name):
        return auto, f"layer {auto} (our automatic choice)"
    chosen = next(n for n in reversed(order) if fits(n))
    runs = len(calls[module_name])
    reasons = [f"runs {runs} times per forward"] if runs > 1 else []
    if max_channels is not None and calls[module_name][-1][1] > max_channels:  # the last call is the one we read
        reasons.append(f"has more than {max_channels} channels")
    why = " and ".join(reasons)
    return chosen, f"layer {chosen} (our automatic {auto} {why})"


def pass_through(module: torch.nn.Module) -> bool:
    """Padding, identity and dropout pass a feature map on: the layer that made it is the one to name."""
    kind = type(module).__name__
    return kind == "Identity" or "Pad" in kind or kind.startswith("Dropout")


def minmax(m: np.ndarray) -> np.ndarray:
    m = m - m.min()
    return m / max(float(m.max()), 1e-12)


def _cam_pair(s: Setup, b: Budget, ours_name: str, peer: str, layer: str, note: str, equal: bool, **params: Any) -> list[Row]:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    warm = ours_name == "gradcam"  # one pass: cheap enough to run twice
    row, exp = ours(s, b, ours_name, warmup=warm, layer=layer, **params)
    model = LogitsModule(s.clf)

    def call() -> np.ndarray:
        with pytorch_grad_cam.__dict__[peer](model=model, target_layers=[find_layer(s.clf.module, layer)]) as cam:
            cam.batch_size = b.batch_size  # ScoreCAM's batch; GradCAM ignores it
            return cam(input_tensor=s.x, targets=[ClassifierOutputTarget(s.target)])[0]

    # pytorch-grad-cam calls .eval() without restoring it and backpropagates into .grad: undo both.
    with eval_mode(s.clf.module):
        theirs, seconds = timed(call, s.device, warm)
    for p in s.clf.module.parameters():
        p.grad = None
    passes = model.passes // 2 if warm else model.passes
    mine = minmax(exp.saliency)
    r = float(np.corrcoef(mine.ravel(), theirs.ravel())[0, 1])
    ok, text = equality(mine, theirs, rtol=s.tolerance(1e-3)) if equal else (None, f"max abs diff {np.abs(mine - theirs).max():.1e}")
    return [row, Row(ours_name, f"pytorch-grad-cam {peer}", seconds, passes, f"{text}; Pearson {r:.4f}; {note}", ok)]


def gradcam(s: Setup, b: Budget) -> list[Row]:
    layer, note = cam_layer(s)
    return _cam_pair(s, b, "gradcam", "GradCAM", layer, note, equal=True)


def scorecam(s: Setup, b: Budget) -> list[Row]:
    """All channels on both sides. Not the same weights: theirs softmax the masked images' logits, ours the probability gain."""
    layer, note = cam_layer(s, b.scorecam_max_channels)
    return _cam_pair(s, b, "scorecam", "ScoreCAM", layer, note, equal=False, top_channels=0, baseline="black")


PAIRS = {
    "occlusion": occlusion,
    "feature_ablation": feature_ablation,
    "kernelshap": kernelshap,
    "lime": lime,
    "integrated_gradients": integrated_gradients,
    "gradcam": gradcam,
    "scorecam": scorecam,
}


def finish(rows: list[Row], raw: float) -> None:
    """Fill in each row's time ratio to ours and, for ours, the engine efficiency."""
    base: dict[str, float] = {}
    for row in rows:
        if row.impl == "patchlens":
            base[row.method] = row.seconds
            row.efficiency = row.passes / row.seconds / raw
        row.ratio = row.seconds / base[row.method]


def table(rows: list[Row]) -> str:
    headers = ["method", "implementation", "seconds / image", "passes", "passes/s", "time / ours", "engine efficiency", "agreement"]
    cells = [
        [r.method, r.impl, f"{r.seconds:.2f}", r.passes, f"{r.passes / r.seconds:.1f}", f"{r.ratio:.2f}" if r.ratio else "",
         f"{r.efficiency:.2f}" if r.efficiency is not None else "", r.agreement]
        for r in rows
    ]
    return markdown_table(headers, cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="default, torchvision:<name> or timm:<name> (random weights)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--image", default="example:coffee")
    ap.add_argument("--batch-size", type=int, default=None, help="images per forward pass for both sides (default: ours for the device)")
    ap.add_argument("--quick", action="store_true", help="small budgets, for a smoke run")
    ap.add_argument("--only", nargs="+", choices=sorted(PAIRS), default=sorted(PAIRS, key=list(PAIRS).index))
    ap.add_argument("--skip-unbatched", action="store_true", help="no Captum perturbations_per_eval=1 runs for KernelSHAP/LIME")
    ap.add_argument("--write", action="store_true", help=f"put the results under '## {HEADING}' in benchmarks/RESULTS.md")
    args = ap.parse_args()

    opts = {"pretrained": False} if args.model.split(":")[0] in ("timm", "torchvision") else {}
    clf = patchlens.load_model(args.model, device=args.device, **opts)
    # the batch size our engine settles on for this model and machine; both sides are timed at it
    batch = args.batch_size or measured_batch_size(clf)
    b = Budget(batch_size=batch, unbatched=not args.skip_unbatched)
    if args.quick:
        b = replace(b, window=64, stride=32, n_samples=100, ig_steps=16, scorecam_max_channels=128)
    s = Setup.from_image(clf, args.image)
    dtype = clf.autocast_dtype or torch.float32
    header = (
        f"Machine: {machine(clf.device)}.\n"
        f"Model {clf.model_id} at {clf.input_size[0]}x{clf.input_size[1]} on {clf.device}, {dtype}, batch {batch}; "
        f"image {args.image}, target {s.target} ({clf.label(s.target)}).\n"
        f"Budgets: occlusion window {b.window} stride {b.stride}; {b.grid}x{b.grid} grid; KernelSHAP/LIME {b.n_samples} samples; "
        f"IG {b.ig_steps} steps{'; --quick' if args.quick else ''}."
    )
    print(header, flush=True)
    count = max(2, 64 // batch)
    raw = raw_images_per_second(clf, batch, count)
    # Batch 1 is what Captum runs with perturbations_per_eval=1: its reference, and on a CPU not always slower.
    raw_one = raw_images_per_second(clf, 1, 8)
    print(f"raw model: {raw:.1f} images/s at batch {batch}, {raw_one:.1f} at batch 1", flush=True)
    rows: list[Row] = []
    for name in args.only:
        new = PAIRS[name](s, b)
        for r in new:
            print(f"  {r.method:22s} {r.impl:42s} {r.seconds:8.2f} s {r.passes:6d} passes  {r.agreement}", flush=True)
        rows += new
    raw = max(raw, raw_images_per_second(clf, batch, count))  # best of before and after: the machine may drift
    finish(rows, raw)
    skipped = " Captum with perturbations_per_eval=1 skipped for KernelSHAP/LIME (--skip-unbatched)." if not b.unbatched else ""
    body = (
        f"{header}\nRaw model through the same call path: {raw:.1f} images/s at batch {batch} (best of before and after "
        f"the run), {raw_one:.1f} images/s at batch 1.\n\n"
        f"{table(rows)}\n\n"
        "Engine efficiency: our forward passes/s over the raw model's images/s at the same batch (for IG and CAMs the "
        "passes include backward passes, so it is not comparable). Time / ours: a peer's seconds over ours for the same "
        f"method; above 1 means we are faster.{skipped}"
    )
    print("\n" + body)
    if args.write:
        write_section(HEADING, body)
        print(f"\nwritten under '## {HEADING}' in benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
