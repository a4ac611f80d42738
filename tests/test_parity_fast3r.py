"""Fast3R parity with the study's release (golden fixture from ``tools/parity/fast3r.py``).

The fixture holds what the release's vendored Fast3R produced at a tiny config
(its ``CroCoEncoder`` + ``Fast3RDecoder`` through its ``inference``), with the
views' image indices drawn from a pinned generator seed; its image reader's
output on one frame; and the frame -> feature-map table its probe dataset reads
from a 150-view (DL3DV window) feature file. vidprobe loads the weights through
its own checkpoint path (a ``model.safetensors`` written here) and must agree
on every output to 1e-5 relative (fp32).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vidprobe.backbones import fast3r
from vidprobe.backbones.base import registry

FIXTURE = Path(__file__).parent / "fixtures" / "parity" / "fast3r.safetensors"


def check(ours: torch.Tensor, ref: torch.Tensor, name: str = "") -> None:
    """Agreement to 1e-5 relative: |ours - ref| <= 1e-5 |ref| + 1e-5 max|ref|."""
    torch.testing.assert_close(ours.float(), ref.float(), rtol=1e-5, atol=1e-5 * float(ref.abs().max()), msg=name)


@pytest.fixture(scope="module")
def fx():
    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
    return load_file(str(FIXTURE)), json.loads(meta["config"])


def overrides(cfg: dict, **kw) -> dict:
    keys = ("patch_size", "enc_dim", "enc_depth", "enc_heads", "dec_dim", "dec_depth", "dec_heads", "mlp_ratio",
            "rope_freq")
    return dict({k: cfg[k] for k in keys}, **kw)


def build(fx, root: Path, **kw) -> fast3r.Fast3RBackbone:
    """vidprobe's Fast3R loaded from a checkpoint file holding the release's state dict."""
    tensors, cfg = fx
    sd = {k: v for k, v in tensors.items() if k.startswith(("encoder.", "decoder."))}
    save_file(sd, str(root / "model.safetensors"))
    opts = dict(model_id=str(root), config_overrides=overrides(cfg), height=cfg["view_hw"][0],
                width=cfg["view_hw"][1], dtype="fp32", device="cpu", seed=cfg["seed"], resize="pil-lanczos")
    opts.update(kw)
    return fast3r.build(registry()["fast3r"][0], **opts)


@pytest.fixture(scope="module")
def bb(fx, tmp_path_factory):
    return build(fx, tmp_path_factory.mktemp("fast3r"))


def views(tensors) -> torch.Tensor:
    return tensors["model.views_u8"].float() / 255


def reference(tensors, prefix: str = "out") -> dict[str, torch.Tensor]:
    """Outputs vidprobe exposes, named after the release's decoder list (index L = dec_norm of block L)."""
    L = sum(1 for k in tensors if k.startswith(f"{prefix}.") and k[len(prefix) + 1:].isdigit()) - 1
    ref = {"encoder": tensors[f"{prefix}.0"], "final": tensors[f"{prefix}.{L}"],
           f"block.{L}": tensors[f"{prefix}.block_L_raw"]}
    ref.update({f"block.{k}": tensors[f"{prefix}.{k}"] for k in range(1, L)})
    return ref


def ours(model: fast3r.Fast3RNet, x: torch.Tensor, **kw) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(x, **kw)
    res = {"encoder": out["encoder"], "final": out["final"]}
    res.update({f"block.{k}": b for k, b in enumerate(out["blocks"], start=1)})
    return res


# ------------------------------------------------------------------ inputs
def test_preprocess_matches_the_release_reader(fx):
    tensors, _ = fx
    bb = fast3r.build(registry()["fast3r"][0], tiny=True, height=288, width=512, resize="pil-lanczos")
    ours_ = bb.preprocess(tensors["pre.src_u8"][None].float() / 255)  # PIL LANCZOS to 512x288, (x - 0.5) / 0.5
    ref = (tensors["pre.out_u8"][None].float() / 255 - 0.5) / 0.5
    check(ours_, ref, "preprocess")
    default = fast3r.build(registry()["fast3r"][0], tiny=True, height=288, width=512)
    assert (default.preprocess(tensors["pre.src_u8"][None].float() / 255) - ref).abs().max() > 1e-2
    with pytest.raises(ValueError, match="resize kernel"):
        fast3r.build(registry()["fast3r"][0], tiny=True, resize="lanczos")


def test_views_normalisation_and_image_ids(fx, bb):
    tensors, cfg = fx
    check(bb.preprocess(views(tensors)), tensors["model.views"], "views (size unchanged: no resize)")
    ids = bb.model.decoder.image_ids(cfg["views"], torch.Generator().manual_seed(cfg["seed"]))
    assert ids.tolist() == tensors["model.image_ids"].tolist()  # the release's draw from the same generator seed


def test_reference_frame_layout_dl3dv_window(fx):
    tensors, _ = fx
    # the probe reads map t for frame t (t < 76) although all 150 window frames went through one pass ...
    release = tensors["layout.frame_to_map"].tolist()
    ours_ = fast3r.per_frame_index(76).tolist()
    reachable = [0] + list(range(1, 76, 4))  # the reference sampler's frames: 0 and 1+4k
    assert [ours_[t] for t in reachable] == [release[t] for t in reachable]
    # ... except that its float32 index arithmetic, floor((t-1)/75*75)+1, reads map t-1 for frames 50 and 64,
    # which its sampler never asks for
    assert [t for t in range(76) if release[t] != ours_[t]] == [50, 64]
    assert release[50] == 49 and release[64] == 63


# ------------------------------------------------------------------ numerics
def test_every_output_matches_with_the_drawn_and_the_pinned_ids(fx, bb):
    tensors, cfg = fx
    x = tensors["model.views"]
    ref = reference(tensors)
    for got in (ours(bb.model, x, seed=cfg["seed"]), ours(bb.model, x, image_ids=tensors["model.image_ids"])):
        assert set(got) == set(ref)
        for name in ref:
            check(got[name], ref[name], name)


def test_attention_bias_for_inference_matches(fx, tmp_path):
    tensors, cfg = fx
    bb = build(fx, tmp_path, config_overrides=overrides(cfg, attn_bias_for_inference=True))
    got = ours(bb.model, tensors["model.views"], image_ids=tensors["model.image_ids"])
    ref = reference(tensors, "bias.out")
    for name in ref:
        check(got[name], ref[name], name)
    with pytest.raises(AssertionError):  # the biased run is a different reference
        check(got["final"], reference(tensors)["final"])


def test_extract_layers_are_the_release_indices(fx, bb):
    tensors, cfg = fx
    ref = reference(tensors)
    L = cfg["dec_depth"]
    fs = bb.extract(views(tensors), layers=[*range(1, L + 1), -1])
    h, w = cfg["view_hw"][0] // cfg["patch_size"], cfg["view_hw"][1] // cfg["patch_size"]
    grid = lambda t: t.reshape(cfg["views"], h, w, -1)  # noqa: E731
    check(fs.maps[(-1, None)], grid(ref["final"]), "layer -1 = feature index L")
    for k in range(1, L + 1):
        check(fs.maps[(k, None)], grid(ref[f"block.{k}"]), f"layer {k}")
    assert fs.info["image_ids"] == tensors["model.image_ids"].tolist()
    pinned = fast3r.Fast3RBackbone(bb.spec, bb.model, bb.device, bb.dtype, None, seed=0,
                                   height=cfg["view_hw"][0], width=cfg["view_hw"][1],
                                   image_ids=tensors["model.image_ids"])
    check(pinned.extract(views(tensors), layers=[-1]).maps[(-1, None)], grid(ref["final"]), "pinned ids")
    with pytest.raises(ValueError, match="image_ids"):
        bb.model(tensors["model.views"], image_ids=torch.tensor([0, 1]))


def test_the_check_fails_on_any_perturbed_output(fx, bb):
    tensors, cfg = fx
    got = ours(bb.model, tensors["model.views"], seed=cfg["seed"])
    for name, ref in reference(tensors).items():
        ref = ref.clone()
        check(got[name], ref, name)
        flat = ref.view(-1)
        i = int(torch.randint(flat.numel(), (1,), generator=torch.Generator().manual_seed(len(name))))
        flat[i] += 1e-3 * float(ref.abs().max())
        with pytest.raises(AssertionError):
            check(got[name], ref, name)

