"""Open-Sora 2.0 adapter: own MMDiT with the official checkpoint names, tiny random configs, CPU only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from vidprobe.backbones.base import registry
from vidprobe.backbones.diffusion import denoise_check, make_noise, noise_seed
from vidprobe.backbones.opensora import (
    MMDiTConfig,
    OpenSoraFlowScheduler,
    OpenSoraMMDiT,
    image_ids,
    load_transformer,
    pack,
    rope_cos_sin,
    shift_alpha,
    timestep_embedding,
    unpack,
)

FIXTURE = Path(__file__).parent / "fixtures" / "opensora2_keys.json"


def _build(**kw):
    return registry()["opensora2"][1](tiny=True, device="cpu", **kw)


@pytest.fixture(scope="module")
def bb():
    return _build()


@pytest.fixture(scope="module")
def video():
    return torch.rand(9, 3, 32, 48, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ registry
def test_registered_with_reference_defaults():
    spec = registry()["opensora2"][0]
    assert spec.model_id == "hpcai-tech/Open-Sora-v2"
    assert spec.input_hw == (480, 848) and spec.num_frames == 81 and spec.frame_layout == "vae4x"
    # 19 double + 38 single blocks; the reference's single_blocks[20] is layer 19 + 20 + 1
    assert spec.num_layers == 57 and spec.default_layer == 40
    assert spec.default_timestep == 750  # tau = 1 - 750/1000 = 0.25


# ------------------------------------------------------------ key contract
def test_meta_full_size_model_matches_official_key_fixture():
    fx = json.loads(FIXTURE.read_text())
    with torch.device("meta"):
        m = OpenSoraMMDiT(MMDiTConfig())
    own = {k: list(v.shape) for k, v in m.state_dict().items()}
    assert set(own) == set(fx["tensors"]), (sorted(set(own) - set(fx["tensors"]))[:5], sorted(set(fx["tensors"]) - set(own))[:5])
    assert {k: v for k, v in own.items() if fx["tensors"][k] != v} == {}
    assert sum(math.prod(s) for s in own.values()) == fx["num_params"]
    assert len(m.double_blocks) == 19 and len(m.single_blocks) == 38 and len(m.tap_points) == 57


def test_strict_state_dict_round_trip_with_official_names(tmp_path, bb):
    from safetensors.torch import save_file

    model = bb.transformer
    sd = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    assert "single_blocks.0.v_mlp.weight" in sd and "cond_in.weight" in sd and "double_blocks.0.img_attn.q_proj.bias" in sd
    f = tmp_path / "Open_Sora_v2.safetensors"
    save_file(sd, str(f))
    with torch.device("meta"):
        fresh = OpenSoraMMDiT(model.config)
    # load_transformer builds the full-size config; exercise the same strict path with the tiny config
    from vidprobe.backbones.opensora import load_official, load_state_dict_file

    loaded = load_official(fresh, load_state_dict_file(str(f)), str(f))
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k]), k
    # a renamed tensor is rejected, naming the file and the keys
    bad = dict(sd)
    bad["single_blocks.0.v_proj.weight"] = bad.pop("single_blocks.0.v_mlp.weight")
    g = tmp_path / "bad.safetensors"
    save_file(bad, str(g))
    with torch.device("meta"):
        fresh2 = OpenSoraMMDiT(model.config)
    with pytest.raises(ValueError, match=r"bad\.safetensors.*single_blocks\.0\.v_mlp\.weight"):
        load_official(fresh2, load_state_dict_file(str(g)), str(g))
    # the full-size loader rejects the tiny checkpoint (shapes differ) with the file name
    with pytest.raises(ValueError, match="Open_Sora_v2.safetensors"):
        load_transformer(str(tmp_path), None, torch.float32)


# ------------------------------------------------------------ layout/shapes
def test_reference_latent_grid_and_frame_index():
    big = _build(height=480, width=848)  # only the bookkeeping is used: no forward at this size
    assert big.latent_grid(81) == (21, 60, 106)  # -> 21 x 30 x 53 tokens after 2x2 packing
    fi = big.frame_index(81)
    assert fi.shape == (81,) and int(fi.max()) == 20
    assert all(int(fi[t]) == (0 if t == 0 else (t - 1) // 4 + 1) for t in range(81))
    assert big.clips(10) == [list(range(10)) + [9, 9, 9]]  # padded to 4k+1 = 13


def test_extract_shapes_and_frame_index(bb, video):
    fs = bb.extract(video, layers=[1, 3, 5], timesteps=(750, 0.5))
    for key in [(1, 750), (3, 750), (5, 750), (1, 0.5), (5, 0.5)]:
        assert fs.maps[key].shape == (3, 2, 3, 32)
    assert fs.frame_index.tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert fs.info["time_shift"]["latent_grid"] == (3, 4, 6)
    with pytest.raises(ValueError):
        bb.extract(video, layers=[6], timesteps=(750,))


def test_pack_layout_and_round_trip():
    x = torch.randn(1, 5, 2, 4, 6)
    p = pack(x)
    assert p.shape == (1, 2 * 2 * 3, 20)
    # token (t, i, j), channel (c, a, b) = x[c, t, 2i+a, 2j+b]
    t, i, j, c, a, b = 1, 1, 2, 3, 1, 0
    assert p[0, t * 6 + i * 3 + j, c * 4 + a * 2 + b] == x[0, c, t, 2 * i + a, 2 * j + b]
    assert torch.equal(unpack(p, 2, 2, 3), x)
    ids = image_ids(2, 2, 3)
    assert ids[0, t * 6 + i * 3 + j].tolist() == [t, i, j]


# ------------------------------------------------------------ noise level
def test_time_shift_matches_reference_formula():
    # independent: a = lin(h*w//4) * sqrt(F), lin(256) = 1, lin(4096) = 3
    seq = (106 * 60) // 4
    a = (1 + (seq - 256) * (3 - 1) / (4096 - 256)) * math.sqrt(21)
    assert shift_alpha(21, 60, 106) == pytest.approx(a, rel=1e-12)
    assert a == pytest.approx(7.7665, abs=1e-3)
    s = OpenSoraFlowScheduler()
    s.set_grid(21, 60, 106)
    t = a * 0.25 / (1 + (a - 1) * 0.25)
    assert float(s.timesteps[750]) / 1000 == pytest.approx(t, rel=1e-6)
    assert t == pytest.approx(0.7214, abs=1e-3)


def test_noise_level_equals_shifted_flow_formula(bb, video):
    fs = bb.extract(video, layers=[1], timesteps=(750, 100))
    F, h, w = fs.info["time_shift"]["latent_grid"]
    a = (1 + ((w * h) // 4 - 256) * 2 / 3840) * math.sqrt(F)
    assert fs.info["time_shift"]["alpha"] == pytest.approx(a)
    for rec, i in zip(fs.info["timesteps"], (750, 100)):
        tau = 1 - i / 1000
        t = a * tau / (1 + (a - 1) * tau)
        assert rec["tau"] == pytest.approx(tau)
        assert rec["model_t"] / 1000 == pytest.approx(t, rel=1e-5)
        assert rec["alpha"] == pytest.approx(1 - t, abs=1e-6)
        assert rec["sigma"] == pytest.approx(1 - (1 - 1e-5) * (1 - t), abs=1e-6)
    # the noised latents themselves
    cl = bb.encode(video)[0]
    choice = bb.timestep_choices([750])[0]
    xt = bb.noised(cl, choice, 0)
    noise = make_noise(cl.latents.shape, noise_seed(bb.seed, 0, 750))
    tau = 0.25
    t = a * tau / (1 + (a - 1) * tau)
    expect = (1 - t) * cl.latents + (1 - (1 - 1e-5) * (1 - t)) * noise
    assert torch.allclose(xt, expect, atol=1e-5)


# ------------------------------------------------------------- i2v condition
def test_first_frame_condition(bb, video):
    bb.vae_calls = 0
    cl = bb.encode(video)[0]
    assert bb.vae_calls == 2  # the clip, and the first frame alone
    F, h, w = cl.grid
    cond = unpack(cl.cond["cond"], F, h, w)  # [1, 17, F, 2h, 2w]
    assert cond.shape[1] == 17
    assert torch.all(cond[:, 0, 0] == 1) and torch.all(cond[:, 0, 1:] == 0)
    assert torch.all(cond[:, 1:, 1:] == 0)
    frame0 = bb.preprocess(video)[:1].permute(1, 0, 2, 3)[None]
    first = bb.vae_encode(frame0).float() * bb.scaling_factor
    assert torch.allclose(cond[:, 1:, :1], first, atol=1e-6)


# --------------------------------------------------- hooks vs a manual pass
def _manual_image_streams(bb, video, index):
    """Every block's image stream, by calling the model's parts in upstream order (no hooks)."""
    m = bb.transformer
    cl = bb.encode(video)[0]
    choice = bb.timestep_choices([index])[0]
    xt = bb.noised(cl, choice, 0)
    txt = bb.text_embeds
    img = m.img_in(pack(xt)) + m.cond_in(cl.cond["cond"])
    vec = m.time_in(timestep_embedding(torch.tensor([choice.model_t / 1000]))) + m.vector_in(bb.pooled_embeds)
    txt = m.txt_in(txt)
    ids = torch.cat([torch.zeros(1, txt.shape[1], 3), cl.cond["img_ids"]], dim=1)
    pe = rope_cos_sin(ids, m.config.axes_dim, m.config.theta)
    outs = []
    for blk in m.double_blocks:
        img, txt = blk(img, txt, vec, pe)
        outs.append(img)
    x = torch.cat([txt, img], 1)
    for blk in m.single_blocks:
        x = blk(x, vec, pe)
        outs.append(x[:, txt.shape[1]:])
    return outs, cl.grid


def test_hooked_features_equal_manual_full_pass(bb, video):
    with torch.no_grad():
        outs, (F, h, w) = _manual_image_streams(bb, video, 750)
    layers = [1, 2, 3, 5]
    fs = bb.extract(video, layers=layers, timesteps=(750,))
    for layer in layers:
        ref = outs[layer - 1].reshape(F, h, w, -1)
        assert torch.allclose(fs.maps[(layer, 750)], ref, atol=1e-5), layer
    assert not torch.allclose(fs.maps[(2, 750)], fs.maps[(3, 750)])


def test_early_stop_skips_later_blocks_and_matches_full_pass(bb, video):
    calls = []
    hooks = [b.register_forward_hook(lambda *a, i=i: calls.append(i)) for i, b in enumerate(bb.transformer.single_blocks)]
    hooks.append(bb.transformer.final_layer.register_forward_hook(lambda *a: calls.append("final")))
    try:
        early = bb.extract(video, layers=[3], timesteps=(750,))  # layer 3 = single_blocks[0]
        assert calls == [0]
        calls.clear()
        full = bb.extract(video, layers=[3, 5], timesteps=(750,))
        assert calls == [0, 1, 2]
    finally:
        for hk in hooks:
            hk.remove()
    assert torch.equal(early.maps[(3, 750)], full.maps[(3, 750)])


def test_deterministic_for_seed(video):
    a = _build(seed=3).extract(video, layers=[4], timesteps=(750,))
    b = _build(seed=3).extract(video, layers=[4], timesteps=(750,))
    c = _build(seed=4).extract(video, layers=[4], timesteps=(750,))
    assert torch.equal(a.maps[(4, 750)], b.maps[(4, 750)])
    assert not torch.allclose(a.maps[(4, 750)], c.maps[(4, 750)])


# ------------------------------------------------------------------- misc
def test_rope_is_rotate_half_and_relative():
    # pairs are (d, d + D/2) with per-axis frequencies; scores depend only on relative positions
    ids = torch.tensor([[[0.0, 1.0, 2.0], [3.0, 0.0, 5.0]]])
    cos, _ = rope_cos_sin(ids, [4, 6, 6], 10_000)
    assert cos.shape == (1, 1, 2, 16)
    assert torch.equal(cos[..., :8], cos[..., 8:])
    from vidprobe.backbones.opensora import apply_rope

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16, generator=g), torch.randn(1, 1, 1, 16, generator=g)
    def score(pq, pk):
        cq, sq = rope_cos_sin(torch.tensor([[pq]]), [4, 6, 6], 10_000)
        ck, sk = rope_cos_sin(torch.tensor([[pk]]), [4, 6, 6], 10_000)
        return float((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum())
    assert score([1.0, 2.0, 3.0], [0.0, 1.0, 1.0]) == pytest.approx(score([3.0, 5.0, 4.0], [2.0, 4.0, 2.0]), abs=1e-5)


def test_denoise_check_runs(bb, video):
    out = denoise_check(bb, video, steps=3, start_tau=0.9)
    assert out.shape == (9, 3, 32, 48) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_vae_loads_strictly_from_official_file(tmp_path, bb):
    from safetensors.torch import save_file

    from vidprobe.backbones.opensora import TINY_VAE, load_vae

    sd = {k: v.contiguous() for k, v in bb.vae.state_dict().items()}
    save_file(sd, str(tmp_path / "hunyuan_vae.safetensors"))
    vae = load_vae(str(tmp_path), None, config=TINY_VAE)
    assert all(torch.equal(v, sd[k]) for k, v in vae.state_dict().items())
    bad = {("x." + k if i == 0 else k): v for i, (k, v) in enumerate(sd.items())}
    save_file(bad, str(tmp_path / "bad_vae.safetensors"))
    with pytest.raises(ValueError, match="bad_vae.safetensors"):
        load_vae(str(tmp_path / "bad_vae.safetensors"), None, config=TINY_VAE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="hunyuan_vae"):
        load_vae(str(tmp_path / "empty"), None)


# ------------------------------------------------- release numerics (issue 10)
def _clip_tensor(bb, video):
    return bb.preprocess(video).permute(1, 0, 2, 3)[None]  # [1,3,T,H,W] in [-1,1]


def test_vae_encodes_the_whole_clip_by_default_not_16_frame_tiles():
    video = torch.rand(21, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    whole = _build()
    assert whole.vae.use_framewise_encoding is False and whole.vae.use_tiling is True
    assert (whole.vae.tile_sample_min_height, whole.vae.tile_sample_stride_height) == (256, 192)
    x = _clip_tensor(whole, video)
    ours = whole.vae_encode(x)
    with torch.no_grad():  # the untiled call: encoder + quant_conv on all 21 frames, posterior mean
        mean = whole.vae.quant_conv(whole.vae.encoder(x)).chunk(2, dim=1)[0]
    assert ours.shape == (1, 16, 6, 4, 6) and torch.allclose(ours, mean, atol=1e-6)
    tiled = _build(vae_framewise=True)  # diffusers' default: 16-frame temporal tiles
    assert tiled.vae.use_framewise_encoding is True
    other = tiled.vae_encode(x)
    assert other.shape == ours.shape and not torch.allclose(other, ours, atol=1e-4)
    assert _build(vae_spatial_tiling=False).vae.use_tiling is False


def test_posterior_sample_is_seeded_and_differs_from_the_mode(video):
    a, b = _build(latents="sample"), _build(latents="sample")
    x = _clip_tensor(a, video)
    za, zb, z1 = a.vae_encode(x, 0), b.vae_encode(x, 0), a.vae_encode(x, 1)
    assert torch.equal(za, zb) and not torch.allclose(za, z1)
    with torch.no_grad():
        dist = a.vae.encode(x).latent_dist
    expect = dist.mean + dist.std * make_noise(tuple(dist.mean.shape), noise_seed(0, 0, 1000))
    assert torch.allclose(za, expect, atol=1e-6)
    assert not torch.allclose(za, _build().vae_encode(x), atol=1e-6)  # the mode
    fs = a.extract(video, layers=[1], timesteps=(750,))
    assert fs.info["preprocess"]["latents"] == "sample"
    assert torch.equal(fs.maps[(1, 750)], b.extract(video, layers=[1], timesteps=(750,)).maps[(1, 750)])
    with pytest.raises(ValueError, match="latents"):
        _build(latents="mean")


def test_bf16_schedule_rounds_t_and_feeds_a_bf16_timestep(video):
    bb = _build(schedule_dtype="bf16")
    seen = {}
    h = bb.transformer.register_forward_pre_hook(lambda m, a, kw: seen.update(t=kw["timesteps"]), with_kwargs=True)
    try:
        fs = bb.extract(video, layers=[1], timesteps=(750,))
    finally:
        h.remove()
    assert seen["t"].dtype == torch.bfloat16
    F_, lh, lw = fs.info["time_shift"]["latent_grid"]
    a = (1 + ((lw * lh) // 4 - 256) * 2 / 3840) * math.sqrt(F_)
    tau = torch.tensor([0.25], dtype=torch.bfloat16)
    expect = a * tau / (1 + (a - 1) * tau)  # every op rounded in bf16
    t = fs.info["timesteps"][0]["model_t"] / 1000
    assert t == float(expect) == float(seen["t"])
    t32 = a * 0.25 / (1 + (a - 1) * 0.25)
    assert t != t32 and abs(t - t32) < 2**-8
    assert fs.info["time_shift"]["schedule_dtype"] == "bf16"
    with pytest.raises(ValueError, match="schedule_dtype"):
        _build(schedule_dtype="fp16")


def test_resize_kernel_is_pil_bicubic_on_the_8bit_frames():
    from PIL import Image

    bb = _build(resize="pil-bicubic")
    frames = torch.randint(0, 256, (2, 40, 60, 3), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    video = frames.permute(0, 3, 1, 2).float() / 255
    x = bb.preprocess(video)
    ref = Image.fromarray(frames[1].numpy()).resize((48, 32), Image.BICUBIC)
    expect = torch.from_numpy(np.array(ref)).permute(2, 0, 1).float() / 255 * 2 - 1
    assert x.shape == (2, 3, 32, 48) and torch.allclose(x[1], expect, atol=1e-6)
    assert not torch.allclose(_build().preprocess(video)[1], expect, atol=1e-3)  # the default kernel differs
    with pytest.raises(ValueError, match="resize"):
        _build(resize="lanczos")


def test_129_frames_give_33_latents_and_the_shift_over_them():
    big = _build(height=480, width=848)  # bookkeeping only
    assert big.latent_grid(129) == (33, 60, 106)
    assert big.clips(129) == [list(range(129))]
    fi = big.frame_index(129)
    assert fi.shape == (129,) and int(fi.max()) == 32 and int(fi[80]) == 20 and int(fi[81]) == 21
    a = big.scheduler.set_grid(*big.latent_grid(129))
    assert a == pytest.approx((1 + (1590 - 256) * 2 / 3840) * math.sqrt(33))
    assert float(big.scheduler.timesteps[750]) / 1000 == pytest.approx(a * 0.25 / (1 + (a - 1) * 0.25), rel=1e-6)
