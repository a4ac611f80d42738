"""Full-size architectures of the published table's models, as constructor kwargs (no download needed).

The diffusers / transformers classes take their architecture from the hub
repo's ``config.json``. The values below are those configs, written out as
facts so that a model can be built at full size on the ``meta`` device (no
weights, no memory) -- by ``tests/test_fullsize_meta.py``, which runs each
adapter's hooked transformer pass on meta inputs of the reference size, and by
anything that needs shapes or parameter counts without the weights::

    with torch.device("meta"):
        transformer = diffusers.WanTransformer3DModel(**WAN21_T2V_1_3B)

Sources (each dict names its own in its comment):

* ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` / ``-14B-Diffusers``: the diffusers
  conversion script that wrote those repos, ``scripts/convert_wan_to_diffusers.py``
  (huggingface/diffusers@0122271c), ``get_transformer_config("Wan-T2V-1.3B")``
  / ``("Wan-T2V-14B")`` ``diffusers_config``; the VAE is ``AutoencoderKLWan()``
  with the class defaults (same script, ``convert_vae``). ``rope_max_seq_len``
  is not in that config: the class default (1024) applies, as for the hub model.
* ``THUDM/CogVideoX-5b-I2V``: diffusers ``scripts/convert_cogvideox_to_diffusers.py``
  (huggingface/diffusers@01337da7), run with ``--num_layers 42
  --num_attention_heads 48 --use_rotary_positional_embeddings --i2v
  --scaling_factor 0.7`` (its comments give these values for the 5B models):
  ``CogVideoXTransformer3DModel(in_channels=32 if i2v else 16, num_layers,
  num_attention_heads, use_rotary_positional_embeddings,
  use_learned_positional_embeddings=i2v)``, every other field the class
  default; VAE ``AutoencoderKLCogVideoX(scaling_factor=0.7)``. The other
  fields are written out below with the class defaults of diffusers 0.42.
* ``AetherWorldModel/AetherV1`` (transformer only; VAE / scheduler / T5 are
  CogVideoX-5b-I2V's): CogVideoX-5B-I2V's architecture with 56 output
  channels (rgb 16 | disparity 16 | raymap 24) and 96 input channels (56 +
  image condition 16 + camera condition 24), the shapes of Aether's own
  pipeline (``AetherV1PipelineCogVideoX.prepare_latents`` in the study's
  release, VidFM3D@84ea537 ``features/aether/aether/pipelines/``). Its hub
  ``config.json`` is not available offline: the remaining fields are assumed
  equal to the base model's (unknown).
* ``facebook/dinov2-large``: transformers
  ``models/dinov2/convert_dinov2_to_hf.py`` (huggingface/transformers@06fefc4d),
  ``get_dinov2_config("dinov2_vitl14")`` = ``Dinov2Config(image_size=518,
  patch_size=14)`` with hidden 1024, 24 layers, 16 heads; the other fields
  are ``Dinov2Config`` defaults (mlp ratio 4, LayerScale 1.0, eps 1e-6, no SwiGLU).

Families added after the paper (issue 13; not in the published table, so only their architectures and parameter
counts are checked, by ``tests/test_fullsize_meta.py::test_new_family_parameter_counts``):

* ``Wan-AI/Wan2.2-TI2V-5B-Diffusers`` / ``Wan-AI/Wan2.2-T2V-A14B-Diffusers``: diffusers
  ``scripts/convert_wan_to_diffusers.py`` (huggingface/diffusers@7d568273), ``get_transformer_config("Wan2.2-TI2V-5B")``
  / ``("Wan2.2-T2V-A14B")`` (both A14B experts, ``high_noise_model`` -> ``transformer`` and ``low_noise_model`` ->
  ``transformer_2``, have that config), ``vae22_diffusers_config`` for the TI2V-5B VAE (its ``clip_output`` key is
  not an ``AutoencoderKLWan`` argument in diffusers 0.42 and is left out), ``AutoencoderKLWan()`` for A14B's; the same
  script's ``WanPipeline(..., boundary_ratio=0.875)`` and ``flow_shift`` 5.0 (TI2V) / 3.0 (T2V-A14B).
* ``hunyuanvideo-community/HunyuanVideo``: diffusers ``scripts/convert_hunyuan_video_to_diffusers.py``
  (huggingface/diffusers@ff927474), ``TRANSFORMER_CONFIGS["HYVideo-T/2-cfgdistill"]``; VAE
  ``AutoencoderKLHunyuanVideo()``; scheduler ``FlowMatchEulerDiscreteScheduler(shift=7.0)``.
* ``Lightricks/LTX-Video``: diffusers ``scripts/convert_ltx_to_diffusers.py`` (huggingface/diffusers@eec5b986):
  ``LTXVideoTransformer3DModel()`` (the class defaults, written out below) and ``get_vae_config("0.9.0")``.
* ``facebook/dinov3-*-pretrain-lvd1689m``: transformers ``models/dinov3_vit/convert_dinov3_vit_to_hf.py``
  (huggingface/transformers@a77460f2), ``get_dinov3_config(...)``; the other fields are ``DINOv3ViTConfig``
  defaults (rope theta 100, eps 1e-5, LayerScale 1.0, key bias off).

Published parameter counts (model cards / papers), against which those tests check the meta builds, are in
:data:`PUBLISHED_PARAMS` with their sources.

Models with an own implementation in vidprobe carry their full-size config
next to the code: Open-Sora 2.0 (``transformer_opensora.MMDiTConfig()``),
V-JEPA (``vjepa.VARIANTS``), Fast3R (``fast3r.FULL``), VGGT-1B
(``vggt.FULL``); the HunyuanVideo VAE is ``AutoencoderKLHunyuanVideo()``
with the class defaults (see :mod:`vidprobe.backbones.opensora`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

# --------------------------------------------------------------------- WAN2.1
#: Wan-AI/Wan2.1-T2V-1.3B-Diffusers transformer (convert_wan_to_diffusers.py, "Wan-T2V-1.3B")
WAN21_T2V_1_3B: dict[str, Any] = dict(
    added_kv_proj_dim=None, attention_head_dim=128, cross_attn_norm=True, eps=1e-06, ffn_dim=8960, freq_dim=256,
    in_channels=16, num_attention_heads=12, num_layers=30, out_channels=16, patch_size=(1, 2, 2),
    qk_norm="rms_norm_across_heads", text_dim=4096,
)
#: Wan-AI/Wan2.1-T2V-14B-Diffusers transformer (convert_wan_to_diffusers.py, "Wan-T2V-14B")
WAN21_T2V_14B: dict[str, Any] = dict(WAN21_T2V_1_3B, ffn_dim=13824, num_attention_heads=40, num_layers=40)
#: AutoencoderKLWan of both (convert_wan_to_diffusers.py: ``AutoencoderKLWan()``, the class defaults)
WAN21_VAE: dict[str, Any] = {}
#: UMT5-XXL empty-prompt embedding shape [1, tokens, dim] (WanPipeline.encode_prompt: max_sequence_length 512)
WAN21_TEXT = (512, 4096)

# ------------------------------------------------------------------ CogVideoX
#: THUDM/CogVideoX-5b-I2V transformer (convert_cogvideox_to_diffusers.py with the 5B + --i2v arguments)
COGVIDEOX_5B_I2V: dict[str, Any] = dict(
    activation_fn="gelu-approximate", attention_bias=True, attention_head_dim=64, dropout=0.0, flip_sin_to_cos=True,
    freq_shift=0, in_channels=32, max_text_seq_length=226, norm_elementwise_affine=True, norm_eps=1e-05,
    num_attention_heads=48, num_layers=42, out_channels=16, patch_size=2, sample_frames=49, sample_height=60,
    sample_width=90, spatial_interpolation_scale=1.875, temporal_compression_ratio=4,
    temporal_interpolation_scale=1.0, text_embed_dim=4096, time_embed_dim=512, timestep_activation_fn="silu",
    use_learned_positional_embeddings=True, use_rotary_positional_embeddings=True,
)
#: AutoencoderKLCogVideoX of the 5B models (convert_cogvideox_to_diffusers.py: scaling_factor 0.7, else defaults)
COGVIDEOX_5B_VAE: dict[str, Any] = dict(scaling_factor=0.7)
#: T5-XXL empty-prompt embedding shape [1, tokens, dim] (226 tokens = max_text_seq_length)
COGVIDEOX_TEXT = (226, 4096)

# --------------------------------------------------------------------- Aether
#: AetherWorldModel/AetherV1 transformer: CogVideoX-5B-I2V with Aether's 96 -> 56 channels (other fields assumed)
AETHER: dict[str, Any] = dict(COGVIDEOX_5B_I2V, in_channels=96, out_channels=56)

# --------------------------------------------------------------------- DINOv2
#: facebook/dinov2-large (transformers convert_dinov2_to_hf.py, get_dinov2_config("dinov2_vitl14"))
DINOV2_LARGE: dict[str, Any] = dict(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4, patch_size=14, image_size=518,
    layerscale_value=1.0, layer_norm_eps=1e-06, use_swiglu_ffn=False, qkv_bias=True,
)

# -------------------------------------------------------------- WAN2.2 (new)
#: Wan-AI/Wan2.2-TI2V-5B-Diffusers transformer (convert_wan_to_diffusers.py, "Wan2.2-TI2V-5B")
WAN22_TI2V_5B: dict[str, Any] = dict(WAN21_T2V_1_3B, ffn_dim=14336, in_channels=48, num_attention_heads=24,
                                     num_layers=30, out_channels=48)
#: each expert of Wan-AI/Wan2.2-T2V-A14B-Diffusers (convert_wan_to_diffusers.py, "Wan2.2-T2V-A14B" = WAN2.1-14B's)
WAN22_T2V_A14B: dict[str, Any] = dict(WAN21_T2V_14B)
#: the Wan2.2 VAE of TI2V-5B (convert_wan_to_diffusers.py, vae22_diffusers_config without clip_output)
WAN22_VAE: dict[str, Any] = dict(
    base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12, out_channels=12,
    scale_factor_temporal=4, scale_factor_spatial=16, patch_size=2,
    latents_mean=[
        -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
        0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
        -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
        -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
    ],
    latents_std=[
        0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
        0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
        0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
        0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
    ],
)
#: WanPipeline(boundary_ratio=0.875) of T2V-A14B (convert_wan_to_diffusers.py)
WAN22_A14B_BOUNDARY_RATIO = 0.875

# -------------------------------------------------------- HunyuanVideo (new)
#: hunyuanvideo-community/HunyuanVideo transformer (convert_hunyuan_video_to_diffusers.py, "HYVideo-T/2-cfgdistill")
HUNYUANVIDEO: dict[str, Any] = dict(
    in_channels=16, out_channels=16, num_attention_heads=24, attention_head_dim=128, num_layers=20,
    num_single_layers=40, num_refiner_layers=2, mlp_ratio=4.0, patch_size=2, patch_size_t=1, qk_norm="rms_norm",
    guidance_embeds=True, text_embed_dim=4096, pooled_projection_dim=768, rope_theta=256.0,
    rope_axes_dim=(16, 56, 56), image_condition_type=None,
)
#: AutoencoderKLHunyuanVideo of it (the same script: the class defaults)
HUNYUANVIDEO_VAE: dict[str, Any] = {}

# ---------------------------------------------------------- LTX-Video (new)
#: Lightricks/LTX-Video transformer (convert_ltx_to_diffusers.py: LTXVideoTransformer3DModel(), the class defaults)
LTX_VIDEO: dict[str, Any] = dict(
    in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=32, attention_head_dim=64,
    cross_attention_dim=2048, num_layers=28, activation_fn="gelu-approximate", qk_norm="rms_norm_across_heads",
    norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=4096, attention_bias=True,
    attention_out_bias=True,
)
#: its AutoencoderKLLTXVideo (convert_ltx_to_diffusers.py, get_vae_config("0.9.0"))
LTX_VIDEO_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=128, block_out_channels=(128, 256, 512, 512),
    decoder_block_out_channels=(128, 256, 512, 512), layers_per_block=(4, 3, 3, 3, 4),
    decoder_layers_per_block=(4, 3, 3, 3, 4), spatio_temporal_scaling=(True, True, True, False),
    decoder_spatio_temporal_scaling=(True, True, True, False), decoder_inject_noise=(False, False, False, False, False),
    upsample_residual=(False, False, False, False), upsample_factor=(1, 1, 1, 1), patch_size=4, patch_size_t=1,
    resnet_norm_eps=1e-6, scaling_factor=1.0, encoder_causal=True, decoder_causal=False, timestep_conditioning=False,
)

# ------------------------------------------------------------- DINOv3 (new)
_DINOV3 = dict(patch_size=16, num_register_tokens=4)
#: facebook/dinov3-<size>-pretrain-lvd1689m (transformers convert_dinov3_vit_to_hf.py, get_dinov3_config)
DINOV3: dict[str, dict[str, Any]] = {
    "vits16": dict(_DINOV3, hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6,
                   proj_bias=True, use_gated_mlp=False, hidden_act="gelu"),
    "vits16plus": dict(_DINOV3, hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6,
                       use_gated_mlp=True, hidden_act="silu"),
    "vitb16": dict(_DINOV3, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   proj_bias=True, use_gated_mlp=False, hidden_act="gelu"),
    "vitl16": dict(_DINOV3, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   use_gated_mlp=False, hidden_act="gelu"),
    "vith16plus": dict(_DINOV3, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                       use_gated_mlp=True, hidden_act="silu"),
    "vit7b16": dict(_DINOV3, hidden_size=4096, intermediate_size=8192, num_hidden_layers=40, num_attention_heads=32,
                    query_bias=False, value_bias=False, use_gated_mlp=True, hidden_act="silu"),
}

#: published parameter counts of the new families' networks (backbone name -> (count, what it counts, source))
PUBLISHED_PARAMS: dict[str, tuple[float, str, str]] = {
    "wan2.2-ti2v-5b": (5e9, "transformer", "Wan2.2 README (Wan-Video/Wan2.2): 'TI2V-5B, a 5B dense model'"),
    "wan2.2-t2v-a14b": (27e9, "transformer + transformer_2",
                        "Wan2.2 README: 'two specialized 14B experts in its 27B-parameter MoE design' (14B active)"),
    "hunyuanvideo": (13e9, "transformer",
                     "HunyuanVideo README (Tencent/HunyuanVideo): 'a video generative model with over 13 billion "
                     "parameters'"),
    "ltx-video": (2e9, "transformer", "LTX-Video model card (Lightricks/LTX-Video): the 2B DiT, 'ltx-video-2b-v0.9'"),
    "dinov3-vits16": (21e6, "model", "DINOv3 README model table: ViT-S/16 distilled, 21M"),
    "dinov3-vits16plus": (29e6, "model", "DINOv3 README model table: ViT-S+/16 distilled, 29M"),
    "dinov3-vitb16": (86e6, "model", "DINOv3 README model table: ViT-B/16 distilled, 86M"),
    "dinov3-vitl16": (300e6, "model", "DINOv3 README model table: ViT-L/16 distilled, 300M"),
    "dinov3-vith16plus": (840e6, "model", "DINOv3 README model table: ViT-H+/16 distilled, 840M"),
    "dinov3-vit7b16": (6716e6, "model", "DINOv3 README model table: ViT-7B/16, 6,716M"),
}

#: registered backbone name -> {part: constructor kwargs} for the hub-hosted architectures above
FULLSIZE: dict[str, dict[str, dict[str, Any]]] = {
    "wan2.1-t2v-1.3b": {"transformer": WAN21_T2V_1_3B, "vae": WAN21_VAE},
    "wan2.1-t2v-14b": {"transformer": WAN21_T2V_14B, "vae": WAN21_VAE},
    "cogvideox-5b-i2v": {"transformer": COGVIDEOX_5B_I2V, "vae": COGVIDEOX_5B_VAE},
    "aether": {"transformer": AETHER, "vae": COGVIDEOX_5B_VAE},
    "dinov2-large": {"config": DINOV2_LARGE},
    "wan2.2-ti2v-5b": {"transformer": WAN22_TI2V_5B, "vae": WAN22_VAE},
    "wan2.2-t2v-a14b": {"transformer": WAN22_T2V_A14B, "transformer_2": WAN22_T2V_A14B, "vae": WAN21_VAE},
    "hunyuanvideo": {"transformer": HUNYUANVIDEO, "vae": HUNYUANVIDEO_VAE},
    "ltx-video": {"transformer": LTX_VIDEO, "vae": LTX_VIDEO_VAE},
    **{f"dinov3-{size}": {"config": cfg} for size, cfg in DINOV3.items()},
}


def on_meta(factory: Callable[..., torch.nn.Module], **kwargs) -> torch.nn.Module:
    """``factory(**kwargs)`` built on the ``meta`` device: full-size shapes, no weights, no memory."""
    with torch.device("meta"):
        return factory(**kwargs)


def fullsize(name: str, part: str) -> dict[str, Any]:
    """A copy of the constructor kwargs of ``part`` (``transformer``, ``transformer_2``, ``vae``, ``config``) of
    backbone ``name``."""
    if name not in FULLSIZE:
        raise KeyError(f"no full-size config for backbone {name!r}; known: {', '.join(sorted(FULLSIZE))}")
    parts = FULLSIZE[name]
    if part not in parts:
        raise KeyError(f"backbone {name!r}: no full-size {part!r} config (has {', '.join(sorted(parts))})")
    return dict(parts[part])


__all__ = [
    "WAN21_T2V_1_3B", "WAN21_T2V_14B", "WAN21_VAE", "WAN21_TEXT", "COGVIDEOX_5B_I2V", "COGVIDEOX_5B_VAE",
    "COGVIDEOX_TEXT", "AETHER", "DINOV2_LARGE", "FULLSIZE", "on_meta", "fullsize",
    "WAN22_TI2V_5B", "WAN22_T2V_A14B", "WAN22_VAE", "WAN22_A14B_BOUNDARY_RATIO", "HUNYUANVIDEO", "HUNYUANVIDEO_VAE",
    "LTX_VIDEO", "LTX_VIDEO_VAE", "DINOV3", "PUBLISHED_PARAMS",
]
