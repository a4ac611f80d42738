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

#: registered backbone name -> {part: constructor kwargs} for the hub-hosted architectures above
FULLSIZE: dict[str, dict[str, dict[str, Any]]] = {
    "wan2.1-t2v-1.3b": {"transformer": WAN21_T2V_1_3B, "vae": WAN21_VAE},
    "wan2.1-t2v-14b": {"transformer": WAN21_T2V_14B, "vae": WAN21_VAE},
    "cogvideox-5b-i2v": {"transformer": COGVIDEOX_5B_I2V, "vae": COGVIDEOX_5B_VAE},
    "aether": {"transformer": AETHER, "vae": COGVIDEOX_5B_VAE},
    "dinov2-large": {"config": DINOV2_LARGE},
}


def on_meta(factory: Callable[..., torch.nn.Module], **kwargs) -> torch.nn.Module:
    """``factory(**kwargs)`` built on the ``meta`` device: full-size shapes, no weights, no memory."""
    with torch.device("meta"):
        return factory(**kwargs)


def fullsize(name: str, part: str) -> dict[str, Any]:
    """A copy of the constructor kwargs of ``part`` (``transformer``, ``vae``, ``config``) of backbone ``name``."""
    if name not in FULLSIZE:
        raise KeyError(f"no full-size config for backbone {name!r}; known: {', '.join(sorted(FULLSIZE))}")
    parts = FULLSIZE[name]
    if part not in parts:
        raise KeyError(f"backbone {name!r}: no full-size {part!r} config (has {', '.join(sorted(parts))})")
    return dict(parts[part])


__all__ = [
    "WAN21_T2V_1_3B", "WAN21_T2V_14B", "WAN21_VAE", "WAN21_TEXT", "COGVIDEOX_5B_I2V", "COGVIDEOX_5B_VAE",
    "COGVIDEOX_TEXT", "AETHER", "DINOV2_LARGE", "FULLSIZE", "on_meta", "fullsize",
]
