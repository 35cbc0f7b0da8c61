"""ViT-native methods: attention rollout and token-drop masking, on tiny random-weight timm ViTs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")

import patchlens
from conftest import attributed, make_job
from patchlens.engine import Engine, FeatureMasks, patch_grid
from patchlens.errors import MethodError
from patchlens.methods import Job, make_method
from patchlens.models import TorchClassifier
from patchlens.models.vit import TokenView
from patchlens.objectives import class_objective

SIZE = (48, 64)  # not square, so a transposed grid fails
PATCH = 8  # -> a 6 x 8 grid


def tiny_vit(**kw) -> torch.nn.Module:
    """A 2-block ViT with weights large enough that attention is far from uniform."""
    opts = {"img_size": SIZE, "patch_size": PATCH, "depth": 2, "embed_dim": 64, "num_heads": 4, "num_classes": 10}
    opts.update(kw)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **opts).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            # sharp attention needs large query/key weights
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 if "qkv.weight" in name else 0.25))
    return model


def image(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, *SIZE, generator=torch.Generator().manual_seed(seed))


def job_for(clf: TorchClassifier, x: torch.Tensor, batch_size: int = 4) -> Job:
    return make_job(clf, x, [0, 3], batch_size)


# -- attention rollout -----------------------------------------------------------------------


def explicit_attention(model: torch.nn.Module, xn: torch.Tensor) -> list[np.ndarray]:
    """Each block's attention, recomputed from its qkv weights: softmax(q k^T / sqrt(d))."""
    out = []
    with torch.no_grad():
        x = model.norm_pre(model._pos_embed(model.patch_embed(xn)))
        for blk in model.blocks:
            h = blk.norm1(x)
            n, heads = h.shape[1], blk.attn.num_heads
            qkv = torch.nn.functional.linear(h, blk.attn.qkv.weight, blk.attn.qkv.bias)
            q, k, _ = qkv.reshape(n, 3, heads, -1).permute(1, 2, 0, 3).double()
            out.append(torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1).numpy())
            x = blk(x)
    return out


def reference_rollout(attns: list[np.ndarray], fusion: str, discard: float, prefix: int, cls: bool) -> np.ndarray:
    n = attns[0].shape[-1]
    r = np.eye(n)
    for a in attns:
        f = {"mean": a.mean(0), "max": a.max(0), "min": a.min(0)}[fusion].copy()
        flat = f.reshape(-1)
        flat[np.argsort(flat, kind="stable")[: int(flat.size * discard)]] = 0
        f = f + np.eye(n)
        r = (f / f.sum(1, keepdims=True)) @ r
    row = r[0, prefix:] if cls else r[prefix:, prefix:].mean(0)
    return row.reshape(SIZE[0] // PATCH, SIZE[1] // PATCH)


@pytest.mark.parametrize(
    "kw, fusion, discard, prefix",
    [
        ({}, "mean", 0.0, 1),
        ({"reg_tokens": 3}, "max", 0.5, 4),  # a hard-coded offset of 1 fails here
        ({"class_token": False, "global_pool": "avg"}, "min", 0.2, 0),
    ],
)
def test_rollout_equals_explicit_attention_reference(kw, fusion, discard, prefix):
    model = tiny_vit(**kw)
    assert model.num_prefix_tokens == prefix
    clf = TorchClassifier(model, input_size=SIZE)
    x = image()
    method = make_method("attention_rollout", head_fusion=fusion, discard_ratio=discard)
    maps = attributed(method, job_for(clf, x)).maps
    assert maps.shape == (2, 6, 8) and torch.isfinite(maps).all()
    assert torch.equal(maps[0], maps[1])  # not class-specific
    attns = explicit_attention(model, clf.normalise(x[None]))
    assert max(a.max() for a in attns) > 0.5  # attention is far from uniform, so the check has teeth
    expected = reference_rollout(attns, fusion, discard, prefix, cls="class_token" not in kw)
    np.testing.assert_allclose(maps[0].numpy(), expected, rtol=1e-4, atol=1e-6)


def assert_untouched(model: torch.nn.Module, fused: list[bool], training: list[bool]) -> None:
    assert [b.attn.fused_attn for b in model.blocks] == fused
    assert [m.training for m in model.modules()] == training
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_rollout_leaves_the_model_as_it_was_even_after_an_error():
    model = tiny_vit()
    model.train()
    model.blocks[1].attn.fused_attn = False  # a user's own mix of flags is kept
    fused = [b.attn.fused_attn for b in model.blocks]
    training = [m.training for m in model.modules()]
    clf = TorchClassifier(model, input_size=SIZE)
    job = job_for(clf, image())
    method = make_method("attention_rollout")
    maps = attributed(method, job).maps
    assert job.engine.forward_passes == 2
    assert_untouched(model, fused, training)

    def boom(*args):
        raise RuntimeError("boom")

    handle = model.head.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        attributed(method, job)
    handle.remove()
    assert_untouched(model, fused, training)
    assert torch.equal(attributed(method, job).maps, maps)  # nothing left behind changes the next run


def test_rollout_through_explain_maps_at_photo_size():
    clf = TorchClassifier(tiny_vit(reg_tokens=2), input_size=SIZE)
    e = patchlens.explain(clf, "example:chelsea", "attention_rollout")
    # the same map for every class: the result, its title and its words say so, not "the evidence for <class>"
    other = patchlens.explain(clf, "example:chelsea", "attention_rollout", target=(e.target + 1) % 10)
    assert np.array_equal(e.saliency, other.saliency) and e.class_agnostic and e.to_dict()["extras"]["class_agnostic"]
    assert "class-agnostic" in e.title and "class-agnostic: the same for every class" in e.describe()
    assert not patchlens.explain(clf, "example:chelsea", "occlusion", window=112, stride=112).class_agnostic
    assert e.saliency.shape == (300, 451) and np.isfinite(e.saliency).all()
    assert patchlens.list_methods()["attention_rollout"]["kind"] == "vit"


def test_rollout_on_a_cnn_names_alternatives(tiny_cnn):
    clf = TorchClassifier(tiny_cnn, input_size=SIZE)
    with pytest.raises(MethodError, match="not a timm Vision Transformer.*rise"):
        patchlens.explain(clf, "example:coffee", "attention_rollout")
    with pytest.raises(MethodError, match="not a timm Vision Transformer"):  # called directly, still refused
        attributed(make_method("attention_rollout"), job_for(clf, image()))


# -- token-drop masking ----------------------------------------------------------------------


def test_keeping_every_token_equals_the_ordinary_forward():
    for kw in ({}, {"reg_tokens": 2}, {"class_token": False, "global_pool": "avg"}):
        clf = TorchClassifier(tiny_vit(**kw), input_size=SIZE, softmax=False)
        x = image(1)
        full = clf(x[None])
        labels = patch_grid(*SIZE, 6, 8)
        engine = Engine(clf, batch_size=2)
        ones = FeatureMasks(labels, torch.ones(3, 48))
        scores = engine.score_masks(x, torch.zeros_like(x), ones, class_objective(clf, *range(10)), masking="tokens")
        torch.testing.assert_close(scores, full.expand(3, -1), rtol=1e-5, atol=1e-5)


def gathered_reference(model: torch.nn.Module, xn: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Logits with only the kept patch tokens, one mask at a time."""
    p = model.num_prefix_tokens
    with torch.no_grad():
        tokens = model._pos_embed(model.patch_embed(xn))[0]
        x = torch.cat([tokens[:p], tokens[p:][keep.bool()]])[None]
        return model.forward_head(model.norm(model.blocks(model.norm_pre(x))))[0]


@pytest.mark.parametrize(
    "kw, padded",
    [({"reg_tokens": 2}, True), ({"reg_tokens": 2}, False), ({"class_token": False, "global_pool": "avg"}, True)],
)
def test_dropped_tokens_equal_one_mask_at_a_time_references(kw, padded, monkeypatch):
    if not padded:  # blocks without attn_mask (older timm): batches of equal length only
        init = TokenView.__init__

        def unpadded(self, *args):
            init(self, *args)
            self.padded = False

        monkeypatch.setattr(TokenView, "__init__", unpadded)
    model = tiny_vit(**kw)
    clf = TorchClassifier(model, input_size=SIZE, softmax=False)
    x, baseline = image(2), torch.full((3, *SIZE), 0.5)
    g = torch.Generator().manual_seed(3)
    z = (torch.rand(20, 48, generator=g) < torch.rand(20, 1, generator=g)).float()  # keep counts vary widely
    z[0] = 0  # hides everything: scored as the baseline image
    engine = Engine(clf, batch_size=3)
    scores = engine.score_masks(
        x, baseline, FeatureMasks(patch_grid(*SIZE, 6, 8), z), class_objective(clf, *range(10)), masking="tokens"
    )
    assert engine.forward_passes == 20
    xn = clf.normalise(x[None])
    torch.testing.assert_close(scores[0], clf(baseline[None])[0])
    for i in range(1, 20):
        torch.testing.assert_close(scores[i], gathered_reference(model, xn, z[i]), rtol=1e-4, atol=1e-4)
        if "class_token" in kw:
            continue
        # independent check via timm itself: blocking attention *to* the dropped tokens
        # leaves the class token as if they were gone
        allowed = torch.cat([torch.ones(model.num_prefix_tokens), z[i]]).bool()
        with torch.no_grad():
            masked = model(xn, attn_mask=allowed.expand(len(allowed), -1)[None, None])[0]
        torch.testing.assert_close(scores[i], masked, rtol=1e-4, atol=1e-4)


#: small budgets, applied to whichever of these parameters a method declares
SMALL = {"n_masks": 24, "n_samples": 24, "n_designs": 4, "grid": 3, "features": "grid", "window": 16, "stride": 8}
TOKEN_METHODS = sorted(
    n for n, m in patchlens.list_methods().items() if any(p["name"] == "masking" for p in m["parameters"])
)


def test_occlusion_and_rise_offer_token_masking():
    assert {"occlusion", "rise"} <= set(TOKEN_METHODS)


@pytest.mark.parametrize("name", TOKEN_METHODS)
def test_methods_with_token_masking_are_finite_and_deterministic(name):
    declared = {p["name"] for p in patchlens.list_methods()[name]["parameters"]}
    params = {k: v for k, v in SMALL.items() if k in declared}
    model = tiny_vit()
    model.train()
    training = [m.training for m in model.modules()]
    clf = TorchClassifier(model, input_size=SIZE)
    runs = [
        patchlens.explain(clf, image(4).numpy().transpose(1, 2, 0), name, masking="tokens", **params) for _ in range(2)
    ]
    assert runs[0].saliency.shape == SIZE and np.isfinite(runs[0].saliency).all()
    np.testing.assert_array_equal(runs[0].saliency, runs[1].saliency)
    assert runs[0].saliency.std() > 0
    assert [m.training for m in model.modules()] == training


def test_token_masking_on_a_cnn_or_a_mismatched_grid_is_a_clear_error(tiny_cnn):
    cnn = TorchClassifier(tiny_cnn, input_size=SIZE)
    with pytest.raises(MethodError, match="not a timm Vision Transformer.*use masking='pixels'"):
        patchlens.explain(cnn, "example:coffee", "occlusion", masking="tokens")
    wrong = TorchClassifier(tiny_vit(), input_size=(64, 64))
    with pytest.raises(MethodError, match="patch grid is 6x8"):
        wrong.token_view(torch.rand(3, 64, 64))


def test_a_patch_is_kept_when_its_mask_mean_is_above_one_half():
    from patchlens.methods.rise import RiseMasks

    view = TorchClassifier(tiny_vit(), input_size=SIZE).token_view(torch.rand(3, *SIZE))
    keep_vectors = lambda source, layout: view.keep_vectors(source.masks(0, source.total))  # noqa: E731
    layout = view.layout
    masks = RiseMasks(5, 3, 0.5, *SIZE, torch.Generator().manual_seed(0), torch.device("cpu"))
    expected = torch.stack(
        [
            torch.tensor(
                [
                    masks.masks(i, i + 1)[0, 0, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8].mean() > 0.5
                    for r in range(6)
                    for c in range(8)
                ]
            )
            for i in range(5)
        ]
    )
    assert torch.equal(keep_vectors(masks, layout), expected)
    half = torch.ones(1, 1, *SIZE)
    half[..., :4, :8] = 0  # patch 0 half hidden: dropped
    half[..., 8:11, :8] = 0  # patch 8 three-eighths hidden: kept
    source = type("S", (), {"total": 1, "masks": lambda self, a, b: half})()
    keep = keep_vectors(source, layout)[0]
    assert not keep[0] and keep[8] and keep.sum() == 47


def test_token_drop_runs_in_the_engine_counted_locked_and_cancellable():
    """A web job's hooks see every token-drop batch: counted, behind the lock, cancellable."""
    import threading

    from patchlens.engine import Hooks
    from patchlens.errors import Cancelled
    from patchlens.images import load_image
    from patchlens.request import RunRequest

    clf = TorchClassifier(tiny_vit(), input_size=SIZE)
    counted: list[int] = []
    pixels = (image(5).numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
    request = RunRequest.of("occlusion", {"masking": "tokens", "window": 8, "stride": 8}, batch_size=5)
    lock = threading.RLock()
    exp = patchlens.api.explain_one(clf, load_image(pixels), request, Hooks(on_passes=counted.append, lock=lock))[0]
    assert sum(counted) == exp.forward_passes == 6 * 8 + 1
    direct = patchlens.api.explain_one(clf, load_image(pixels), request)[0]
    np.testing.assert_array_equal(exp.saliency, direct.saliency)
    stop = threading.Event()
    with pytest.raises(Cancelled):
        patchlens.api.explain_one(clf, load_image(pixels), request, Hooks(on_passes=lambda n: stop.set(), cancelled=stop.is_set))


def test_a_vit_inside_a_wrapper_can_be_read_but_not_token_dropped_and_says_so_before_work():
    from patchlens.capabilities import Capability

    wrapped = TorchClassifier(torch.nn.Sequential(torch.nn.Identity(), tiny_vit()), input_size=SIZE)
    direct = TorchClassifier(tiny_vit(), input_size=SIZE)
    assert Capability.TOKENS in wrapped.capabilities and Capability.TOKEN_DROP not in wrapped.capabilities
    assert Capability.TOKEN_DROP in direct.capabilities
    pixels = image(2).numpy().transpose(1, 2, 0)
    assert np.isfinite(patchlens.explain(wrapped, pixels, "attention_rollout").saliency).all()  # reading works
    with pytest.raises(MethodError, match="masking='tokens' needs token drop.*called directly.*use masking='pixels'"):
        patchlens.explain(wrapped, pixels, "rise", masking="tokens", n_masks=8)
