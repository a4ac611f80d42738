"""Backbones for the planner: built on the ``meta`` device and traced through one extraction pass.

:func:`trace_extraction` gives, for a backbone entry of a sweep, the feature grid ``[N, h, w, C]`` one video
stores per (layer, timestep), the parameter bytes of each network, and the peak activation bytes of the VAE
encoding and of the hooked, early-stopped pass (:mod:`vidprobe.pipeline.plan_memory`) -- with no weights and
no memory:

* full-size models are built on meta from the hub architectures of :mod:`vidprobe.backbones.fullsize` (WAN,
  CogVideoX-5B-I2V, Aether, DINOv2-large) and the own implementations' full configs (Open-Sora 2.0, V-JEPA,
  Fast3R), wrapped in the family's own adapter (``tests/test_fullsize_meta.py`` checks these builds tap the
  documented blocks);
* ``tiny: true`` models are built by their registered factory on the CPU and moved to meta;
* ``random-<arch>`` controls are their base architecture; ``pixels`` / ``oracle`` have no network.

The pass runs the adapter's own steps (``preprocess``, ``clips``, ``encode`` = the VAE once per clip,
``denoiser_forward`` under the adapter's block taps, ``tokens_to_grid``) on a meta video, with what meta
cannot run replaced: resizing with the torch ``bilinear`` kernel (same output size as the PIL kernels), the
noised latents an empty tensor of their shape (noising is elementwise), no autocast (the weights already are
in the compute dtype), offloading off (it is accounted for from the parameter bytes), and Aether's
reconstruction pass (four full-depth passes of the same size as the one traced) counted, not traced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch

from vidprobe.pipeline.plan_memory import LiveBytes, MetaCosts, cpu_workspace, module_bytes

__all__ = ["ExtractionTrace", "PlanUnsupported", "meta_backbone", "trace_extraction"]

META = torch.device("meta")
KERNEL = "bilinear"  # stands in for the PIL kernels on meta (same output size)
DIFFUSION = ("wan", "cogvideox", "opensora")


class PlanUnsupported(ValueError):
    """The planner has no meta build for this backbone (the message says which and why)."""


@dataclass
class ExtractionTrace:
    """One pass of a backbone over a ``frames``-frame clip, traced on meta (bytes throughout)."""

    name: str
    frames: int  # frames fed per pass
    grid: tuple[int, int, int, int]  # [N, h, w, C] stored per (layer, timestep) for those frames
    clips: int  # clips per pass: VAE encodes, and denoiser forwards per timestep
    num_layers: int
    dtype: str
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)  # network -> (parameters + buffers, bytes)
    offloadable: tuple[str, ...] = ()  # networks ``offload`` keeps off the device between uses
    encode_peak: int = 0  # peak activation bytes while encoding (the VAE); 0 for encoders
    forward_peak: int = 0  # peak activation bytes of the hooked pass
    diffusion: bool = False

    @property
    def param_bytes(self) -> int:
        return sum(b for _, b in self.parts.values())

    @property
    def param_count(self) -> int:
        return sum(n for n, _ in self.parts.values())

    def peak(self, offload: bool = False) -> int:
        """Peak device bytes of an extraction: every network resident, or with ``offload`` the offloadable ones
        only while encoding (the denoiser stays on the device)."""
        p = self.param_bytes
        if not offload or not self.offloadable:
            return p + max(self.encode_peak, self.forward_peak)
        off = sum(self.parts[k][1] for k in self.offloadable if k in self.parts)
        return max(p + self.encode_peak, p - off + self.forward_peak)


def _hw(spec, kw) -> tuple[int, int]:
    from vidprobe.backbones.common import both_or_neither

    return both_or_neither(kw.get("height"), kw.get("width"), spec.name) or spec.input_hw


def _text(tokens: int, dim: int) -> torch.Tensor:
    return torch.zeros(1, 1, dim).expand(1, tokens, dim)  # an empty-prompt stand-in (no memory)


def _full_diffusion(name: str, spec, kw: dict, dt: torch.dtype):
    import diffusers

    from vidprobe.backbones import aether, cogvideox, wan
    from vidprobe.backbones import fullsize as fs
    from vidprobe.backbones import opensora as osr
    from vidprobe.backbones.common import resolve_dtype
    from vidprobe.backbones.diffusion import _cast

    if spec.family == "wan":
        tr = _cast(fs.on_meta(diffusers.WanTransformer3DModel, **fs.fullsize(name, "transformer")), dt)
        vae = fs.on_meta(diffusers.AutoencoderKLWan, **fs.fullsize(name, "vae"))  # WAN's VAE runs in fp32
        return wan.WanBackbone(spec, tr, vae, wan.make_scheduler(tiny=True), _text(*fs.WAN21_TEXT), _hw(spec, kw),
                               META, dt, vae_dtype=torch.float32, flow_schedule=kw.get("flow_schedule", "installed"),
                               resize=KERNEL)
    if spec.family == "cogvideox":
        tr = _cast(fs.on_meta(diffusers.CogVideoXTransformer3DModel, **fs.fullsize(name, "transformer")), dt)
        vae = _cast(fs.on_meta(diffusers.AutoencoderKLCogVideoX, **fs.fullsize(name, "vae")), dt)
        common = dict(resize=KERNEL, autocast=False, condition_latent=kw.get("condition_latent", "mode"),
                      vae_tiling=bool(kw.get("vae_tiling", False)))
        args = (spec, tr, vae, cogvideox.tiny_scheduler(), _text(*fs.COGVIDEOX_TEXT), _hw(spec, kw), META, dt)
        if name == "aether":
            return aether.AetherBackbone(*args, num_clips=kw.get("num_clips") or aether.NUM_CLIPS,
                                         fps_factor=aether.BASE_FPS / aether.FPS, geometry="zeros", **common)
        return cogvideox.CogVideoXBackbone(*args, num_clips=kw.get("num_clips") or cogvideox.VARIANTS[name]["clips"],
                                           **common)
    cfg = osr.MMDiTConfig()
    vdt = torch.float32 if kw.get("vae_dtype") is None else resolve_dtype(kw["vae_dtype"], META)
    vae = osr.configure_vae_tiling(_cast(fs.on_meta(diffusers.AutoencoderKLHunyuanVideo), vdt),
                                   spatial=kw.get("vae_spatial_tiling", True), framewise=kw.get("vae_framewise", False))
    return osr.OpenSoraBackbone(spec, _cast(fs.on_meta(osr.OpenSoraMMDiT, config=cfg), dt), vae,
                                osr.OpenSoraFlowScheduler(dtype=kw.get("schedule_dtype", "fp32")),
                                _text(osr.T5_MAX_LENGTH, cfg.context_in_dim), _hw(spec, kw), META, dt, vae_dtype=vdt,
                                pooled_embeds=torch.zeros(1, cfg.vec_in_dim), resize=KERNEL,
                                latents=kw.get("latents", "mode"))


def _full_encoder(name: str, spec, variant: Any, kw: dict, dt: torch.dtype):
    from dataclasses import replace

    from vidprobe.backbones import dinov2, fast3r, vjepa
    from vidprobe.backbones import fullsize as fs

    if spec.family == "vjepa":
        model = fs.on_meta(vjepa.build_encoder, variant=name.removeprefix("vjepa-")).to(dt)
        return vjepa.VJEPABackbone(spec, model, _hw(spec, kw), META, dt, num_clips=kw.get("num_clips", vjepa.REFERENCE_CLIPS),
                                   resize=KERNEL)
    if spec.family == "dinov2":
        import transformers

        size, registers = variant  # dinov2-large: the config of vidprobe.backbones.fullsize (a test pins them equal)
        cls = transformers.Dinov2WithRegistersModel if registers else transformers.Dinov2Model
        model = fs.on_meta(cls, config=dinov2.full_config(size, registers)).to(dt)
        return dinov2.DINOv2Backbone(spec, model, _hw(spec, kw), META, dt, batch_size=kw.get("batch_size", 8),
                                     resize=KERNEL)
    net = fs.on_meta(fast3r.Fast3RNet, cfg=replace(fast3r.FULL, **(kw.get("config_overrides") or {})))
    return fast3r.Fast3RBackbone(spec, net, META, dt, None, height=kw.get("height"), width=kw.get("width"),
                                 resize=KERNEL)


def _modules(bb) -> dict[str, torch.nn.Module]:
    return {k: v for k, v in vars(bb).items() if isinstance(v, torch.nn.Module)}


def _tiny_on_meta(name: str, factory, kw: dict, dt: str):
    """A tiny model from its registered factory (on the CPU), its networks moved to meta."""
    bb = factory(**{**kw, "device": "cpu", "dtype": kw.get("dtype") or dt})
    for m in _modules(bb).values():
        m.to(META)
    bb.device = META
    for attr, value in (("resize", KERNEL), ("autocast", False), ("offload", False)):
        if hasattr(bb, attr):
            setattr(bb, attr, value)
    return bb


def meta_backbone(name: str, kwargs: dict | None = None, device: str = "cuda"):
    """The adapter of ``name`` around meta networks (module docstring), as ``kwargs`` would build it on ``device``."""
    from vidprobe.backbones.base import registry
    from vidprobe.backbones.common import resolve_dtype

    kw = dict(kwargs or {})
    reg = registry()
    if name not in reg:
        raise PlanUnsupported(f"unknown backbone {name!r}")
    spec, factory = reg[name]
    base = getattr(factory, "variant", None) if name.startswith("random-") else None
    if isinstance(base, str):
        name, (spec, factory) = base, reg[base]
    target = torch.device(device)
    dt = resolve_dtype(kw.get("dtype"), target)
    if kw.get("tiny"):
        return _tiny_on_meta(name, factory, kw, {torch.float32: "fp32", torch.float16: "fp16"}.get(dt, "bf16"))
    if spec.family in DIFFUSION and (name in _fullsize_names() or spec.family == "opensora"):
        return _full_diffusion(name, spec, kw, dt)
    if spec.family in ("vjepa", "dinov2", "fast3r"):
        return _full_encoder(name, spec, getattr(factory, "variant", None), kw, dt)
    raise PlanUnsupported(f"{name}: the planner has no full-size meta build for family {spec.family!r} "
                          "(its architecture is not written out in vidprobe.backbones.fullsize)")


def _quiet(fn, *args):
    """``fn(*args)`` without diffusers' warning that a directly cast model keeps no modules in float32 (they are a
    rounding error of the parameter bytes here)."""
    try:
        from diffusers.utils import logging as dlog
    except ImportError:
        return fn(*args)
    level = dlog.get_verbosity()
    dlog.set_verbosity_error()
    try:
        return fn(*args)
    finally:
        dlog.set_verbosity(level)


def _fullsize_names() -> set[str]:
    from vidprobe.backbones.fullsize import FULLSIZE

    return set(FULLSIZE)


# ------------------------------------------------------------------------------------------ the passes
def _video(T: int, hw: tuple[int, int], host: torch.Tensor | None = None) -> torch.Tensor:
    """The clip as the adapter receives it: made here (so counted) when the extraction copies it from the host to
    the device; ``host``: the video that already lives on the device (CPU extraction: it is counted by no one)."""
    return host if host is not None else torch.empty(T, 3, *hw, device=META)


def _pass_diffusion(bb, T, resolved, timesteps, hw, live: LiveBytes, host=None):
    from vidprobe.backbones.common import run_tapped, tokens_to_grid

    choice = bb.timestep_choices(list(timesteps))[0]
    if getattr(bb, "geometry", None) == "reconstruct":
        bb.geometry = "zeros"  # Aether's reconstruction passes are counted, not traced (module docstring)
    with live.phase("encode"):
        encoded = bb.encode(_video(T, hw, host))  # the VAE once per clip, all clips kept for the timesteps
    cl = encoded[0]
    with live.phase("forward"):
        noisy = torch.empty_like(cl.latents, dtype=bb.dtype)
        toks = run_tapped(bb.blocks, resolved, lambda: bb.denoiser_forward(noisy, choice, cl))
        grid = tuple(tokens_to_grid(next(iter(toks.values())), *cl.grid).float().shape)
        del toks, noisy
    return grid, len(encoded)


def _pass_encoder(bb, T, resolved, hw, live: LiveBytes, host=None):
    from vidprobe.backbones.common import run_tapped, tokens_to_grid

    fam = bb.spec.family
    with live.phase("forward"):
        frames = bb.preprocess(_video(T, hw, host))
        if fam == "dinov2":
            chunk = frames.split(bb.batch_size)[0]
            toks = run_tapped(bb.blocks, resolved, lambda: bb.model(pixel_values=chunk), final=bb.model.layernorm)
            h, w = bb.grid
            t = next(iter(toks.values()))
            grid = (T, h, w, t.shape[-1])
            clips = -(-T // bb.batch_size)
        elif fam == "vjepa":
            clips_ = bb.clips(T)
            x = torch.stack([frames[c] for c in clips_[: bb.clips_per_batch]]).permute(0, 2, 1, 3, 4)
            t_, h, w = bb.model.token_grid(x)
            toks = run_tapped(bb.blocks, resolved, lambda: bb.model(x), final=bb.model.norm)
            g = tokens_to_grid(next(iter(toks.values())), t_, h, w).float()
            grid = (int(torch.unique(bb.frame_index(T)).numel()), *g.shape[1:])
            clips = -(-len(clips_) // bb.clips_per_batch)
        else:  # fast3r: all frames in one pass
            p = bb.model.cfg.patch_size
            h, w = frames.shape[-2] // p, frames.shape[-1] // p
            out = bb.model(frames, stop_after=max(b for _, b in resolved), seed=bb.seed, image_ids=bb.image_ids)
            grid, clips = (T, h, w, out["blocks"][0].shape[-1]), 1
    return grid, clips


def trace_extraction(name: str, kwargs: dict | None, frames: int, layers, timesteps, native_hw=None,
                     device: str = "cuda", memory: bool = True) -> ExtractionTrace:
    """Shapes, parameter bytes and activation peaks of one extraction pass of ``frames`` frames (module docstring).

    ``native_hw``: the size of the frames read from the dataset (default: the model's input size); ``device``:
    where the extraction will run (it picks the default dtype). ``memory=False``: shapes only, quickly -- a
    diffusion model's pass then runs on one frame (the token rows, columns and channels do not depend on the frame
    count; ``N`` comes from the adapter's own frame index of ``frames`` frames) and the peaks are 0.
    """
    from vidprobe.backbones.common import resolve_layers

    key = json.dumps([name, kwargs or {}, frames, list(layers), list(timesteps), native_hw, device, memory],
                     sort_keys=True, default=str)
    if key in _CACHE:
        return _CACHE[key]
    if name in ("pixels", "oracle"):
        return _CACHE.setdefault(key, _control_trace(name, kwargs or {}, frames))
    bb = _quiet(meta_backbone, name, kwargs, device)
    resolved = resolve_layers(list(layers), bb.num_layers, bb.spec.name)
    hw = tuple(native_hw) if native_hw else tuple(bb.input_hw) if hasattr(bb, "input_hw") else (512, 512)
    mods = _modules(bb)
    parts = {k: module_bytes(m) for k, m in mods.items()}
    diffusion = bb.spec.family in DIFFUSION
    amp = _autocast_dtype(bb, kwargs or {}, device)
    host = torch.empty(frames, 3, *hw, device=META) if torch.device(device).type == "cpu" else None
    ws = cpu_workspace if torch.device(device).type == "cpu" else None
    with torch.inference_mode(), MetaCosts() as costs, costs.autocast_in(list(mods.values()), amp), \
            LiveBytes("meta", ws) as live:
        if diffusion:
            fed = frames if memory else 1
            grid, clips = _pass_diffusion(bb, fed, resolved, timesteps, hw, live, host if memory else None)
            grid, clips = (int(torch.unique(bb.frame_index(frames)).numel()), *grid[1:]), len(bb.clips(frames))
        else:
            grid, clips = _pass_encoder(bb, frames, resolved, hw, live, host)
    net = mods["transformer" if diffusion else "model"]
    dtype = str(amp or next(iter(net.parameters())).dtype).replace("torch.", "")
    tr = ExtractionTrace(name=name, frames=frames, grid=tuple(int(v) for v in grid), clips=clips,
                         num_layers=bb.num_layers, dtype=dtype, parts=parts,
                         offloadable=tuple(k for k in ("vae", "image_encoder") if k in parts) if diffusion else (),
                         encode_peak=live.phases.get("encode", 0) if memory else 0,
                         forward_peak=live.phases.get("forward", 0) if memory else 0,
                         diffusion=diffusion)
    _CACHE[key] = tr
    return tr


def _control_trace(name: str, kwargs: dict, frames: int) -> ExtractionTrace:
    """``pixels`` / ``oracle``: no network; per frame, ``input size // patch`` tokens of ``3 p^2`` pixel values or
    the oracle's channels, computed on the CPU (no device memory)."""
    from vidprobe.backbones.base import get_backbone
    from vidprobe.backbones.controls import ORACLE_CHANNELS

    bb = get_backbone(name, **kwargs)
    (H, W), p = bb.input_hw, bb.patch
    c = 3 * p * p if name == "pixels" else len(ORACLE_CHANNELS)
    return ExtractionTrace(name=name, frames=frames, grid=(frames, H // p, W // p, c), clips=1, num_layers=1,
                           dtype="float32")


def _autocast_dtype(bb, kw: dict, device: str) -> torch.dtype | None:
    """The autocast dtype the adapter runs under: diffusion models with ``autocast: true`` in a half dtype;
    Fast3R in any half dtype on CUDA (fp32 weights)."""
    half = (torch.float16, torch.bfloat16)
    if bb.spec.family in DIFFUSION:
        return bb.dtype if kw.get("autocast") and bb.dtype in half else None
    if bb.spec.family == "fast3r":
        return bb.dtype if torch.device(device).type == "cuda" and bb.dtype in half else None
    return None


_CACHE: dict[str, ExtractionTrace] = {}
