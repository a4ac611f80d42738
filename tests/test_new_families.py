"""The families added after the paper (WAN2.2, HunyuanVideo, LTX-Video, DINOv3) at tiny random configs of the real
diffusers / transformers classes: frame layouts against the VAEs' compression, the A14B expert switch against
``WanPipeline``'s own loop, what each pipeline feeds its denoiser (schedule, timestep, guidance, RoPE scale), LTX's
token unpacking, HunyuanVideo's layer numbering and trimmed text, DINOv3's prefix tokens, and the configs in
``configs/new``. (The registry-wide contract, ``tests/test_backbone_contract.py``, covers them without new code.)
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from vidprobe.backbones import fullsize as fs  # noqa: E402
from vidprobe.backbones.base import registry, unknown_options  # noqa: E402
from vidprobe.backbones.noise_schedule import TimestepChoice  # noqa: E402
from vidprobe.pipeline.sweep import load_sweep, plan_cells  # noqa: E402

NEW = Path(__file__).resolve().parents[1] / "configs" / "new"


def _build(name, **kw):
    return registry()[name][1](tiny=True, device="cpu", **kw)


def _video(T: int, hw=(64, 96), seed: int = 0) -> torch.Tensor:
    return torch.rand(T, 3, *hw, generator=torch.Generator().manual_seed(seed))


class Calls:
    """Forward pre-hook on ``module`` recording every call's keyword arguments."""

    def __init__(self, module):
        self.kwargs: list[dict] = []
        self.handle = module.register_forward_pre_hook(lambda m, a, kw: self.kwargs.append(dict(kw)), with_kwargs=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _choice(t: float) -> TimestepChoice:
    return TimestepChoice(requested=-1, index=-1, tau=float("nan"), model_t=float(t), alpha=float("nan"),
                          sigma=float("nan"))


# ------------------------------------------------------------------ registry
@pytest.mark.parametrize("name,model_id,layers,default,timestep,hw,layout", [
    ("wan2.2-ti2v-5b", "Wan-AI/Wan2.2-TI2V-5B-Diffusers", 30, 21, 749, (704, 1280), "vae4x"),
    ("wan2.2-t2v-a14b", "Wan-AI/Wan2.2-T2V-A14B-Diffusers", 40, 21, 749, (480, 832), "vae4x"),
    ("hunyuanvideo", "hunyuanvideo-community/HunyuanVideo", 60, 41, 750, (544, 960), "vae4x"),
    ("ltx-video", "Lightricks/LTX-Video", 28, 20, 750, (544, 960), "vae8x"),
    ("dinov3-vitl16", "facebook/dinov3-vitl16-pretrain-lvd1689m", 24, -1, None, (480, 832), "per-frame"),
    ("dinov3-vit7b16", "facebook/dinov3-vit7b16-pretrain-lvd1689m", 40, -1, None, (480, 832), "per-frame"),
])
def test_registered_with_documented_defaults(name, model_id, layers, default, timestep, hw, layout):
    spec = registry()[name][0]
    assert (spec.model_id, spec.num_layers, spec.default_layer, spec.default_timestep) == (model_id, layers, default,
                                                                                           timestep)
    assert (spec.input_hw, spec.frame_layout) == (hw, layout)


def test_fullsize_depths_agree_with_the_registry():
    reg = registry()
    for name in ("wan2.2-ti2v-5b", "wan2.2-t2v-a14b", "ltx-video"):
        assert fs.fullsize(name, "transformer")["num_layers"] == reg[name][0].num_layers
    hv = fs.fullsize("hunyuanvideo", "transformer")
    assert hv["num_layers"] + hv["num_single_layers"] == reg["hunyuanvideo"][0].num_layers
    assert reg["hunyuanvideo"][0].default_layer == hv["num_layers"] + 20 + 1  # single-stream block 20, 0-based
    for size, cfg in fs.DINOV3.items():
        assert cfg["num_hidden_layers"] == reg[f"dinov3-{size}"][0].num_layers and cfg["num_register_tokens"] == 4


# ------------------------------------------------------------------ layouts vs the VAEs
@pytest.mark.parametrize("name,T,space,time", [
    ("wan2.2-ti2v-5b", 7, 16, 4),  # Wan2.2 VAE: 2x2 patchify + 3 downsamples
    ("wan2.2-t2v-a14b", 6, 8, 4),  # the WAN2.1 VAE
    ("hunyuanvideo", 6, 8, 4),
    ("ltx-video", 8, 32, 8),  # 4x4 patchify + 3 space-time downsamples
])
def test_frame_index_follows_the_vae_compression(name, T, space, time):
    bb = _build(name)
    video = _video(T)
    (clip,) = bb.clips(T)
    assert len(clip) == 1 + time * -(-(T - 1) // time) and clip[:T] == list(range(T)) and set(clip[T:]) <= {T - 1}
    cl = bb.encode(video)[0]  # the real VAE on the padded clip
    F, h, w = cl.latents.shape[2:] if cl.latents.dim() == 5 else (None, None, None)
    H, W = bb.input_hw
    assert (h, w) == (H // space, W // space)
    assert F == (len(clip) - 1) // time + 1
    fi = bb.frame_index(T)
    expected = torch.tensor([0] + [(t - 1) // time + 1 for t in range(1, T)])
    assert torch.equal(fi, expected) and int(fi.max()) == F - 1
    out = bb.extract(video, [1])
    assert torch.equal(out.frame_index, expected)
    assert out.maps[(1, registry()[name][0].default_timestep)].shape[0] == F


# ------------------------------------------------------------------ WAN2.2
def _wan_pipeline(bb, **kw):
    return diffusers.WanPipeline(tokenizer=None, text_encoder=None, vae=bb.vae, scheduler=copy.deepcopy(bb.scheduler),
                                 transformer=bb.transformer, **kw)


def test_a14b_expert_choice_is_the_pipelines():
    """WanPipeline's own loop (8 steps over both experts) calls, per timestep, the expert our rule names."""
    bb = _build("wan2.2-t2v-a14b")
    pipe = _wan_pipeline(bb, transformer_2=bb.transformer_2, boundary_ratio=fs.WAN22_A14B_BOUNDARY_RATIO)
    seen = []
    for expert, module in (("transformer", bb.transformer), ("transformer_2", bb.transformer_2)):
        module.register_forward_pre_hook(lambda m, a, kw, e=expert: seen.append((float(kw["timestep"][0]), e)),
                                         with_kwargs=True)
    pipe(prompt_embeds=bb.text_embeds, height=64, width=96, num_frames=5, num_inference_steps=8, guidance_scale=1.0,
         output_type="latent")
    assert {e for _, e in seen} == {"transformer", "transformer_2"}  # the 8 steps straddle the boundary
    assert [(t, bb.expert_name(_choice(t))) for t, _ in seen] == seen


def test_a14b_expert_switch_at_the_boundary_index():
    bb = _build("wan2.2-t2v-a14b", flow_schedule="current")
    boundary = fs.WAN22_A14B_BOUNDARY_RATIO * bb.scheduler.config.num_train_timesteps
    assert bb.boundary_timestep == boundary == 875.0
    ts = bb.scheduler.timesteps
    hi = max(i for i in range(len(ts)) if ts[i] >= boundary)
    lo = hi + 1
    assert int(ts[hi]) >= 875 > int(ts[lo])
    assert (hi, int(ts[hi]), int(ts[lo])) == (300, 875, 874)  # the module docstring's values (diffusers >= 0.37)
    video = _video(5)
    with Calls(bb.transformer.blocks[0]) as high, Calls(bb.transformer_2.blocks[0]) as low:
        out = bb.extract(video, [1, 2], [hi, lo])
    assert len(high.kwargs) == 1 and len(low.kwargs) == 1  # one pass per timestep, each through its own expert
    assert [(e["index"], e["expert"]) for e in out.info["experts"]] == [(hi, "transformer"), (lo, "transformer_2")]
    assert out.info["boundary_timestep"] == 875.0
    bb.transformer_2 = bb.transformer  # one expert for all: the high-noise side is unchanged, the low-noise side not
    same = bb.extract(video, [1, 2], [hi, lo])
    for layer in (1, 2):
        assert torch.equal(out.maps[(layer, hi)], same.maps[(layer, hi)])
        assert not torch.allclose(out.maps[(layer, lo)], same.maps[(layer, lo)], atol=1e-4)


def test_a14b_boundary_ratio_comes_from_model_index(tmp_path):
    from vidprobe.backbones.wan22 import pipeline_boundary_ratio

    (tmp_path / "model_index.json").write_text('{"_class_name": "WanPipeline", "boundary_ratio": 0.9}')
    assert pipeline_boundary_ratio(str(tmp_path), None, 0.875) == 0.9
    (tmp_path / "model_index.json").write_text('{"_class_name": "WanPipeline"}')
    assert pipeline_boundary_ratio(str(tmp_path), None, 0.875) == 0.875


def test_ti2v_timestep_per_token_as_the_pipeline():
    """WanPipeline(expand_timesteps=True) feeds a [1, F*h*w] timestep; ours is the same for the same t."""
    bb = _build("wan2.2-ti2v-5b")
    pipe = _wan_pipeline(bb, expand_timesteps=True)
    with Calls(bb.transformer) as calls:
        pipe(prompt_embeds=bb.text_embeds, height=64, width=96, num_frames=5, num_inference_steps=1,
             guidance_scale=1.0, output_type="latent")
    theirs = calls.kwargs[0]["timestep"]
    cl = bb.encode(_video(5))[0]
    ours = bb.timestep_input(_choice(float(theirs[0, 0])), cl)
    assert theirs.shape == ours.shape == (1, 2 * 2 * 3) and torch.equal(ours, theirs.to(ours))


def test_ti2v_first_frame_condition():
    bb = _build("wan2.2-ti2v-5b", first_frame=True)
    video = _video(5)
    with Calls(bb.transformer) as calls:
        out = bb.extract(video, [1])
    kw = calls.kwargs[0]
    F, h, w = 2, 2, 3
    t = kw["timestep"].reshape(F, h, w)
    assert torch.all(t[0] == 0) and torch.all(t[1] == out.info["timesteps"][0]["model_t"])
    frame0 = bb.normalize_latents(bb.vae_encode(bb.preprocess(video)[:1].permute(1, 0, 2, 3)[None]))
    torch.testing.assert_close(kw["hidden_states"][:, :, :1], frame0)  # latent frame 0: the clean first frame
    assert out.info["first_frame"] is True
    with pytest.raises(ValueError, match="first_frame"):
        _build("wan2.2-t2v-a14b", first_frame=True)


# ------------------------------------------------------------------ HunyuanVideo
def test_hunyuan_layers_count_dual_then_single_blocks():
    bb = _build("hunyuanvideo")  # 2 dual-stream + 2 single-stream blocks
    tr = bb.transformer
    assert bb.num_layers == 4
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, a, o, k=k: seen.__setitem__(k, o[0].detach().clone()))
             for k, m in (("dual1", tr.transformer_blocks[1]), ("single0", tr.single_transformer_blocks[0]),
                          ("single1", tr.single_transformer_blocks[1]))]
    try:
        out = bb.extract(_video(5, (32, 48)), [2, 3])
    finally:
        for h in hooks:
            h.remove()
    F, h, w = 2, 2, 3
    assert torch.equal(out.maps[(2, 750)], seen["dual1"].reshape(F, h, w, -1))  # layer 2 = dual-stream block 1
    assert torch.equal(out.maps[(3, 750)], seen["single0"].reshape(F, h, w, -1))  # layer 3 = single-stream block 0
    assert "single1" not in seen  # stopped after the deepest requested block
    assert out.info["guidance"] == 6000.0


def test_hunyuan_feeds_what_the_pipeline_feeds():
    """HunyuanVideoPipeline's sigmas, timestep and guidance; ours for the same step are the same."""
    bb = _build("hunyuanvideo")
    pipe = diffusers.HunyuanVideoPipeline(text_encoder=None, tokenizer=None, transformer=bb.transformer, vae=bb.vae,
                                          scheduler=copy.deepcopy(bb.scheduler), text_encoder_2=None, tokenizer_2=None)
    L = bb.text_embeds.shape[1]
    with Calls(bb.transformer) as calls:
        pipe(prompt_embeds=bb.text_embeds, pooled_prompt_embeds=bb.pooled_embeds,
             prompt_attention_mask=torch.ones(1, L, dtype=torch.long), height=32, width=48, num_frames=5,
             num_inference_steps=4, output_type="latent")
    ours_sched = bb.set_schedule(copy.deepcopy(bb.scheduler), 4)
    torch.testing.assert_close(ours_sched.timesteps, pipe.scheduler.timesteps)
    theirs = calls.kwargs[0]
    cl = bb.encode(_video(5, (32, 48)))[0]
    with Calls(bb.transformer) as mine:
        bb.denoiser_forward(cl.latents, _choice(float(theirs["timestep"][0])), cl)
    ours = mine.kwargs[0]
    for key in ("timestep", "guidance", "encoder_attention_mask", "pooled_projections"):
        assert torch.equal(ours[key].float(), theirs[key].float()), key


def test_hunyuan_trimmed_prompt_equals_the_masked_one():
    """The real transformer gives the same image tokens for the padded embedding + mask and the trimmed one."""
    bb = _build("hunyuanvideo")
    tr = bb.transformer
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 16, 2, 4, 6, generator=g)
    valid, pad = torch.randn(1, 3, 32, generator=g), torch.randn(1, 5, 32, generator=g)
    kw = dict(timestep=torch.tensor([500.0]), pooled_projections=bb.pooled_embeds, guidance=torch.tensor([6000.0]),
              return_dict=False)
    with torch.no_grad():
        masked = tr(x, encoder_hidden_states=torch.cat([valid, pad], 1),
                    encoder_attention_mask=torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0]]), **kw)[0]
        trimmed = tr(x, encoder_hidden_states=valid, encoder_attention_mask=torch.ones(1, 3), **kw)[0]
    assert torch.isfinite(masked).all()
    torch.testing.assert_close(trimmed, masked, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ LTX-Video
def test_ltx_unpacks_tokens_in_latent_order():
    """Blocks made identities (proj_in = I, every residual branch zero): layer 1 returns the latents fed, and a
    latent whose values encode (channel, frame, row, column) comes back at the same [frame, row, column, channel]."""
    bb = _build("ltx-video", tiny_layers=1)
    tr = bb.transformer
    C = tr.config.in_channels
    with torch.no_grad():
        tr.proj_in.weight.copy_(torch.eye(C))
        tr.proj_in.bias.zero_()
        for blk in tr.transformer_blocks:
            for lin in (blk.attn1.to_out[0], blk.attn2.to_out[0], blk.ff.net[2]):
                lin.weight.zero_()
                lin.bias.zero_()
    F, h, w = 2, 2, 3
    c, f, y, x = torch.meshgrid(torch.arange(C), torch.arange(F), torch.arange(h), torch.arange(w), indexing="ij")
    coords = (1000 * c + 100 * f + 10 * y + x).float()[None]  # [1, C, F, h, w]
    bb.noised = lambda cl, choice, k: coords  # the constructed input instead of x_t
    out = bb.extract(_video(9), [1])
    assert torch.equal(out.maps[(1, 750)], coords[0].permute(1, 2, 3, 0))
    assert not torch.equal(out.maps[(1, 750)], coords[0].permute(1, 3, 2, 0).reshape(F, h, w, C))  # not column-major


def test_ltx_feeds_what_the_pipeline_feeds():
    """LTXPipeline's resolution-dependent schedule and its transformer arguments; ours are the same."""
    bb = _build("ltx-video")
    pipe = diffusers.LTXPipeline(scheduler=copy.deepcopy(bb.scheduler), vae=bb.vae, text_encoder=None, tokenizer=None,
                                 transformer=bb.transformer)
    L = bb.text_embeds.shape[1]
    with Calls(bb.transformer) as calls:
        pipe(prompt_embeds=bb.text_embeds, prompt_attention_mask=torch.ones(1, L, dtype=torch.long), height=64,
             width=96, num_frames=9, num_inference_steps=4, guidance_scale=1.0, output_type="latent")
    bb.set_frames(9)
    torch.testing.assert_close(bb.set_schedule(copy.deepcopy(bb.scheduler), 4).timesteps, pipe.scheduler.timesteps)
    theirs = calls.kwargs[0]
    cl = bb.encode(_video(9))[0]
    with Calls(bb.transformer) as mine:
        bb.denoiser_forward(cl.latents, _choice(float(theirs["timestep"][0])), cl)
    ours = mine.kwargs[0]
    for key in ("num_frames", "height", "width", "rope_interpolation_scale"):
        assert ours[key] == theirs[key], key
    assert torch.equal(ours["timestep"], theirs["timestep"].float())
    nine = bb.scheduler.timesteps.clone()
    bb.set_frames(17)  # a longer video: another latent grid, another shift
    assert not torch.allclose(bb.scheduler.timesteps, nine)


def test_ltx_first_frame_condition():
    bb = _build("ltx-video", first_frame=True)
    with Calls(bb.transformer) as calls:
        out = bb.extract(_video(9), [1])
    t = calls.kwargs[0]["timestep"].reshape(2, 2, 3)  # per token: t * (1 - mask)
    assert torch.all(t[0] == 0) and torch.all(t[1] == out.info["timesteps"][0]["model_t"])


# ------------------------------------------------------------------ DINOv3
def test_dinov3_drops_cls_and_register_tokens():
    bb = _build("dinov3-vits16")
    assert bb.num_prefix == 5 and bb.grid == (2, 3)
    video = _video(3, (32, 48))
    out = bb.extract(video, [1, -1])
    with torch.no_grad():
        ref = bb.model(pixel_values=bb.preprocess(video), output_hidden_states=True)
    torch.testing.assert_close(out.maps[(1, None)], ref.hidden_states[1][:, 5:].reshape(3, 2, 3, -1))
    torch.testing.assert_close(out.maps[(-1, None)], ref.last_hidden_state[:, 5:].reshape(3, 2, 3, -1))
    assert not torch.allclose(out.maps[(-1, None)], ref.last_hidden_state[:, 4:-1].reshape(3, 2, 3, -1))
    assert torch.equal(out.frame_index, torch.arange(3))


# ------------------------------------------------------------------ configs/new
@pytest.mark.parametrize("path", sorted(NEW.glob("*.yaml")), ids=lambda p: p.name)
def test_new_configs_read_the_documented_defaults(path):
    cfg = load_sweep(path)
    (cell,) = plan_cells(cfg)
    spec = registry()[cell.entry.name][0]
    assert (cell.layer, cell.timestep) == (spec.default_layer, spec.default_timestep)
    assert (cell.entry.kwargs["height"], cell.entry.kwargs["width"]) == spec.input_hw
    assert unknown_options(cell.entry.name, cell.entry.kwargs) == []
    assert cell.entry.num_frames == (spec.num_frames or 77)


def test_every_new_model_has_a_config():
    names = {load_sweep(p)["grid"]["backbones"][0]["name"] for p in NEW.glob("*.yaml")}
    assert names == {"wan2.2-ti2v-5b", "wan2.2-t2v-a14b", "hunyuanvideo", "ltx-video", "dinov3-vitl16"}
