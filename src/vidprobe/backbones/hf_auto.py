"""Any Hugging Face vision / video encoder by name: ``hf:<hub repo id or local folder>``.

``get_backbone("hf:facebook/dinov2-small")`` (or ``vidprobe extract -b hf:./my-model``) loads the model with
transformers' ``AutoConfig`` / ``AutoModel`` and reads ``hidden_states`` (``output_hidden_states=True``).
Nothing about the architecture is guessed; everything is derived and then checked:

* patch size: the config's ``patch_size``; tubelet size (video models): ``tubelet_size``; clip length:
  ``num_frames`` / ``frames_per_clip``; input size: ``image_size`` / ``crop_size`` (or ``height``/``width``,
  snapped to the patch size);
* prefix tokens: the embedding's ``cls_token`` / ``distillation_token`` / ``register_tokens`` (and the config's
  ``num_register_tokens``);
* at build, one probe pass on a blank input checks that EVERY hidden state has exactly
  ``prefix + t*h*w`` tokens; otherwise the build is refused, naming what could not be explained (e.g. a
  hierarchical model whose stages downsample).

Image models (no ``tubelet_size``) run per frame; video models (a ``tubelet_size``) run on consecutive clips of the
config's clip length (the last one padded by repeating its last frame; maps of padding only are dropped), map ``q``
of a clip serving frames ``q*tubelet ... (q+1)*tubelet - 1``. Layer ``k`` is ``hidden_states[k]`` (1-based: the
k-th block's output), ``-1`` is ``last_hidden_state``. When the model's blocks (a ``ModuleList`` of ``L`` modules)
are found and their outputs equal ``hidden_states[1..L]`` in the probe pass, layers ``k >= 1`` are read with hooks
in one pass that stops after the deepest one; otherwise (and for ``-1``) one full pass. Frames are normalised with
the ``image_mean`` / ``image_std`` of the model's ``preprocessor_config.json`` when it has one, else ImageNet's.
``random_init``: ``AutoModel.from_config`` (seeded) -- the named architecture with random weights.
Remote code runs only with ``trust_remote_code=True``.

The ``hf:`` prefix is looked up in ``vidprobe.backbones.base``'s resolver table (this module is not a registering
family: no name is registered, every ``hf:`` name is resolved on lookup, its spec read from the config).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.backbones.builder import BuildContext, Family
from vidprobe.backbones.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LAST,
    chunked_clips,
    drop_unused,
    per_frame_index,
    prepare_frames,
    require_transformers,
    seeded,
    snap_hw,
    start_extract,
    tokens_to_grid,
)
from vidprobe.backbones.loading import freeze

PREFIX = "hf"
OPTIONS = ("revision", "dtype", "device", "height", "width", "seed", "random_init", "config_overrides", "resize")
BLOCK_PATHS = ("encoder.layer", "encoder.layers", "encoder.blocks", "layers", "blocks", "layer")
PREFIX_PARAMS = ("cls_token", "class_embedding", "distillation_token", "register_tokens")


class UnsupportedModelError(ValueError):
    """The model's layout cannot be derived from its config (or does not match its hidden states)."""


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (list, tuple)) else (int(v), int(v))


def vision_config(config: Any) -> Any:
    """The config of the vision tower (``vision_config`` of a CLIP/SigLIP-style pair), else the config itself."""
    return getattr(config, "vision_config", None) or config


@dataclass(frozen=True)
class Layout:
    """What the config says: patch, tubelet (None: image model), clip length, native input size."""

    patch: int
    tubelet: int | None
    clip_len: int | None
    native_hw: tuple[int, int]


def derive_layout(config: Any, who: str) -> Layout:
    """Patch size, tubelet size, clip length and input size from ``config``; refuses what is missing."""
    cfg = vision_config(config)
    patch = getattr(cfg, "patch_size", None)
    if patch is None:
        raise UnsupportedModelError(f"{who}: cannot derive the patch size: the config "
                                    f"({type(cfg).__name__}) has no 'patch_size'")
    ph, pw = _pair(patch)
    if ph != pw:
        raise UnsupportedModelError(f"{who}: non-square patch_size {patch} is not supported")
    size = getattr(cfg, "image_size", None) or getattr(cfg, "crop_size", None)
    if size is None:
        raise UnsupportedModelError(f"{who}: cannot derive the input size: the config has no 'image_size' "
                                    "or 'crop_size'")
    tubelet = getattr(cfg, "tubelet_size", None)
    clip_len = None
    if tubelet is not None:
        tubelet = int(_pair(tubelet)[0]) if isinstance(tubelet, (list, tuple)) else int(tubelet)
        clip_len = getattr(cfg, "num_frames", None) or getattr(cfg, "frames_per_clip", None)
        if clip_len is None:
            raise UnsupportedModelError(f"{who}: video model (tubelet_size={tubelet}) without 'num_frames' or "
                                        "'frames_per_clip': cannot derive the clip length")
        clip_len = int(clip_len)
        if clip_len % tubelet:
            raise UnsupportedModelError(f"{who}: num_frames {clip_len} is not a multiple of tubelet_size {tubelet}")
    return Layout(ph, tubelet, clip_len, _pair(size))


def count_prefix(model: torch.nn.Module, config: Any) -> int:
    """CLS / distillation / register tokens the embedding adds in front of the patch tokens."""
    n = 0
    found_registers = False
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in PREFIX_PARAMS and "embed" in name:
            k = int(p.shape[-2]) if p.dim() >= 2 else 1
            n += k
            found_registers |= leaf == "register_tokens"
    if not found_registers:
        n += int(getattr(vision_config(config), "num_register_tokens", 0) or 0)
    return n


def find_blocks(model: torch.nn.Module, num_layers: int) -> Sequence[torch.nn.Module] | None:
    for path in BLOCK_PATHS:
        try:
            mod = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(mod, torch.nn.ModuleList) and len(mod) == num_layers:
            return mod
    return None


class HFAutoBackbone:
    """Adapter around an ``AutoModel`` whose hidden states are ``[B, prefix + t*h*w, C]`` token sequences."""

    def __init__(self, spec: BackboneSpec, model: torch.nn.Module, config: Any, layout: Layout,
                 input_hw: tuple[int, int] | None, device: torch.device, dtype: torch.dtype, resize: str,
                 mean: Sequence[float], std: Sequence[float], model_id: str | None, revision: str | None,
                 batch_size: int = 8):
        self.spec, self.model, self.config, self.layout = spec, model, config, layout
        self.patch = layout.patch
        self.input_hw = snap_hw(input_hw or layout.native_hw, self.patch)
        self.device, self.dtype, self.resize = device, dtype, resize
        self.mean, self.std = tuple(mean), tuple(std)
        self.model_id, self.revision = model_id, revision
        self.batch_size = max(1, int(batch_size))
        params = inspect.signature(model.forward).parameters
        self._input = "pixel_values_videos" if "pixel_values_videos" in params else "pixel_values"
        self._extra = {}
        if "interpolate_pos_encoding" in params and self.input_hw != layout.native_hw:
            self._extra["interpolate_pos_encoding"] = True
        if "skip_predictor" in params:
            self._extra["skip_predictor"] = True
        self.num_prefix = count_prefix(model, config)
        self.num_layers, self.blocks = self._probe()

    @property
    def video(self) -> bool:
        return self.layout.tubelet is not None

    @property
    def grid(self) -> tuple[int, int, int]:
        t = self.layout.clip_len // self.layout.tubelet if self.video else 1  # type: ignore[operator]
        return t, self.input_hw[0] // self.patch, self.input_hw[1] // self.patch

    def _forward(self, x: torch.Tensor) -> Any:
        return self.model(**{self._input: x}, output_hidden_states=True, return_dict=True, **self._extra)

    def _blank(self) -> torch.Tensor:
        n = self.layout.clip_len if self.video else 1
        x = torch.zeros(n, 3, *self.input_hw, device=self.device, dtype=self.dtype)
        return x[None] if self.video else x

    @torch.inference_mode()
    def _probe(self) -> tuple[int, Sequence[torch.nn.Module] | None]:
        """One pass on a blank input: check every hidden state's token count; find hookable blocks."""
        who = self.spec.name
        out = self._forward(self._blank())
        hs = getattr(out, "hidden_states", None)
        if not hs or len(hs) < 2:
            raise UnsupportedModelError(f"{who}: the model returns no hidden_states with output_hidden_states=True")
        t, h, w = self.grid
        want = self.num_prefix + t * h * w
        states = list(hs[1:]) + [getattr(out, "last_hidden_state", None)]
        for k, s in enumerate(states, start=1):
            name = f"hidden_states[{k}]" if k < len(states) else "last_hidden_state"
            if s is None or s.dim() != 3 or s.shape[1] != want:
                shape = None if s is None else tuple(s.shape)
                raise UnsupportedModelError(
                    f"{who}: {name} has shape {shape}, but {self.num_prefix} prefix token(s) (CLS/registers) + "
                    f"{t}x{h}x{w} patch tokens (patch {self.patch}, tubelet {self.layout.tubelet}, input "
                    f"{self.input_hw[0]}x{self.input_hw[1]}) = {want} tokens [B, N, C] were expected: the token "
                    "layout cannot be derived from the config (hierarchical or pooled models are not supported)")
        L = len(hs) - 1
        blocks = find_blocks(self.model, L)
        if blocks is not None:
            from vidprobe.backbones.hooks import BlockTap

            with BlockTap(blocks, list(range(1, L + 1)), stop_early=False) as tap:
                tap.run(lambda: self._forward(self._blank()))
            if any(k not in tap.outputs or tap.outputs[k].shape != hs[k].shape
                   or not torch.equal(tap.outputs[k], hs[k]) for k in range(1, L + 1)):
                blocks = None  # the blocks' outputs are not the hidden states: always one full pass
        return L, blocks

    def _tokens(self, x: torch.Tensor, resolved: list[tuple[int, int]]) -> dict[int, torch.Tensor]:
        """``{requested: [B, N, C]}`` for one batch: hooked early stop, or one full pass."""
        if self.blocks is not None and all(req != LAST for req, _ in resolved):
            from vidprobe.backbones.common import run_tapped

            return run_tapped(self.blocks, resolved, lambda: self._forward(x))
        out = self._forward(x)
        return {req: out.last_hidden_state if req == LAST else out.hidden_states[b] for req, b in resolved}

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(None,), clip=None) -> FeatureSet:
        resolved = start_extract(self, video, layers, timesteps)
        T = video.shape[0]
        frames = prepare_frames(video, self.input_hw, self.mean, self.std, self.device, self.dtype, self.resize)
        t, h, w = self.grid
        parts: dict[int, list[torch.Tensor]] = {req: [] for req, _ in resolved}
        if self.video:
            batches = [frames[c][None] for c in chunked_clips(T, self.layout.clip_len)]  # type: ignore[arg-type]
        else:
            batches = list(frames.split(self.batch_size))
        for x in batches:
            for req, tok in self._tokens(x, resolved).items():
                parts[req].append(tokens_to_grid(tok[:, self.num_prefix:], t, h, w).float().cpu())
        if self.video:
            clip_len, tub = self.layout.clip_len, self.layout.tubelet
            i = torch.arange(T)
            fi = (i // clip_len) * (clip_len // tub) + (i % clip_len) // tub  # type: ignore[operator]
        else:
            fi = per_frame_index(T)
        maps = {}
        for req, v in parts.items():
            maps[(req, None)], idx = drop_unused(torch.cat(v), fi)
        info = {"input_hw": self.input_hw, "grid": (h, w), "layout": self.spec.frame_layout,
                "model_id": self.model_id, "revision": self.revision, "resize": self.resize,
                "num_prefix_tokens": self.num_prefix, "model_class": type(self.model).__name__,
                "hooked": self.blocks is not None, "mean": self.mean, "std": self.std}
        return FeatureSet(maps=maps, frame_index=idx, info=info)


@dataclass(frozen=True)
class HFAutoOptions:
    """Options of ``hf:`` backbones beyond the common ones."""

    trust_remote_code: bool = False  # run the repository's own Python code (only when asked)
    batch_size: int = 8  # frames per forward pass (image models)


def _load_config(model_id: str, revision: str | None, trust: bool) -> Any:
    tf = require_transformers()
    return tf.AutoConfig.from_pretrained(model_id, revision=revision, trust_remote_code=trust)


def _norm_stats(model_id: str, revision: str | None) -> tuple[Sequence[float], Sequence[float], str]:
    """``image_mean`` / ``image_std`` of the model's preprocessor config, else ImageNet's."""
    tf = require_transformers()
    try:
        d, _ = tf.ImageProcessingMixin.get_image_processor_dict(model_id, revision=revision)
    except (OSError, ValueError):
        d = {}
    mean, std = d.get("image_mean"), d.get("image_std")
    if mean is None or std is None:
        return IMAGENET_MEAN, IMAGENET_STD, "imagenet"
    return tuple(float(v) for v in mean), tuple(float(v) for v in std), "preprocessor_config"


def make(ctx: BuildContext, own: HFAutoOptions) -> HFAutoBackbone:
    """AutoConfig (+ ``config_overrides``) -> ``AutoModel.from_pretrained`` or seeded ``AutoModel.from_config``."""
    tf = require_transformers()
    model_id, rev, trust = ctx.spec.model_id, ctx.options.revision, bool(own.trust_remote_code)
    config = _load_config(model_id, rev, trust)
    for k, v in (ctx.options.config_overrides or {}).items():
        setattr(config, k, v)
    layout = derive_layout(config, ctx.name)
    if ctx.options.random_init:
        with seeded(ctx.seed):
            model = tf.AutoModel.from_config(config, trust_remote_code=trust)
    else:
        model = tf.AutoModel.from_pretrained(model_id, config=config, revision=rev, dtype=ctx.dtype,
                                             trust_remote_code=trust)
    if getattr(config, "vision_config", None) is not None and hasattr(model, "vision_model"):
        model = model.vision_model  # a CLIP/SigLIP-style pair: the vision tower
    model = freeze(model.to(device=ctx.device, dtype=ctx.dtype))
    mean, std, _ = _norm_stats(model_id, rev)
    return HFAutoBackbone(ctx.spec, model, config, layout, ctx.hw, ctx.device, ctx.dtype, ctx.options.resize,
                          mean, std, ctx.loaded_id, None if ctx.random else rev, batch_size=own.batch_size)


FAMILY = Family(PREFIX, make, options=OPTIONS, own=HFAutoOptions)


def resolve(model_id: str) -> tuple[BackboneSpec, Any]:
    """``hf:<model_id>`` -> (spec, factory); the spec is read from the config (no weights, no remote code)."""
    from vidprobe.backbones.builder import BackboneFactory

    name = f"{PREFIX}:{model_id}"
    if not model_id:
        raise KeyError(f"{name!r}: give a hub repo id or a local folder after '{PREFIX}:'")
    try:
        config = _load_config(model_id, None, False)
        layout = derive_layout(config, name)
        num_layers = int(getattr(vision_config(config), "num_hidden_layers", 0) or 0)
        kind = type(vision_config(config)).__name__
    except ValueError as e:  # e.g. remote code needed: the spec is completed at build
        if "trust_remote_code" not in str(e):
            raise
        layout, num_layers, kind = None, 0, "remote code"
    if layout is None:
        frame_layout, hw, nf = "derived at build", (224, 224), None
    elif layout.tubelet is None:
        frame_layout, hw, nf = "per-frame", layout.native_hw, None
    else:
        frame_layout = f"clips of {layout.clip_len} frames, tubelet {layout.tubelet}"
        hw, nf = layout.native_hw, layout.clip_len
    spec = BackboneSpec(name=name, family=PREFIX, model_id=model_id, num_layers=num_layers, default_layer=LAST,
                        input_hw=hw, num_frames=nf, frame_layout=frame_layout, extras="hf",
                        description=f"{model_id} through transformers' AutoModel ({kind})")
    spec = BackboneSpec(**{**spec.__dict__, "options": FAMILY.options})
    return spec, BackboneFactory(FAMILY, spec)


__all__ = ["HFAutoBackbone", "HFAutoOptions", "Layout", "UnsupportedModelError", "derive_layout", "resolve"]
