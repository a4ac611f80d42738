"""Aether's channel layout and reconstruction pass, on a tiny random CogVideoX transformer with 96 input channels."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

import vidprobe.backbones.diffusion as diffusion  # noqa: E402
from vidprobe.backbones.base import registry  # noqa: E402
from vidprobe.backbones.diffusion import RECON_INPUT_STREAM, RECON_STREAM, make_generator, noise_seed  # noqa: E402


def build(**kw):
    return registry()["aether"][1](tiny=True, device="cpu", **kw)


@pytest.fixture(scope="module")
def video():
    return torch.rand(9, 3, 32, 48, generator=torch.Generator().manual_seed(3))


def transformer_inputs(bb, video, timestep=749):
    """Every transformer call's ``hidden_states`` during ``extract`` (reconstruction steps, then the feature pass)."""
    seen = []
    h = bb.transformer.register_forward_pre_hook(lambda m, a, k: seen.append(k["hidden_states"].clone()), with_kwargs=True)
    try:
        bb.extract(video, [1], [timestep])
    finally:
        h.remove()
    return seen


def scaled(bb, z):
    """Scaled latents the way the CogVideoX pipelines scale them, ``[B,C,F,h,w]`` -> ``[B,F,C,h,w]``."""
    return z.permute(0, 2, 1, 3, 4).float() * float(bb.vae.config.scaling_factor)


def test_tiny_model_has_the_real_channel_counts():
    bb = build()
    assert bb.transformer.config.in_channels == 96 and bb.transformer.config.out_channels == 56
    assert bb.layout == {"rgb": 16, "disparity": 16, "raymap": 24, "image": 16, "camera": 24}


@pytest.mark.parametrize("geometry", ["zeros", "reconstruct"])
def test_clean_first_frame_latent_sits_at_input_channels_56_to_71(video, geometry):
    bb = build(geometry=geometry)
    calls = transformer_inputs(bb, video)
    n_recon = 4 if geometry == "reconstruct" else 0
    assert len(calls) == 2 * (n_recon + 1) and bb.recon_calls == 2 * n_recon  # every clip is encoded first
    clips = bb.clips(video.shape[0])
    frames = bb.preprocess(video)
    for k in range(2):
        x = calls[2 * n_recon + k]  # the feature pass of clip k
        assert x.shape[2] == 96
        first = frames[clips[k][:1]].permute(1, 0, 2, 3)[None]  # clip k's first frame alone, [1,3,1,H,W]
        img = scaled(bb, bb.vae.encode(first).latent_dist.mode())
        torch.testing.assert_close(x[:, :1, 56:72], img)  # image condition on latent frame 0
        assert torch.count_nonzero(x[:, 1:, 56:72]) == 0  # zero-padded over the other latent frames
        assert torch.count_nonzero(x[:, :, 72:96]) == 0  # camera condition: zeros
        assert torch.count_nonzero(x[:, :, :56]) == x[:, :, :56].numel()  # all 56 latent channels noised


def _reference_reconstruction(bb, video, k):
    """Aether's reconstruction task written out independently: DPM-Solver scheduler, 4 steps, guidance 1."""
    from diffusers import CogVideoXDPMScheduler
    from diffusers.utils.torch_utils import randn_tensor

    x = bb.preprocess(video)[bb.clips(video.shape[0])[k]].permute(1, 0, 2, 3)[None]
    dist = bb.vae.encode(x).latent_dist
    cond_rgb = scaled(bb, dist.sample(generator=make_generator(noise_seed(bb.seed, k, RECON_INPUT_STREAM))))
    B, F, C, h, w = cond_rgb.shape
    cond = torch.cat([cond_rgb, torch.zeros(B, F, 24, h, w)], dim=2)
    s = CogVideoXDPMScheduler.from_config(bb.scheduler.config)
    s.set_timesteps(4)
    assert s.timesteps.tolist() == [999, 749, 499, 249]
    g = make_generator(noise_seed(bb.seed, k, RECON_STREAM))
    lat = randn_tensor((B, F, 56, h, w), generator=g, dtype=torch.float32)
    rope = bb.rope(h, w, F)
    old = None
    for i, t in enumerate(s.timesteps):
        pred = bb.transformer(hidden_states=torch.cat([lat, cond], dim=2), encoder_hidden_states=bb.text_embeds,
                              timestep=t.reshape(1), image_rotary_emb=rope, return_dict=False)[0]
        lat, old = s.step(pred.float(), old, t, s.timesteps[i - 1] if i > 0 else None, lat, eta=0.0, generator=g,
                          return_dict=False)
    return lat[:, :, 16:]


def test_reconstruction_latents_not_zeros_enter_the_feature_pass(video):
    bb = build(geometry="reconstruct", condition_latent="sample")
    encoded = bb.encode(video)
    choice = bb.timestep_choices([749])[0]
    for k, cl in enumerate(encoded):
        geo = cl.cond["geometry"]
        ref = _reference_reconstruction(bb, video, k)
        torch.testing.assert_close(geo, ref, rtol=1e-5, atol=1e-5)
        assert geo.abs().min() > 0  # reconstructed, not zeros
        torch.testing.assert_close(cl.latents[:, :, 16:56], geo)  # x_0 = [rgb | disparity | raymap]
        # the feature pass gets alpha * x_0 + sigma * noise on all 56 channels, geometry included
        noise = torch.randn(cl.latents.shape, generator=torch.Generator().manual_seed(noise_seed(bb.seed, k, 749)))
        xt = bb.noised(cl, choice, k)
        torch.testing.assert_close(xt[:, :, 16:56], choice.alpha * geo + choice.sigma * noise[:, :, 16:56],
                                   rtol=1e-5, atol=1e-5)
    zeros = build(geometry="zeros").encode(video)
    assert all(torch.count_nonzero(cl.latents[:, :, 16:]) == 0 for cl in zeros)


def test_reconstruction_runs_the_whole_transformer_and_the_feature_pass_stops_early(video):
    bb = build(geometry="reconstruct")
    calls = [0] * len(bb.blocks)
    hs = [b.register_forward_pre_hook(lambda m, a, i=i: calls.__setitem__(i, calls[i] + 1)) for i, b in enumerate(bb.blocks)]
    try:
        bb.extract(video, [1], [749])
    finally:
        for h in hs:
            h.remove()
    # per clip: 4 full reconstruction passes + 1 feature pass stopped after block 1
    assert calls == [2 * 5, 2 * 4, 2 * 4]
    assert bb.vae_calls == 2 * 2  # per clip: the clip (mean and sample from one encode) + its first frame


def test_seeded_and_the_seed_matters(video):
    a = build(geometry="reconstruct", condition_latent="sample", seed=1).encode(video)[0].cond["geometry"]
    b = build(geometry="reconstruct", condition_latent="sample", seed=1).encode(video)[0].cond["geometry"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    bb = build(geometry="reconstruct", condition_latent="sample", seed=1)
    bb.seed = 2  # same weights, other draws
    assert not torch.allclose(a, bb.encode(video)[0].cond["geometry"])


def test_condition_sample_is_seeded_and_differs_from_the_mode(video):
    mode = build().encode(video)[0].cond["condition"][:, :1, :16]
    s1 = build(condition_latent="sample").encode(video)[0].cond["condition"][:, :1, :16]
    s2 = build(condition_latent="sample").encode(video)[0].cond["condition"][:, :1, :16]
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    assert not torch.allclose(mode, s1)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="geometry"):
        build(geometry="depth")
    with pytest.raises(ValueError, match="recon_steps"):
        build(recon_steps=0)
    bb = build()
    from vidprobe.backbones.aether import AetherBackbone

    bad = registry()["cogvideox-5b-i2v"][1](tiny=True, device="cpu")  # 8 in / 4 out: no rgb|disparity|raymap split
    with pytest.raises(ValueError, match="do not split"):
        AetherBackbone(bb.spec, bad.transformer, bad.vae, bad.scheduler, bad.text_embeds, (32, 48), torch.device("cpu"),
                       torch.float32)


def test_settings_are_build_kwargs_of_the_registered_factory():
    import inspect

    spec, factory = registry()["aether"]
    params = inspect.signature(factory).parameters
    for name in ("geometry", "recon_steps", "condition_latent", "autocast", "vae_tiling", "resize", "dtype"):
        assert name in params, name
    assert spec.model_id == "AetherWorldModel/AetherV1" and spec.num_frames == 81
    bb = build(vae_tiling=True, autocast=True, dtype="bf16")
    assert bb.vae.use_tiling and bb.vae.use_slicing and bb.autocast and bb.dtype == torch.bfloat16


def test_autocast_bf16_extracts_and_noises_in_bf16(video, monkeypatch):
    bb = build(dtype="bf16", autocast=True, geometry="reconstruct")
    cl = bb.encode(video)[0]
    choice = bb.timestep_choices([749])[0]
    noise = torch.randn(cl.latents.shape, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(diffusion, "make_noise", lambda shape, seed: noise)
    xt = bb.noised(cl, choice, 0)
    t = torch.tensor([int(choice.model_t)])
    ref = bb.scheduler.add_noise(cl.latents.to(torch.bfloat16), noise.to(torch.bfloat16), t)  # the release's arithmetic
    assert xt.dtype == torch.bfloat16 and torch.equal(xt, ref)
    fs = bb.extract(video, [2], [749])
    assert fs.maps[(2, 749)].isfinite().all() and fs.info["autocast"]
