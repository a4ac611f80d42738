"""Diffusion backbones (WAN2.1, CogVideoX, Aether) at tiny random configs of the real diffusers classes."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("diffusers")

from vidprobe.backbones.base import registry  # noqa: E402
from vidprobe.backbones.diffusion import (  # noqa: E402
    CONDITION_STREAM,
    empty_prompt_embeds,
    index_of,
    load_text_embeds,
    make_noise,
    noise_seed,
    save_tensor_atomic,
    text_cache_path,
    vae4x_length,
)


def _build(name, **kw):
    return registry()[name][1](tiny=True, device="cpu", **kw)


@pytest.fixture(scope="module")
def wan():
    return _build("wan2.1-t2v-1.3b")


@pytest.fixture(scope="module")
def cog():
    return _build("cogvideox-5b")


@pytest.fixture(scope="module")
def video():
    g = torch.Generator().manual_seed(0)
    return torch.rand(9, 3, 32, 48, generator=g)


# ----------------------------------------------------------------- registry
@pytest.mark.parametrize(
    "name,model_id,hw,frames,layers",
    [
        ("wan2.1-t2v-1.3b", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", (480, 832), 81, 30),
        ("wan2.1-t2v-14b", "Wan-AI/Wan2.1-T2V-14B-Diffusers", (480, 832), 81, 40),
        ("wan2.1-i2v-14b-480p", "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", (480, 832), 81, 40),
        ("cogvideox-2b", "THUDM/CogVideoX-2b", (480, 720), 97, 30),
        ("cogvideox-5b", "THUDM/CogVideoX-5b", (480, 720), 97, 42),
        ("cogvideox-5b-i2v", "THUDM/CogVideoX-5b-I2V", (480, 720), 97, 42),
        ("aether", "AetherWorldModel/AetherV1", (480, 720), 81, 42),
    ],
)
def test_registered_with_reference_defaults(name, model_id, hw, frames, layers):
    spec = registry()[name][0]
    assert spec.model_id == model_id
    assert spec.input_hw == hw and spec.num_frames == frames and spec.num_layers == layers
    # the reference's layer20 is 0-based blocks[20] -> 1-based layer 21; scheduler index 749
    assert spec.default_layer == 21 and spec.default_timestep == 749


# ------------------------------------------------------------ timestep forms
def test_index_and_tau_forms():
    assert index_of(749) == 749
    assert index_of(0.25) == 750 and index_of(1.0) == 0 and index_of(0.0) == 999
    for bad in (1000, -1, 1.5, -0.1, None, True):
        with pytest.raises(ValueError):
            index_of(bad)


# ------------------------------------------------------------ frame layouts
def test_wan_frame_index_reference_layout(wan):
    fi = wan.frame_index(81)
    assert fi.shape == (81,) and int(fi.max()) == 20
    for t in range(81):
        assert int(fi[t]) == (0 if t == 0 else (t - 1) // 4 + 1)
    assert wan.clips(81) == [list(range(81))]
    assert wan.clips(10) == [list(range(10)) + [9, 9, 9]]  # padded to 4k+1 = 13
    assert [vae4x_length(n) for n in (1, 2, 5, 6, 49, 50)] == [1, 5, 5, 9, 49, 53]


@pytest.mark.parametrize("name,T,clip_len,per_clip", [("cogvideox-5b", 97, 49, 13), ("aether", 81, 41, 11)])
def test_interleaved_bookkeeping_every_frame(name, T, clip_len, per_clip):
    bb = _build(name)
    clips = bb.clips(T)
    assert len(clips) == 2 and all(len(c) == clip_len for c in clips)
    assert clips[0][0] == clips[1][0] == 0
    fi = bb.frame_index(T)
    for t in range(T):
        # independent statement of the rule: clip k = (t-1) % 2, position p = (t-1)//2 + 1
        k, p = (0, 0) if t == 0 else ((t - 1) % 2, (t - 1) // 2 + 1)
        assert clips[k][p] == t
        lat = 0 if p == 0 else (p - 1) // 4 + 1
        assert int(fi[t]) == k * per_clip + lat, t
    assert int(fi.max()) == 2 * per_clip - 1


def test_interleaved_features_follow_frame_index(cog):
    T = 9
    v = torch.rand(T, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    fs = cog.extract(v, [2], [749])
    m = fs.maps[(2, 749)]
    assert fs.info["clips"] == [[0, 1, 3, 5, 7], [0, 2, 4, 6, 8]]
    # 2 maps per clip; clip 1's latent 0 (its copy of frame 0) serves no frame and is dropped
    assert m.shape[0] == 3
    assert fs.frame_index.tolist() == [0, 1, 2, 1, 2, 1, 2, 1, 2]
    # the maps of clip 1 are those of a run on clip 1's frames alone
    enc = cog.encode(v)
    assert len(enc) == 2 and cog.vae_calls >= 2


# -------------------------------------------------------------- noise level
def test_wan_noise_matches_shifted_flow_sigma(wan, video):
    shift, N, i = 3.0, 1000, 749
    s = 1.0 - i * (1.0 - 1.0 / N) / N  # linspace(1, 1/N, N+1)[i]
    sigma = shift * s / (1 + (shift - 1) * s)
    assert math.isclose(sigma, 0.50233, abs_tol=1e-4)
    [cl] = wan.encode(video)
    choice = wan.timestep_choices([749])[0]
    assert math.isclose(choice.sigma, sigma, abs_tol=1e-5) and math.isclose(choice.alpha, 1 - sigma, abs_tol=1e-5)
    assert choice.tau == pytest.approx(0.251) and choice.model_t == pytest.approx(int(sigma * 1000), abs=1)
    xt = wan.noised(cl, choice, 0)
    noise = make_noise(cl.latents.shape, noise_seed(wan.seed, 0, 749))
    expected = (1 - sigma) * cl.latents.float() + sigma * noise
    torch.testing.assert_close(xt.float(), expected, atol=1e-4, rtol=1e-4)


def test_cogvideox_noise_matches_ddim_alphas(cog, video):
    [cl, _] = cog.encode(video)
    choice = cog.timestep_choices([749])[0]
    assert choice.model_t == 250  # trailing spacing: index i -> t = 999 - i
    abar = float(cog.scheduler.alphas_cumprod[250])
    assert choice.alpha == pytest.approx(math.sqrt(abar), abs=1e-5)
    assert choice.sigma == pytest.approx(math.sqrt(1 - abar), abs=1e-5)
    xt = cog.noised(cl, choice, 0)
    noise = make_noise(cl.latents.shape, noise_seed(cog.seed, 0, 749))
    torch.testing.assert_close(xt.float(), math.sqrt(abar) * cl.latents.float() + math.sqrt(1 - abar) * noise, atol=1e-4, rtol=1e-4)


def test_wan_latents_use_vae_statistics(wan, video):
    x = wan.preprocess(video).permute(1, 0, 2, 3)[None]
    raw = wan.vae.encode(x).latent_dist.mode()
    mean = torch.tensor(wan.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(wan.vae.config.latents_std).view(1, -1, 1, 1, 1)
    [cl] = wan.encode(video)
    torch.testing.assert_close(cl.latents, (raw - mean) / std)


# -------------------------------------------------- hooks, early stop, counts
def _full_pass_outputs(bb, blocks, call):
    outs, handles = {}, []
    for i, b in enumerate(blocks, start=1):
        handles.append(b.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, (o[0] if isinstance(o, tuple) else o).detach())))
    try:
        res = call()
    finally:
        for h in handles:
            h.remove()
    return outs, res


@pytest.mark.parametrize("which", ["wan", "cog"])
def test_hooked_features_equal_full_pass_and_stop_early(which, wan, cog, video):
    bb = {"wan": wan, "cog": cog}[which]
    blocks = bb.blocks
    assert len(blocks) == 3
    calls = [0] * len(blocks)
    hs = [b.register_forward_pre_hook(lambda m, a, i=i: calls.__setitem__(i, calls[i] + 1)) for i, b in enumerate(blocks)]
    try:
        fs = bb.extract(video, [1, 2], [749])
    finally:
        for h in hs:
            h.remove()
    n_clips = len(bb.clips(video.shape[0]))
    assert calls == [n_clips, n_clips, 0]  # block 3 never runs
    # full, un-stopped pass on the same noised input
    enc = bb.encode(video)
    choice = bb.timestep_choices([749])[0]
    per_layer = {1: [], 2: []}
    for k, cl in enumerate(enc):
        noisy = bb.noised(cl, choice, k)
        outs, res = _full_pass_outputs(bb, blocks, lambda: bb.denoiser_forward(noisy, choice, cl))
        assert res is not None and len(outs) == 3
        f, h, w = cl.grid
        for layer in (1, 2):
            per_layer[layer].append(outs[layer].reshape(f, h, w, -1))
    from vidprobe.backbones.common import drop_unused

    for layer in (1, 2):
        full, _ = drop_unused(torch.cat(per_layer[layer]), bb.frame_index(video.shape[0]))
        torch.testing.assert_close(fs.maps[(layer, 749)], full.float())


def test_vae_encoded_once_per_clip(video):
    for name, per_clip in (("wan2.1-t2v-1.3b", 1), ("cogvideox-2b", 1), ("cogvideox-5b-i2v", 2), ("wan2.1-i2v-14b-480p", 2),
                           ("aether", 2)):
        bb = _build(name)
        n = [0]
        orig = bb.vae.encode

        def counting(*a, **k):
            n[0] += 1
            return orig(*a, **k)

        bb.vae.encode = counting
        fs = bb.extract(video, [1, 3], [749, 0.5, 100])
        n_clips = len(bb.clips(video.shape[0]))
        # once per clip (image-to-video: + the first-frame condition), whatever the timesteps and layers
        assert n[0] == per_clip * n_clips == bb.vae_calls, name
        assert bb.forward_calls == 3 * n_clips
        assert set(fs.maps) == {(l, t) for l in (1, 3) for t in (749, 0.5, 100)}
        assert [d["index"] for d in fs.info["timesteps"]] == [749, 500, 100]
        assert [d["tau"] for d in fs.info["timesteps"]] == [pytest.approx(0.251), 0.5, 0.9]


def test_deterministic_for_fixed_seed(video):
    a = _build("wan2.1-t2v-1.3b", seed=3).extract(video, [2], [749]).maps[(2, 749)]
    b = _build("wan2.1-t2v-1.3b", seed=3).extract(video, [2], [749]).maps[(2, 749)]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    bb = _build("wan2.1-t2v-1.3b", seed=3)
    bb.seed = 4  # same weights, other noise
    c = bb.extract(video, [2], [749]).maps[(2, 749)]
    assert not torch.allclose(a, c)
    # timesteps differ in noise level -> different features
    d = _build("wan2.1-t2v-1.3b", seed=3).extract(video, [2], [100]).maps[(2, 100)]
    assert not torch.allclose(a, d)


def test_bad_inputs_raise(wan, video):
    with pytest.raises(ValueError, match="timesteps"):
        wan.extract(video, [1], [None])
    with pytest.raises(ValueError, match="layer"):
        wan.extract(video, [4], [749])
    with pytest.raises(ValueError, match="video"):
        wan.extract(video * 3, [1], [749])


# ------------------------------------------------------------- text cache
def test_text_embedding_cached_on_disk(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(12, dtype=torch.float32).view(1, 3, 4)

    a = empty_prompt_embeds("org/model", "abc", compute, cache_dir=tmp_path)
    b = empty_prompt_embeds("org/model", "abc", compute, cache_dir=tmp_path)
    assert len(calls) == 1 and torch.equal(a, b)
    assert text_cache_path("org/model", "abc", tmp_path).is_file()
    empty_prompt_embeds("org/model", "other-rev", compute, cache_dir=tmp_path)
    assert len(calls) == 2  # keyed by revision
    assert not list(tmp_path.glob(".*.tmp"))
    # a precomputed file wins over the cache
    p = tmp_path / "pre.safetensors"
    save_tensor_atomic(p, {"prompt_embeds": torch.ones(1, 2, 4)})
    assert torch.equal(empty_prompt_embeds("org/model", "abc", compute, path=p), torch.ones(1, 2, 4))
    bad = tmp_path / "bad.safetensors"
    save_tensor_atomic(bad, {"a": torch.ones(2), "b": torch.ones(2)})
    with pytest.raises(ValueError, match="prompt_embeds"):
        load_text_embeds(bad)


def test_precomputed_embedding_is_used(tmp_path, video):
    bb = _build("wan2.1-t2v-1.3b")
    emb = torch.zeros_like(bb.text_embeds)
    bb2 = _build("wan2.1-t2v-1.3b")
    bb2.text_embeds = emb
    a = bb.extract(video, [1], [749]).maps[(1, 749)]
    b = bb2.extract(video, [1], [749]).maps[(1, 749)]
    assert not torch.allclose(a, b)  # the text condition reaches the blocks


# ------------------------------------------------------------ sanity check
@pytest.mark.parametrize("which", ["wan", "cog"])
def test_decode_inverts_latent_scaling(which, wan, cog, video):
    bb = {"wan": wan, "cog": cog}[which]
    cl = bb.encode(video)[0]
    x = bb.preprocess(video)[bb.clips(video.shape[0])[0]].permute(1, 0, 2, 3)[None]
    raw = bb.vae.encode(x).latent_dist.mode()
    direct = ((bb.vae.decode(raw).sample[0].permute(1, 0, 2, 3) + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(bb.decode(cl.latents), direct, atol=1e-4, rtol=1e-4)


def test_check_backbone_command_writes_frame(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from vidprobe.cli import _load, app

    _load()
    out = tmp_path / "f.png"
    res = CliRunner().invoke(app, ["check-backbone", "wan2.1-t2v-1.3b", "--tiny", "--steps", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "PSNR" in res.output
    with Image.open(out) as im:
        assert im.size == (2 * 48, 32)  # input | decoded, tiny input size 32x48
    res = CliRunner().invoke(app, ["check-backbone", "dinov2-small", "--tiny", "--out", str(out)])
    assert res.exit_code != 0


# ------------------------------------------------------- release numerics settings
@pytest.mark.parametrize("src_hw,dst_hw", [((54, 96), (32, 48)), ((30, 40), (48, 80)), ((48, 64), (48, 64)), ((90, 160), (48, 112))])
def test_pil_lanczos_preprocess_equals_diffusers_video_processor(src_hw, dst_hw):
    """The release feeds PIL frames to diffusers' VideoProcessor; ``resize="pil-lanczos"`` gives the same tensor."""
    import numpy as np
    from diffusers.video_processor import VideoProcessor
    from PIL import Image

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(5, *src_hw, 3), dtype=np.uint8)
    ref = VideoProcessor(vae_scale_factor=8).preprocess_video([Image.fromarray(a) for a in arr], *dst_hw)  # [1,3,T,h,w]
    bb = _build("wan2.1-t2v-1.3b", height=dst_hw[0], width=dst_hw[1], resize="pil-lanczos")
    ours = bb.preprocess(torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255)  # [T,3,h,w]
    assert torch.equal(ours.permute(1, 0, 2, 3)[None], ref)
    if src_hw != dst_hw:  # the default kernel is not the release's
        default = _build("wan2.1-t2v-1.3b", height=dst_hw[0], width=dst_hw[1]).preprocess(
            torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255)
        assert not torch.equal(default.permute(1, 0, 2, 3)[None], ref)


def test_wan_flow_schedule_setting():
    import diffusers
    from packaging.version import Version

    legacy = _build("wan2.1-t2v-1.3b", flow_schedule="legacy").timestep_choices([749])[0]
    current = _build("wan2.1-t2v-1.3b", flow_schedule="current").timestep_choices([749])[0]
    assert (legacy.model_t, round(legacy.sigma, 5)) == (500, 0.501)
    assert (current.model_t, round(current.sigma, 5)) == (502, 0.50233)
    installed = _build("wan2.1-t2v-1.3b").timestep_choices([749])[0]
    assert installed == (current if Version(diffusers.__version__) >= Version("0.37") else legacy)
    with pytest.raises(ValueError, match="flow_schedule"):
        _build("wan2.1-t2v-1.3b", flow_schedule="newest")
    with pytest.raises(ValueError, match="resize"):
        _build("wan2.1-t2v-1.3b", resize="nearest")


def test_wan_normalisation_uses_the_reciprocal_std(wan, video):
    x = wan.preprocess(video).permute(1, 0, 2, 3)[None]
    raw = wan.vae.encode(x).latent_dist.mode()
    mean = torch.tensor(wan.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    inv = 1.0 / torch.tensor(wan.vae.config.latents_std).view(1, -1, 1, 1, 1)
    assert torch.equal(wan.encode(video)[0].latents, (raw - mean) * inv)


def test_cogvideox_condition_latent_sample_is_seeded(video):
    mode = _build("cogvideox-5b-i2v").encode(video)
    a = _build("cogvideox-5b-i2v", condition_latent="sample").encode(video)
    b = _build("cogvideox-5b-i2v", condition_latent="sample").encode(video)
    c = _build("cogvideox-5b-i2v", condition_latent="sample", seed=1)
    c_enc = c.encode(video)
    C = mode[0].latents.shape[2]
    for k in range(2):
        assert torch.equal(a[k].cond["condition"], b[k].cond["condition"])  # seeded
        assert not torch.allclose(a[k].cond["condition"][:, :1, :C], mode[k].cond["condition"][:, :1, :C])
        torch.testing.assert_close(a[k].latents, mode[k].latents)  # x_0 stays the posterior mean
    assert not torch.allclose(a[1].cond["condition"], a[0].cond["condition"])  # each clip its own draw
    # seed 1 builds other random weights, so compare draws through the same VAE
    x = c.preprocess(video)[c.clips(video.shape[0])[0][:1]].permute(1, 0, 2, 3)[None]
    dist = c.vae.encode(x).latent_dist
    torch.testing.assert_close(c_enc[0].cond["condition"][:, :1, :C], c.scale(dist.sample(
        generator=torch.Generator().manual_seed(noise_seed(1, 0, CONDITION_STREAM)))))
    with pytest.raises(ValueError, match="condition_latent"):
        _build("cogvideox-5b-i2v", condition_latent="median")


def test_cogvideox_autocast_and_vae_tiling(video):
    bb = _build("cogvideox-5b-i2v", dtype="bf16", autocast=True, vae_tiling=True)
    assert bb.vae.use_tiling and bb.vae.use_slicing
    assert not _build("cogvideox-5b-i2v").vae.use_tiling
    [cl, _] = bb.encode(video)
    choice = bb.timestep_choices([749])[0]
    xt = bb.noised(cl, choice, 0)
    noise = make_noise(cl.latents.shape, noise_seed(bb.seed, 0, 749))
    t = torch.tensor([250])
    assert xt.dtype == torch.bfloat16
    assert torch.equal(xt, bb.scheduler.add_noise(cl.latents.to(torch.bfloat16), noise.to(torch.bfloat16), t))
    plain = _build("cogvideox-5b-i2v", dtype="bf16")
    [pcl, _] = plain.encode(video)
    pxt = plain.noised(pcl, choice, 0)  # float32 arithmetic, then cast
    assert torch.equal(pxt, plain.scheduler.add_noise(pcl.latents.float(), noise, t).to(torch.bfloat16))
    fs = bb.extract(video, [1], [749])
    assert fs.maps[(1, 749)].isfinite().all() and fs.info["autocast"] is True


def test_text_cache_variant_keys_the_file(tmp_path):
    a = text_cache_path("org/model", "abc", tmp_path)
    assert a == text_cache_path("org/model", "abc", tmp_path, None)
    b = text_cache_path("org/model", "abc", tmp_path, "t5-float32")
    assert a != b and b != text_cache_path("org/model", "abc", tmp_path, "t5-float16")


def test_cogvideox_learned_position_embedding_only_at_49_frames():
    """CogVideoX-5B-I2V's learned positional embedding serves only its trained clip length (49 frames = 13 latents):
    at CO3D's 2 x 41 (11 latents) diffusers' patch embedding falls back to the sinusoidal one."""
    from diffusers.models.embeddings import CogVideoXPatchEmbed

    torch.manual_seed(0)
    pe = CogVideoXPatchEmbed(patch_size=2, in_channels=4, embed_dim=16, text_embed_dim=8, sample_width=6, sample_height=4,
                             sample_frames=9, max_text_seq_length=2, use_learned_positional_embeddings=True)
    text = torch.randn(1, 2, 8)
    lat = {f: torch.randn(1, f, 4, 4, 6) for f in (3, 2)}  # 3 latents = the trained 9 frames, 2 = 5 frames
    before = {f: pe(text, x) for f, x in lat.items()}
    with torch.no_grad():
        pe.pos_embedding.add_(1.0)  # the learned table
    assert not torch.allclose(pe(text, lat[3]), before[3])  # trained length: uses it
    assert torch.equal(pe(text, lat[2]), before[2])  # other lengths: sinusoidal, the learned table unused
