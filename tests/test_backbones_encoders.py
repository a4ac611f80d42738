"""Encoder adapters (DINOv2, V-JEPA, V-JEPA 2, VideoMAE) at tiny random configs of the real classes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from vidprobe.backbones import get_backbone, registry
from vidprobe.backbones.base import MissingExtraError
from vidprobe.backbones.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    chunked_clips,
    drop_unused,
    interleaved_clips,
    interleaved_frame_index,
    interleaved_position,
    per_frame_index,
    require_transformers,
    tokens_to_grid,
    tubelet_index,
    vae4x_index,
)

FIXTURES = Path(__file__).parent / "fixtures"


def video(T=5, H=40, W=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, 3, H, W, generator=g)


class BlockCounter:
    """Counts forward calls of every block of a list."""

    def __init__(self, blocks):
        self.calls = [0] * len(blocks)
        self.handles = [b.register_forward_pre_hook(self._hook(i)) for i, b in enumerate(blocks)]

    def _hook(self, i):
        def hook(_m, _inp):
            self.calls[i] += 1
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


# ------------------------------------------------------------------ layouts
def test_per_frame_and_vae4x_index():
    assert per_frame_index(4).tolist() == [0, 1, 2, 3]
    assert vae4x_index(10).tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    assert vae4x_index(81)[-1] == 20 and vae4x_index(81).unique().numel() == 21  # WAN: 81 frames -> 21 latents
    assert tubelet_index(5, 2).tolist() == [0, 0, 1, 1, 2]


@pytest.mark.parametrize("T,n,length", [(76, 5, 16), (97, 2, 49), (81, 2, 41)])
def test_interleaved_clips_reference_settings(T, n, length):
    clips = interleaved_clips(T, n)
    assert len(clips) == n
    assert all(len(c) == length and c[0] == 0 for c in clips)
    rest = sorted(t for c in clips for t in c[1:])
    assert rest == list(range(1, T))  # every frame but 0 exactly once
    for k, c in enumerate(clips):
        assert c[1:] == list(range(k + 1, T, n))  # clip k = 0, k+1, k+1+n, ...


def test_interleaved_position_every_frame():
    for T, n in [(76, 5), (11, 5), (3, 5), (1, 5), (10, 3)]:
        clips = interleaved_clips(T, n)
        assert len(clips) == min(n, max(1, T - 1))
        for t in range(T):
            k, p = interleaved_position(t, n, T)
            assert clips[k][p] == t
            if t > 0:  # the only clip holding t
                assert [i for i, c in enumerate(clips) if t in c] == [k]
    with pytest.raises(ValueError):
        interleaved_position(5, 2, 5)


def test_interleaved_frame_index_vjepa_reference():
    idx = interleaved_frame_index(76, 5, lambda L: tubelet_index(L, 2), 8)
    clips = interleaved_clips(76, 5)
    for t in range(76):
        k = 0 if t == 0 else next(i for i, c in enumerate(clips) if t in c)
        p = clips[k].index(t)
        assert idx[t] == 8 * k + p // 2
    assert idx.unique().numel() == 40  # 5 clips x 8 tubelets, all used
    assert idx[:7].tolist() == [0, 0, 8, 16, 24, 32, 1]


def test_chunked_clips_and_drop_unused():
    assert chunked_clips(5, 2) == [[0, 1], [2, 3], [4, 4]]
    maps = torch.arange(6.0).view(6, 1, 1, 1)
    fi = torch.tensor([0, 2, 5])
    m, idx = drop_unused(maps, fi)
    assert m.flatten().tolist() == [0.0, 2.0, 5.0] and idx.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="grid"):
        tokens_to_grid(torch.zeros(1, 7, 4), 1, 2, 3)


# ------------------------------------------------------------------ DINOv2
@pytest.mark.parametrize("name,prefix", [("dinov2-large", 1), ("dinov2-reg-small", 5)])
def test_dinov2_matches_hidden_states(name, prefix):
    bb = get_backbone(name, tiny=True, height=42, width=70, batch_size=3)
    v = video(T=5)
    fs = bb.extract(v, [1, 2, -1])
    assert fs.frame_index.tolist() == [0, 1, 2, 3, 4]
    for key in [(1, None), (2, None), (-1, None)]:
        assert fs.maps[key].shape == (5, 3, 5, 32)
    with torch.no_grad():
        out = bb.model(pixel_values=bb.preprocess(v), output_hidden_states=True)
    for layer in (1, 2):
        ref = out.hidden_states[layer][:, prefix:].reshape(5, 3, 5, 32)
        torch.testing.assert_close(fs.maps[(layer, None)], ref)
    # "last" = the final LayerNorm output, as the reference reads DINOv2
    torch.testing.assert_close(fs.maps[(-1, None)], out.last_hidden_state[:, prefix:].reshape(5, 3, 5, 32))
    # the raw last block differs from the normalised output
    assert not torch.allclose(fs.maps[(-1, None)], out.hidden_states[3][:, prefix:].reshape(5, 3, 5, 32))


def test_dinov2_release_preprocessing_pil_bicubic():
    """The release: PIL ``resize((W, H), BICUBIC)`` of each decoded frame, then the dinov2 image processor
    (``BitImageProcessor``: rescale 1/255, ImageNet mean/std) with resize and centre crop off."""
    tf = require_transformers()
    from PIL import Image

    proc_cls = getattr(tf, "BitImageProcessorPil", None) or tf.BitImageProcessor  # the numpy/PIL processor
    proc = proc_cls(image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))  # facebook/dinov2-* values
    g = torch.Generator().manual_seed(5)
    u8 = torch.randint(0, 256, (3, 3, 45, 80), generator=g, dtype=torch.uint8)
    pil = [Image.fromarray(f.permute(1, 2, 0).numpy(), mode="RGB").resize((42, 28), Image.BICUBIC) for f in u8]
    ref = proc(images=pil, return_tensors="pt", do_center_crop=False, do_resize=False)["pixel_values"]
    bb = get_backbone("dinov2-large", tiny=True, height=28, width=42, resize="pil-bicubic", dtype="fp32", device="cpu")
    ours = bb.preprocess(u8.float() / 255)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-5, atol=1e-5)
    default = get_backbone("dinov2-large", tiny=True, height=28, width=42).preprocess(u8.float() / 255)
    assert (default - ref).abs().max() > 1e-2  # the default kernel (torch bilinear) is not the release's
    with pytest.raises(ValueError, match="resize kernel"):
        get_backbone("dinov2-large", tiny=True, resize="lanczos")


def test_dinov2_early_stop_skips_later_blocks():
    bb = get_backbone("dinov2-base", tiny=True, height=28, width=42, batch_size=8)
    v = video(T=2)
    counter = BlockCounter(bb.blocks)
    try:
        fs = bb.extract(v, [1])
        assert counter.calls == [1, 0, 0]
        fs_all = bb.extract(v, [1, 3])
        assert counter.calls == [2, 1, 1]
    finally:
        counter.close()
    torch.testing.assert_close(fs.maps[(1, None)], fs_all.maps[(1, None)], rtol=0, atol=0)


def test_bad_inputs_are_named():
    bb = get_backbone("dinov2-small", tiny=True, height=28, width=28)
    with pytest.raises(ValueError, match="'video'"):
        bb.extract(torch.rand(2, 4, 28, 28), [1])
    with pytest.raises(ValueError, match="'video'"):
        bb.extract(torch.rand(2, 3, 28, 28) * 3, [1])
    with pytest.raises(ValueError, match="out of range"):
        bb.extract(video(2), [4])
    with pytest.raises(ValueError, match="timestep"):
        bb.extract(video(2), [1], timesteps=(249,))
    with pytest.raises(ValueError, match="height and width"):
        get_backbone("dinov2-small", tiny=True, height=28)


# ------------------------------------------------------------------ V-JEPA
def test_vjepa_state_dict_matches_official_checkpoint_keys():
    from vidprobe.backbones.vjepa import _strip, build_encoder

    official = json.loads((FIXTURES / "vjepa_official_keys.json").read_text())
    for variant in ("vith16-384", "vitl16"):
        with torch.device("meta"):
            model = build_encoder(variant)
        ours = {k: list(v.shape) for k, v in model.state_dict().items()}
        theirs = {k: v for k, v in zip(_strip(dict.fromkeys(official[variant])), official[variant].values())}
        assert ours == theirs, variant
    assert len(official["vith16-384"]) == 389  # 32 blocks x 12 + patch_embed (2) + pos_embed + norm (2)


def test_vjepa_sincos_table():
    from vidprobe.nn.pos_embed import sincos_3d

    table = sincos_3d(1280, 8, 24, 24, uniform_power=True)
    assert table.shape == (8 * 24 * 24, 1280)
    # position (0,0,0): each axis block (2*ceil(1280/6) = 428 channels) is [sin 0 ... | cos 0 ...]
    block = torch.cat([torch.zeros(214), torch.ones(214)])
    torch.testing.assert_close(table[0], torch.cat([block, block, block])[:1280])
    # next time step (token 24*24): the first time channel is sin(1)
    assert abs(float(table[24 * 24, 0]) - 0.8414709848) < 1e-6
    assert float(table[1, 428 * 2]) == pytest.approx(0.8414709848, abs=1e-6)  # next column: first w channel


def test_vjepa_layers_match_manual_pass_and_early_stop():
    bb = get_backbone("vjepa-vith16-384", tiny=True, height=32, width=48)
    v = video(T=11, H=36, W=50)
    counter = BlockCounter(bb.blocks)
    try:
        fs = bb.extract(v, [2, -1])
        assert counter.calls == [5, 5, 5]  # 5 clips, all blocks (the last is needed for -1)
        fs1 = bb.extract(v, [1])
        assert counter.calls == [10, 5, 5]  # stopped after block 1
    finally:
        counter.close()
    clips = bb.clips(11)
    assert clips[0] == [0, 1, 6, 6] and clips[4] == [0, 5, 10, 10]
    frames = bb.preprocess(v)
    x = torch.stack([frames[c] for c in clips]).permute(0, 2, 1, 3, 4)
    with torch.no_grad():
        h = bb.model.embed(x)
        h1 = bb.model.blocks[0](h)
        h2 = bb.model.blocks[1](h1)
        final = bb.model(x)
    grid = lambda t: t.reshape(5 * 2, 2, 3, 32)  # noqa: E731
    torch.testing.assert_close(fs1.maps[(1, None)], grid(h1))
    torch.testing.assert_close(fs.maps[(2, None)], grid(h2))
    torch.testing.assert_close(fs.maps[(-1, None)], grid(final))


def test_vjepa_interleaved_bookkeeping_every_frame():
    bb = get_backbone("vjepa-vitl16", tiny=True, height=32, width=32)
    T = 13
    v = video(T=T, H=32, W=32, seed=3)
    fs = bb.extract(v, [-1])
    maps = fs.maps[(-1, None)]
    frames = bb.preprocess(v)
    clips = interleaved_clips(T, 5)
    for t in range(T):
        k = 0 if t == 0 else next(i for i, c in enumerate(clips) if t in c)
        clip = clips[k] + [clips[k][-1]] * (4 - len(clips[k]))  # padded to 4 frames (tubelet 2)
        p = clip.index(t)
        with torch.no_grad():
            alone = bb.model(frames[clip].permute(1, 0, 2, 3)[None])  # [1,3,L,H,W]
        expect = alone.reshape(2, 2, 2, 32)[p // 2]
        torch.testing.assert_close(maps[fs.frame_index[t]], expect, msg=f"frame {t}")


def test_vjepa_checkpoint_roundtrip(tmp_path):
    from vidprobe.backbones.vjepa import TINY, build_encoder

    torch.manual_seed(1)
    src = build_encoder("vith16-384", tiny=True)
    ckpt = {
        "target_encoder": {"module.backbone." + k: v for k, v in src.state_dict().items()},
        "encoder": {},
        "epoch": 300,
    }
    path = tmp_path / "vith16-384.pth.tar"
    torch.save(ckpt, path)
    bb = get_backbone("vjepa-vith16-384", model_id=str(path), config_overrides=dict(TINY), height=32, width=32)
    for k, v in src.state_dict().items():
        torch.testing.assert_close(bb.model.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not match"):
        get_backbone("vjepa-vitl16", model_id=str(path), config_overrides=dict(TINY, embed_dim=64))
    with pytest.raises(FileNotFoundError):
        get_backbone("vjepa-vitl16", model_id=str(tmp_path / "missing.pth.tar"))


# ------------------------------------------------------------------ V-JEPA 2
def test_vjepa2_matches_hidden_states_and_layout():
    bb = get_backbone("vjepa2-vitl-fpc64-256", tiny=True)  # tiny: crop 32, 4 frames per clip
    v = video(T=11)
    fs = bb.extract(v, [1, -1])
    assert fs.frame_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
    assert fs.maps[(1, None)].shape == (6, 2, 2, 32)
    frames = bb.preprocess(v)
    with torch.no_grad():
        out = bb.model(pixel_values_videos=frames[:4][None], output_hidden_states=True, skip_predictor=True)
    torch.testing.assert_close(fs.maps[(1, None)][:2], out.hidden_states[1].reshape(2, 2, 2, 32))
    torch.testing.assert_close(fs.maps[(-1, None)][:2], out.last_hidden_state.reshape(2, 2, 2, 32))
    counter = BlockCounter(bb.blocks)
    try:
        fs1 = bb.extract(v, [1])
        assert counter.calls == [3, 0, 0]  # 3 clips, block 1 only
    finally:
        counter.close()
    torch.testing.assert_close(fs1.maps[(1, None)], fs.maps[(1, None)], rtol=0, atol=0)
    with pytest.raises(ValueError, match="square"):
        get_backbone("vjepa2-vitl-fpc64-256", tiny=True, height=32, width=48)


# ------------------------------------------------------------------ VideoMAE
def test_videomae_matches_hidden_states_and_drops_padding_maps():
    bb = get_backbone("videomae-base", tiny=True)  # tiny: 32x32, 4 frames per clip
    v = video(T=5)
    fs = bb.extract(v, [2, -1])
    # clips [0..3] and [4,4,4,4]: the second clip's second tubelet is padding only -> dropped
    assert fs.frame_index.tolist() == [0, 0, 1, 1, 2]
    assert fs.maps[(2, None)].shape == (3, 2, 2, 32)
    frames = bb.preprocess(v)
    with torch.no_grad():
        out = bb.model(pixel_values=frames[:4][None], output_hidden_states=True)
    torch.testing.assert_close(fs.maps[(2, None)][:2], out.hidden_states[2].reshape(2, 2, 2, 32))
    torch.testing.assert_close(fs.maps[(-1, None)][:2], out.last_hidden_state.reshape(2, 2, 2, 32))
    counter = BlockCounter(bb.blocks)
    try:
        bb.extract(v, [2])
        assert counter.calls == [2, 2, 0]
    finally:
        counter.close()


# ------------------------------------------------------------------ registry / CLI
def test_registry_lists_every_encoder_and_control():
    names = set(registry())
    expected = {
        "dinov2-small", "dinov2-base", "dinov2-large", "dinov2-giant",
        "dinov2-reg-small", "dinov2-reg-base", "dinov2-reg-large", "dinov2-reg-giant",
        "vjepa-vitl16", "vjepa-vith16", "vjepa-vith16-384", "vjepa2-vitl-fpc64-256", "videomae-base",
        "pixels", "oracle", "random-dinov2", "random-vjepa", "random-vjepa2", "random-videomae",
    }
    assert expected <= names
    spec = registry()["dinov2-large"][0]
    assert (spec.model_id, spec.input_hw, spec.default_layer, spec.frame_layout) == (
        "facebook/dinov2-large", (420, 728), -1, "per-frame")
    vj = registry()["vjepa-vith16-384"][0]
    assert (vj.input_hw, vj.num_frames, vj.num_layers) == ((480, 832), 76, 32)
    assert vj.default_layer == 32  # the reference reads the last block before the final norm
    assert registry()["vjepa-vitl16"][0].default_layer == -1
    with pytest.raises(ValueError, match="resize kernel"):
        get_backbone("vjepa-vitl16", tiny=True, resize="area")
    with pytest.raises(KeyError, match="unknown backbone"):
        get_backbone("no-such-model")


def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(MissingExtraError, match=r"vidprobe\[hf\]"):
        require_transformers()
    with pytest.raises(MissingExtraError, match="transformers"):
        get_backbone("dinov2-small", tiny=True)


def test_cli_backbones_table():
    from typer.testing import CliRunner

    from vidprobe.cli import _load, app

    _load()
    res = CliRunner().invoke(app, ["backbones"])
    assert res.exit_code == 0, res.output
    for name in registry():
        assert name in res.output
    assert "interleaved 5 clips" in res.output and "420x728" in res.output
    res = CliRunner().invoke(app, ["backbones", "--json", "--family", "vjepa"])
    rows = json.loads(res.output)
    assert {r["name"] for r in rows} == {"vjepa-vitl16", "vjepa-vith16", "vjepa-vith16-384"}
