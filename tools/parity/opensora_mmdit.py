#!/usr/bin/env python
"""Golden fixture for Open-Sora 2.0, made by the study's release code (VidFM3D ``features/opensora``).

Run (never in CI)::

    /work/upenv/bin/python tools/parity/opensora_mmdit.py --upstream /work/up/VidFM3D [--commit SHA]

``--upstream`` is a checkout of zxhuang1698/VidFM3D. Everything below runs the
release's own functions on CPU at a TINY config with seeded weights:

1. ``direct``: the release's MMDiT (``opensora/models/mmdit/model.py``
   ``Flux`` -> ``MMDiTModel``, ``layers.py``, ``math.py``; the 640px/256px
   inference config's switches ``fused_qkv=False``, ``use_liger_rope=True``,
   ``cond_embed=True``, ``guidance_embed=False``) on seeded inputs
   (img tokens, ids, txt, timesteps, y_vec, cond): every double block's image
   stream, every single block's image part, the final output.
2. ``shift``: ``opensora/utils/sampling.py`` ``get_res_lin_function`` and
   ``time_shift`` for several latent grids and tau, composed as
   ``extract_feature`` composes them (alpha = lin(w*h//4) * sqrt(T); t =
   time_shift(alpha, tensor([tau], dtype)).to(dtype)), in fp32 and bf16.
3. ``e2e_fp32`` / ``e2e_bf16``: the release's whole ``extract_feature``
   (``opensora_features.py``: PIL bicubic resize, [-1,1] normalisation, the
   VAE encode of the clip and of frame 0 alone (``prepare_visual_condition_causal``),
   ``pack``/``prepare``, the time shift, the flow-matching mix, one MMDiT call)
   on 9 seeded 8-bit frames, with the release's HunyuanVideo VAE
   (``opensora/models/hunyuan_vae/autoencoder_kl_causal_3d.py``
   ``CausalVAE3D_HUNYUAN``, tiny, spatial tiling on with 32-px tiles, temporal
   tiling off, as the release's config) and the MMDiT of (1). Recorded: the
   frames, the video tensor the VAE receives, the VAE outputs, the random draws
   (posterior noise, the flow noise ``x_1``), every model input, every block
   output and the final output. ``e2e_fp32`` runs with ``to_torch_dtype``
   returning fp32 (the release hard-codes bf16); ``e2e_bf16`` as released.
4. ``temb``: the release's ``timestep_embedding`` on bf16 t, as it runs
   (``torch.compile``'d: the fused kernel forms ``1000 t`` in fp32) and eager
   (``1000 t`` rounded to bf16 first), to pin which one vidprobe follows.

It also rewrites ``tests/fixtures/opensora2_keys.json`` from the release's
``MMDiTModel`` built at the 11B config on the meta device.

Substitutions (recorded in the fixture metadata): flash-attn ->
``torch.nn.functional.scaled_dot_product_attention`` (same default scale,
no mask); Liger's Triton RoPE -> the same arithmetic in PyTorch (rotate-half,
left half of the cos/sin tables, computed in the tables' fp32, stored in q's
dtype); Liger's fused RMSNorm (``casting_mode="llama"``) -> the release's own
unfused ``RMSNorm.forward`` (same casting); ``torch.compile`` on
``timestep_embedding``: the identity in fp32, the real one (CPU inductor)
for the bf16 run and the ``temb`` section (as released; needs a C++
compiler); colossalai / mmengine / peft / the T5 and
CLIP embedders / booster / logger -> stubs (single-GPU path: no booster, no
sequence parallelism); torchvision imported without its C extension (only its
pure-Python ``to_tensor`` / ``Normalize`` are used).
"""

from __future__ import annotations

import argparse
import enum
import importlib.machinery
import importlib.util
import json
import logging
import math
import random
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "parity" / "opensora_mmdit.safetensors"
DEFAULT_KEYS = ROOT / "tests" / "fixtures" / "opensora2_keys.json"
REPO = "zxhuang1698/VidFM3D"

# vidprobe.backbones.opensora.tiny_config() field by field (the test reads this from the metadata)
TINY = dict(
    in_channels=64, vec_in_dim=16, context_in_dim=32, hidden_size=32, mlp_ratio=2.0, num_heads=2, depth=2,
    depth_single_blocks=3, axes_dim=[4, 6, 6], theta=10_000, qkv_bias=True, guidance_embed=False, cond_embed=True,
    fused_qkv=False, use_liger_rope=True,
)
FULL = dict(
    in_channels=64, vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19,
    depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10_000, qkv_bias=True, guidance_embed=False,
    cond_embed=True, fused_qkv=False, use_liger_rope=True,
)
# the release's AutoEncoder3DConfig, shrunk; sample_size 32 makes its spatial tiling run at this size
TINY_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1, block_out_channels=(8, 8, 8, 8),
    norm_num_groups=4, mid_block_add_attention=False, sample_size=32, use_spatial_tiling=True,
    use_temporal_tiling=False,
)
TXT_LEN = 8
FRAMES, SRC_HW, HW = 9, (56, 88), (48, 64)  # 8-bit frames of 56x88 resized to 48x64 -> latents 3 x 6 x 8
DIRECT_GRID = (3, 2, 3)  # token grid of the direct MMDiT call
SHIFT_GRIDS = [(21, 60, 106), (33, 60, 106), (1, 60, 106), (13, 60, 90), (21, 30, 53), (3, 6, 8), (9, 34, 60)]
SHIFT_TAUS = [0.05, 0.25, 0.3, 0.5, 0.75, 0.95]
SUBSTITUTIONS = [
    "flash_attn.flash_attn_func -> torch.nn.functional.scaled_dot_product_attention on [B,H,L,D] (scale 1/sqrt(D), no mask)",
    "liger_kernel.ops.rope.LigerRopeFunction -> PyTorch: y1 = x1*cos - x2*sin, y2 = x2*cos + x1*sin with the left half "
    "of the cos/sin tables, computed in the tables' dtype (fp32), stored in q's dtype (the Triton kernel's arithmetic)",
    "opensora.models.mmdit.layers.FusedRMSNorm.forward (Liger RMSNorm, casting_mode llama) -> the release's own "
    "RMSNorm.forward ((x*rrms in fp32).to(x.dtype) * scale, the same casting)",
    "torch.compile (decorating layers.timestep_embedding): identity for 'direct' and 'e2e_fp32' (fp32: the same "
    "arithmetic); the real torch.compile (inductor, CPU) for 'e2e_bf16' and 'temb' (as released: the fused kernel "
    "forms 1000 t in fp32, eager would round it to bf16); torch.compile in opensora/models/vae/utils.py (pad "
    "helpers the HunyuanVideo VAE does not use) -> identity",
    "colossalai.utils.set_seed -> random.seed, numpy.random.seed, torch.manual_seed",
    "opensora.utils.cai get_booster -> None, init_inference_environment -> no-op (single-GPU path of the release)",
    "opensora_features._get_models -> returns the tiny seeded MMDiT and VAE, stub T5/CLIP embedders returning fixed "
    "seeded tensors [1,8,32] / [1,16] (the empty prompt's embeddings are inputs here)",
    "e2e_fp32 only: opensora_features.to_torch_dtype -> torch.float32 (released: bf16)",
    "mmengine, peft, opensora.registry, opensora.utils.{ckpt,config,logger,inference,misc}, "
    "opensora.models.text.conditioner -> import stubs (unused by the code run)",
    "torchvision imported with its package __init__ bypassed (its C extension does not load here); "
    "transforms.functional.to_tensor and transforms.Normalize are the real pure-Python code",
]


# ------------------------------------------------------------------ stubs
def _module(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def _package(name: str, path: Path) -> None:
    """A package whose ``__init__`` is not run (its submodules import from ``path``)."""
    m = _module(name)
    m.__path__ = [str(path)]


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _LigerRope:
    @staticmethod
    def apply(q, k, cos, sin):
        half = q.shape[-1] // 2
        c, s = cos[..., :half].unsqueeze(1), sin[..., :half].unsqueeze(1)  # [B,1,L,D/2]

        def rot(x):
            x1, x2 = x[..., :half].to(c.dtype), x[..., half:].to(c.dtype)
            return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)

        return rot(q), rot(k)


def _flash_attn_func(q, k, v):
    """flash-attn's layout [B,L,H,D] -> SDPA on [B,H,L,D] -> [B,L,H,D]."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


class _Registry:
    def register_module(self, name=None, *a, **k):
        return lambda obj: obj


class _Unused:
    def __init__(self, *a, **k):
        raise RuntimeError("stubbed: not used by the fixture")


def install_stubs(root: Path) -> None:
    """``root`` = ``features/opensora`` of the release checkout."""
    sys.path.insert(0, str(root))
    _module("colossalai")
    _module("colossalai.utils", set_seed=_set_seed, get_current_device=lambda: torch.device("cpu"))
    _module("mmengine")
    _module("mmengine.config", Config=_Unused)
    _module("peft", PeftModel=_Unused)
    _module("flash_attn", flash_attn_func=_flash_attn_func)
    _module("liger_kernel")
    _module("liger_kernel.ops")
    _module("liger_kernel.ops.rope", LigerRopeFunction=_LigerRope)
    _module("liger_kernel.ops.rms_norm", LigerRMSNormFunction=_Unused)
    pkg = root / "opensora"
    for sub in ("", ".models", ".models.mmdit", ".models.hunyuan_vae", ".models.vae", ".models.text", ".utils",
                ".datasets", ".acceleration"):
        _package("opensora" + sub, pkg / sub[1:].replace(".", "/"))
    _module("opensora.registry", MODELS=_Registry(), build_module=_Unused)
    _module("opensora.utils.ckpt", load_checkpoint=_Unused)
    _module("opensora.utils.cai", get_booster=lambda cfg, ae=False: None, init_inference_environment=lambda: None)
    _module("opensora.utils.config", merge_args=_Unused, parse_alias=_Unused)
    _module("opensora.utils.logger", create_logger=lambda *a, **k: logging.getLogger("opensora"), log_message=print)
    _module("opensora.utils.misc", to_torch_dtype=lambda d: {"bf16": torch.bfloat16, "fp32": torch.float32}[d])
    _module("opensora.models.text.conditioner", HFEmbedder=_Unused)

    class SamplingMethod(enum.Enum):  # opensora/utils/inference.py, verbatim values
        I2V = "i2v"
        DISTILLED = "distill"

    _module("opensora.utils.inference", SamplingMethod=SamplingMethod, collect_references_batch=_Unused,
            prepare_inference_condition=_Unused)


def import_release(root: Path) -> dict[str, types.ModuleType]:
    compile_ = torch.compile
    torch.compile = lambda fn=None, **kw: fn if fn is not None else (lambda f: f)
    try:
        import opensora.models.mmdit.layers as layers
        import opensora.models.mmdit.math as mmath
        import opensora.models.mmdit.model as model
        import opensora.utils.sampling as sampling
        import opensora.models.hunyuan_vae.autoencoder_kl_causal_3d as vae
        import opensora.models.hunyuan_vae.vae as vae_parts

        spec = importlib.util.spec_from_file_location("opensora_features", root / "opensora_features.py")
        features = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(features)
    finally:
        torch.compile = compile_
    layers.FusedRMSNorm.forward = layers.RMSNorm.forward
    eager = layers.timestep_embedding  # the decorator was the identity at import: the eager function
    compiled = torch.compile(eager, mode="max-autotune-no-cudagraphs", dynamic=True)  # what the release runs
    return dict(layers=layers, math=mmath, model=model, sampling=sampling, vae=vae, vae_parts=vae_parts,
                features=features, temb_eager=eager, temb_compiled=compiled)


def use_timestep_embedding(rel, fn) -> None:
    """The function ``MMDiTModel.prepare_block_inputs`` calls (model.py imported it by name)."""
    rel["model"].timestep_embedding = fn
    rel["layers"].timestep_embedding = fn


# ------------------------------------------------------------ seeded models
def seed_weights_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter redrawn: norm scales ~ 1 + 0.1 N, matrices ~ N / sqrt(fan_in), biases ~ 0.05 N."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("scale") or (p.dim() == 1 and "norm" in name and name.endswith("weight")):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
    return module


def build_mmdit(rel, cfg: dict, dtype=torch.float32):
    return rel["model"].Flux(from_pretrained=None, device_map="cpu", torch_dtype=dtype, **cfg).eval()


def image_ids(T: int, h: int, w: int) -> torch.Tensor:
    """As the release's ``prepare``: (t, row, column) per token."""
    ids = torch.zeros(T, h, w, 3)
    ids[..., 0] += torch.arange(T)[:, None, None]
    ids[..., 1] += torch.arange(h)[None, :, None]
    ids[..., 2] += torch.arange(w)[None, None, :]
    return ids.reshape(1, T * h * w, 3)


def hook_streams(model, n_txt_box: list, store: dict, prefix: str) -> list:
    hs = []
    for i, blk in enumerate(model.double_blocks):
        hs.append(blk.register_forward_hook(lambda m, a, out, i=i: store.__setitem__(f"{prefix}double.{i}", out[0].detach().float().clone())))
    for i, blk in enumerate(model.single_blocks):
        hs.append(blk.register_forward_hook(
            lambda m, a, out, i=i: store.__setitem__(f"{prefix}single.{i}", out[:, n_txt_box[0]:].detach().float().clone())))
    return hs


# ------------------------------------------------------------------- parts
def run_direct(rel, model) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    T, h, w = DIRECT_GRID
    N = T * h * w
    inp = dict(
        img=torch.randn(1, N, TINY["in_channels"], generator=g),
        img_ids=image_ids(T, h, w),
        txt=torch.randn(1, TXT_LEN, TINY["context_in_dim"], generator=g),
        txt_ids=torch.zeros(1, TXT_LEN, 3),
        timesteps=torch.tensor([0.7]),
        y_vec=torch.randn(1, TINY["vec_in_dim"], generator=g),
        cond=torch.randn(1, N, TINY["in_channels"] + 4, generator=g),
    )
    out: dict[str, torch.Tensor] = {}
    hs = hook_streams(model, [TXT_LEN], out, "direct/out/")
    with torch.no_grad():
        out["direct/out/final"] = model(**inp).float()
    for hk in hs:
        hk.remove()
    out.update({f"direct/in/{k}": v for k, v in inp.items()})
    return out


def run_shift(rel) -> dict[str, torch.Tensor]:
    s = rel["sampling"]
    alphas, t32, t16 = [], [], []
    for T, h, w in SHIFT_GRIDS:
        a = s.get_res_lin_function()((w * h) // 4)  # extract_feature: x_0.shape[-1] * x_0.shape[-2] // 4
        a *= math.sqrt(T)
        alphas.append(a)
        row32, row16 = [], []
        for tau in SHIFT_TAUS:
            row32.append(float(s.time_shift(a, torch.tensor([tau], dtype=torch.float32)).to(torch.float32)))
            row16.append(float(s.time_shift(a, torch.tensor([tau], dtype=torch.bfloat16)).to(torch.bfloat16)))
        t32.append(row32)
        t16.append(row16)
    return {
        "shift/grid": torch.tensor(SHIFT_GRIDS, dtype=torch.int64),
        "shift/tau": torch.tensor(SHIFT_TAUS, dtype=torch.float64),
        "shift/alpha": torch.tensor(alphas, dtype=torch.float64),
        "shift/t_fp32": torch.tensor(t32, dtype=torch.float32),
        "shift/t_bf16": torch.tensor(t16, dtype=torch.float32),  # bf16 values, exactly representable in fp32
    }


TEMB_T = [0.765625, 0.72265625, 0.3359375, 0.05, 0.99609375]  # bf16 values of t


def run_temb(rel) -> dict[str, torch.Tensor]:
    """The release's ``timestep_embedding`` on bf16 t: compiled (as it runs: the fused kernel forms 1000 t in
    fp32) and eager (1000 t rounded to bf16 first)."""
    t = torch.tensor(TEMB_T, dtype=torch.bfloat16)
    return {
        "temb/t": t.float(),
        "temb/compiled": rel["temb_compiled"](t, 256).float(),
        "temb/eager": rel["temb_eager"](t, 256).float(),
    }


class _Text(torch.nn.Module):
    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, text, added_tokens: int = 0, seq_align: int = 1):
        assert text == [""] or text == "", text
        return self.value


class _Cfg(dict):
    __getattr__ = dict.__getitem__


def make_frames() -> np.ndarray:
    g = np.random.default_rng(7)
    base = g.integers(0, 256, size=(FRAMES, SRC_HW[0] // 4, SRC_HW[1] // 4, 3))
    frames = np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)  # some spatial structure for the bicubic kernel
    frames = np.clip(frames + g.integers(-20, 21, size=frames.shape), 0, 255).astype(np.uint8)
    return frames


def run_e2e(rel, model32, vae32, txt, vec, frames: np.ndarray, dtype: torch.dtype, tag: str) -> dict[str, torch.Tensor]:
    from PIL import Image

    osf = rel["features"]
    model = build_mmdit(rel, TINY, torch.float32)
    model.load_state_dict(model32.state_dict())
    model = model.to(dtype).eval()
    vae = rel["vae"].CausalVAE3D_HUNYUAN(from_pretrained=None, device_map="cpu", torch_dtype=torch.float32, **TINY_VAE)
    vae.load_state_dict(vae32.state_dict())
    vae = vae.to(dtype).eval()
    cfg = _Cfg(sampling_option=dict(width=HW[1], height=HW[0], num_frames=FRAMES, method="i2v"), patch_size=2)
    osf._get_models = lambda path, device, dt: (cfg, model, vae, _Text(txt.to(dt)), _Text(vec.to(dt)))
    osf.to_torch_dtype = lambda name: dtype
    rec: dict[str, torch.Tensor] = {}
    p = f"{tag}/"
    calls: list = []
    encode = vae.encode

    def encode_rec(x, *a, **k):
        z = encode(x, *a, **k)
        calls.append((x.detach().float().clone(), z.detach().float().clone()))
        return z

    vae.encode = encode_rec
    draws: list = []
    randn_tensor = rel["vae_parts"].randn_tensor

    def randn_rec(*a, **k):
        out = randn_tensor(*a, **k)
        draws.append(out.detach().float().clone())
        return out

    rel["vae_parts"].randn_tensor = randn_rec
    eps: list = []
    randn_like = torch.randn_like

    def randn_like_rec(*a, **k):
        out = randn_like(*a, **k)
        eps.append(out.detach().float().clone())
        return out

    n_txt = [TXT_LEN]
    hs = hook_streams(model, n_txt, rec, p + "out/")

    def pre(m, args, kwargs):
        for k, v in kwargs.items():
            if isinstance(v, torch.Tensor):
                rec[p + "in/" + k] = v.detach().float().clone()
                rec[p + "in_dtype_is_bf16/" + k] = torch.tensor([v.dtype == torch.bfloat16])

    hs.append(model.register_forward_pre_hook(pre, with_kwargs=True))
    hs.append(model.register_forward_hook(lambda m, a, out: rec.__setitem__(p + "out/final", out.detach().float().clone())))
    images = [Image.fromarray(f, mode="RGB") for f in frames]
    torch.randn_like = randn_like_rec
    try:
        feats = osf.extract_feature(frames=images, layer_indices=[], timestep=0.25, seed=42, config_path="stub")
    finally:
        torch.randn_like = randn_like
        rel["vae_parts"].randn_tensor = randn_tensor
        for hk in hs:
            hk.remove()
    assert feats == {}, "no release hooks were asked for"
    assert len(calls) == 2 and len(draws) == 2 and len(eps) == 1, (len(calls), len(draws), len(eps))
    video = calls[0][0]  # [1,3,T,H,W] in [-1,1]: torchvision Normalize(0.5, 0.5) of to_tensor(PIL bicubic uint8)
    resized = ((video + 1) / 2 * 255).round().clamp(0, 255).to(torch.uint8)
    again = (resized.float() / 255 - 0.5) / 0.5  # to_tensor (/255) then Normalize, as frames_to_tensor does
    assert torch.equal(again.to(dtype).float(), video), "the VAE input is not a normalised 8-bit image"
    rec[p + "resized_u8"] = resized[0].permute(1, 2, 3, 0).contiguous()  # [T,H,W,3]: PIL bicubic output
    rec[p + "z_full"], rec[p + "z_first"] = calls[0][1], calls[1][1]
    rec[p + "post_noise.0"], rec[p + "post_noise.1"] = draws
    rec[p + "eps"] = eps[0]
    return rec


# -------------------------------------------------------------------- keys
def write_keys(rel, path: Path) -> int:
    with torch.device("meta"):
        m = rel["model"].MMDiTModel(rel["model"].MMDiTConfig(from_pretrained=None, cache_dir=None, **FULL))
    tensors = {k: list(v.shape) for k, v in m.state_dict().items()}
    doc = {
        "source": f"{REPO} features/opensora/opensora/models/mmdit/model.py MMDiTModel (Open-Sora 2.0), 11B config of "
                  "configs/diffusion/inference/256px.py (inherited by the release's 640px.py); checkpoint "
                  "hpcai-tech/Open-Sora-v2 / Open_Sora_v2.safetensors",
        "derivation": "state_dict() of the release's MMDiTModel built on the meta device by "
                      "tools/parity/opensora_mmdit.py (not read from the checkpoint, which cannot be downloaded here)",
        "config": {k: v for k, v in FULL.items() if k != "use_liger_rope"} | {"patch_size": 2},
        "num_tensors": len(tensors),
        "num_params": sum(math.prod(s) for s in tensors.values()),
        "tensors": tensors,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return len(tensors)


def git_commit(path: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:  # noqa: BLE001 - an archive has no .git: pass --commit
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", required=True, type=Path, help="checkout of zxhuang1698/VidFM3D")
    ap.add_argument("--commit", default=None, help="commit of the checkout (default: git rev-parse)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--keys-out", type=Path, default=DEFAULT_KEYS)
    args = ap.parse_args()
    root = args.upstream / "features" / "opensora"
    spec = importlib.util.find_spec("torchvision")
    _package("torchvision", Path(list(spec.submodule_search_locations)[0]))
    import diffusers.models.autoencoders.vae  # noqa: F401 - the real diffusers, imported before the other stubs

    install_stubs(root)
    rel = import_release(root)
    torch.set_num_threads(1)

    model = seed_weights_(build_mmdit(rel, TINY), seed=0)
    vae = rel["vae"].CausalVAE3D_HUNYUAN(from_pretrained=None, device_map="cpu", torch_dtype=torch.float32, **TINY_VAE)
    seed_weights_(vae, seed=2)
    vae.eval()
    g = torch.Generator().manual_seed(3)
    txt = torch.randn(1, TXT_LEN, TINY["context_in_dim"], generator=g)
    vec = torch.randn(1, TINY["vec_in_dim"], generator=g)
    frames = make_frames()

    tensors: dict[str, torch.Tensor] = {}
    tensors.update({f"mmdit/{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()})
    tensors.update({f"vae/{k}": v.detach().clone().contiguous() for k, v in vae.state_dict().items()})
    tensors.update(run_direct(rel, model))
    tensors.update(run_shift(rel))
    tensors["e2e/frames"] = torch.from_numpy(frames)
    tensors["e2e/txt"], tensors["e2e/y_vec"] = txt, vec
    tensors.update(run_temb(rel))
    use_timestep_embedding(rel, rel["temb_eager"])  # fp32: the same arithmetic as compiled, without libm noise
    tensors.update(run_e2e(rel, model, vae, txt, vec, frames, torch.float32, "e2e_fp32"))
    use_timestep_embedding(rel, rel["temb_compiled"])  # bf16: as released (torch.compile'd)
    tensors.update(run_e2e(rel, model, vae, txt, vec, frames, torch.bfloat16, "e2e_bf16"))
    n_keys = write_keys(rel, args.keys_out)

    meta = {
        "upstream": REPO,
        "commit": args.commit or git_commit(args.upstream),
        "modules": json.dumps([
            "features/opensora/opensora/models/mmdit/model.py: Flux, MMDiTModel, MMDiTConfig",
            "features/opensora/opensora/models/mmdit/layers.py, math.py (via the model)",
            "features/opensora/opensora/utils/sampling.py: get_res_lin_function, time_shift, pack, prepare, "
            "SamplingOption, sanitize_sampling_option",
            "features/opensora/opensora/models/hunyuan_vae/autoencoder_kl_causal_3d.py: CausalVAE3D_HUNYUAN",
            "features/opensora/opensora_features.py: extract_feature, frames_to_tensor, prepare_visual_condition_causal",
        ]),
        "config": json.dumps(TINY),
        "vae_config": json.dumps(TINY_VAE),
        "direct_grid": json.dumps(DIRECT_GRID),
        "e2e": json.dumps({"frames": FRAMES, "source_hw": SRC_HW, "input_hw": HW, "timestep": 0.25, "seed": 42,
                           "txt_len": TXT_LEN, "sigma_min": 1e-5}),
        "substitutions": json.dumps(SUBSTITUTIONS),
        "keys_fixture": f"tests/fixtures/opensora2_keys.json ({n_keys} tensors, written by this script)",
        "generator": "tools/parity/opensora_mmdit.py",
    }
    from safetensors.torch import save_file

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(args.out), metadata=meta)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB, {len(tensors)} tensors); keys: {n_keys}")
    for tag in ("e2e_fp32", "e2e_bf16"):
        print(tag, "t =", tensors[f"{tag}/in/timesteps"].tolist())


if __name__ == "__main__":
    main()
