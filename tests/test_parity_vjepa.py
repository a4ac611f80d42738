"""V-JEPA parity with the study's release (golden fixture from ``tools/parity/vjepa.py``).

The fixture holds what the release's own code produced at a tiny config: its
``VisionTransformer`` loaded by its ``build_model`` from a checkpoint with both
``encoder`` and ``target_encoder`` entries, run by its ``VJEPAFeaturizer_Spaced``
on 76 seeded 8-bit frames, and the frame -> feature-map table its probe dataset
reads. vidprobe loads the same checkpoint through its own loader (a
``.pth.tar`` written here, read with ``torch.load(weights_only=True)``) and must
agree on every output to 1e-5 relative (fp32).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from vidprobe.backbones import get_backbone
from vidprobe.backbones.common import IMAGENET_MEAN, IMAGENET_STD, interleaved_clips, tokens_to_grid

FIXTURE = Path(__file__).parent / "fixtures" / "parity" / "vjepa.safetensors"
ENC = "encoder."


def check(ours: torch.Tensor, ref: torch.Tensor, name: str = "") -> None:
    """Agreement to 1e-5 relative: |ours - ref| <= 1e-5 |ref| + 1e-5 max|ref|."""
    torch.testing.assert_close(ours.float(), ref.float(), rtol=1e-5, atol=1e-5 * float(ref.abs().max()), msg=name)


@pytest.fixture(scope="module")
def fx() -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(FIXTURE), "pt") as f:
        meta = f.metadata()
    return load_file(str(FIXTURE)), json.loads(meta["config"])


def write_checkpoint(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    """The official layout: both encoders under 'module.backbone.' keys (target = 0.5 x encoder, as generated)."""
    enc = {k[len(ENC):]: v for k, v in tensors.items() if k.startswith(ENC)}
    assert enc and all(k.startswith("module.backbone.") for k in enc)
    torch.save({"encoder": enc, "target_encoder": {k: 0.5 * v for k, v in enc.items()}, "epoch": 0}, path)
    return path


def build(fx, tmp_path: Path, **kw):
    tensors, cfg = fx
    path = write_checkpoint(tensors, tmp_path / "vith16-384.pth.tar")
    arch = {k: cfg[k] for k in ("img_size", "patch_size", "num_frames", "tubelet_size", "embed_dim", "depth", "num_heads")}
    opts = dict(model_id=str(path), config_overrides=arch, height=cfg["input_hw"][0], width=cfg["input_hw"][1],
                dtype="fp32", device="cpu", resize="pil-bilinear", checkpoint_key="encoder", clips_per_batch=5)
    opts.update(kw)
    return get_backbone("vjepa-vith16-384", **opts)


@pytest.fixture(scope="module")
def bb(fx, tmp_path_factory):
    return build(fx, tmp_path_factory.mktemp("vjepa"))


def release_batch(tensors) -> torch.Tensor:
    """The release's clip batch ``[5,3,16,H,W]``: ToTensor + Normalize of its resized frames, gathered by clip."""
    x = tensors["input.frames_u8"].float() / 255
    m = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (x - m) / s
    return torch.stack([x[c] for c in tensors["input.clips"]]).permute(0, 2, 1, 3, 4)


def video(tensors) -> torch.Tensor:
    return tensors["input.video_u8"].float() / 255


# ------------------------------------------------------------------ loading
def test_loader_takes_the_release_checkpoint_entry(fx, bb, tmp_path):
    tensors, _ = fx
    ours = bb.model.state_dict()
    for k, v in tensors.items():
        if k.startswith(ENC):
            assert torch.equal(ours[k[len(ENC) + len("module.backbone."):]], v), k
    other = build(fx, tmp_path, checkpoint_key="target_encoder")
    assert torch.equal(other.model.state_dict()["blocks.0.attn.qkv.weight"], 0.5 * ours["blocks.0.attn.qkv.weight"])
    with pytest.raises(AssertionError):  # the release's features come from 'encoder', not 'target_encoder'
        check(other.extract(video(tensors), [-1]).maps[(-1, None)], bb.extract(video(tensors), [-1]).maps[(-1, None)])


def test_checkpoint_key_is_validated(fx, tmp_path):
    with pytest.raises(ValueError, match="checkpoint_key"):
        build(fx, tmp_path, checkpoint_key="ema")
    torch.save({"target_encoder": {"module.backbone.patch_embed.proj.weight": torch.zeros(1)}}, tmp_path / "t.pth.tar")
    with pytest.raises(ValueError, match="no 'encoder' entry"):
        get_backbone("vjepa-vith16-384", model_id=str(tmp_path / "t.pth.tar"), checkpoint_key="encoder")


# ------------------------------------------------------------------ inputs and layout
def test_resize_normalisation_and_clips_match_the_release(fx, bb):
    tensors, _ = fx
    frames = bb.preprocess(video(tensors))  # pil-bilinear + ImageNet normalisation
    assert bb.clips(76) == tensors["input.clips"].tolist()
    ours = torch.stack([frames[c] for c in bb.clips(76)]).permute(0, 2, 1, 3, 4)
    check(ours, release_batch(tensors), "clip batch")


def test_reference_layout_76_frames_5_clips(fx, bb):
    tensors, _ = fx
    assert interleaved_clips(76, 5) == tensors["layout.clips_76"].tolist()
    assert bb.frame_index(76).tolist() == tensors["layout.frame_to_map"].tolist()


# ------------------------------------------------------------------ numerics
def test_every_block_output_matches(fx, bb):
    tensors, cfg = fx
    x = release_batch(tensors)
    with torch.no_grad():
        h = bb.model.embed(x)
        for k, blk in enumerate(bb.model.blocks, start=1):
            h = blk(h)
            check(h, tensors[f"block.{k}"], f"block {k}")
        check(h, tensors["returned"], "returned (pre-norm)")
        check(bb.model(x), tensors["normed"], "normed")
    assert cfg["depth"] == len(bb.model.blocks)


def test_extract_reads_what_the_release_saves(fx, bb):
    tensors, cfg = fx
    L = cfg["depth"]
    h, w = cfg["input_hw"][0] // cfg["patch_size"], cfg["input_hw"][1] // cfg["patch_size"]
    t = cfg["num_frames"] // cfg["tubelet_size"]
    fs = bb.extract(video(tensors), [*range(1, L + 1), -1])
    assert fs.frame_index.tolist() == tensors["layout.frame_to_map"].tolist()
    feat = tensors["feat"]  # the release's saved tensor [clips, t, h, w, C]
    check(fs.maps[(L, None)], feat.reshape(-1, *feat.shape[2:]), "layer L = the release's feature")
    check(fs.maps[(-1, None)], tokens_to_grid(tensors["normed"], t, h, w), "layer -1 = normed")
    for k in range(1, L + 1):
        check(fs.maps[(k, None)], tokens_to_grid(tensors[f"block.{k}"], t, h, w), f"layer {k}")


def test_the_check_fails_on_any_perturbed_output(fx, bb):
    tensors, _ = fx
    names = [k for k in tensors if k.startswith("block.")] + ["returned", "normed", "feat"]
    x = release_batch(tensors)
    with torch.no_grad():
        outs, h = {}, bb.model.embed(x)
        for k, blk in enumerate(bb.model.blocks, start=1):
            h = blk(h)
            outs[f"block.{k}"] = h
        outs["returned"], outs["normed"] = h, bb.model.norm(h)
        outs["feat"] = h.reshape(tensors["feat"].shape)
    for name in names:
        ref = tensors[name].clone()
        check(outs[name], ref, name)
        flat = ref.view(-1)
        i = int(torch.randint(flat.numel(), (1,), generator=torch.Generator().manual_seed(len(name))))
        flat[i] += 1e-3 * float(ref.abs().max())
        with pytest.raises(AssertionError):
            check(outs[name], ref, name)
