"""The paper's backbones at FULL size on the ``meta`` device: each configured layer taps the block the study reads
and yields the protocol's token grid and channel count (issue 10).

Every backbone of the published table is built at full size on ``meta`` (no weights, no download, no memory): the
hub-hosted architectures from :mod:`vidprobe.backbones.fullsize`, the own implementations from their modules' full
configs. A meta video of the reference input (frames of 960x540, the size both datasets are read at) goes through the
adapter's own preprocessing, clip layout and VAE encoding, then through the adapter's hooked, early-stopped
transformer pass (``run_tapped`` / ``BlockTap``, or the model's own ``stop_after``) and its token-to-grid code.
Asserted for the layer every ``configs/paper/*.yaml`` asks for (and the registered default, which must agree):

* the grid ``[N, h, w, C]`` equals the protocol's (``reference/protocol.md``, "Models and where their features are
  read"; the numbers are written here from that table, not computed with the adapters' formulas);
* the tapped tensor IS the output of the module the study reads -- on meta, the hook's tensor shares the storage of
  that module's output (e.g. WAN layer 21 = ``transformer.blocks[20]``, the release's 0-based ``blocks[20]``) -- and
  the pass stopped right after that block;
* perturbed layers (one block earlier; for readings through a final norm also the raw last block) tap other
  modules, so a mis-tap fails.

What cannot run on meta, and what stands in for it (marked again where it happens):

* ``extract()`` itself reads pixel values (``check_video``) and copies the maps to the CPU, so its inner steps are
  run here with the same calls in the same order (``preprocess``, ``clips``, ``encode_clip``, ``denoiser_forward``,
  ``token_grid`` ... are the adapters' own; the few inline lines of ``extract`` -- ``run_tapped`` and the
  token-to-grid reshape -- are repeated), for the first clip of an interleaved layout;
* PIL resize kernels need pixels: preprocessing runs with the torch ``bilinear`` kernel (same output size);
* the noised latents are ``torch.empty_like(x_0)``: ``add_noise`` is elementwise, and UniPC's looks its sigma up with
  ``nonzero()``, which meta cannot run;
* autocast is off (meta has none; it changes dtypes, not shapes); Aether's optional reconstruction pass (four more
  full-depth passes whose output has the shape of the zeros it replaces) is off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from vidprobe.backbones import aether, cogvideox, dinov2, dinov3, vggt, wan, wan22  # noqa: E402
from vidprobe.backbones import hunyuanvideo as hv  # noqa: E402
from vidprobe.backbones import ltxvideo as ltx  # noqa: E402
from vidprobe.backbones import opensora as osr  # noqa: E402
from vidprobe.backbones import fullsize as fs  # noqa: E402
from vidprobe.backbones.base import registry  # noqa: E402
from vidprobe.backbones.diffusion import _cast  # noqa: E402
from vidprobe.backbones.common import (  # noqa: E402
    LAST, resolve_layers, run_tapped, tokens_to_grid,
)
from vidprobe.pipeline.sweep import load_sweep, plan_cells  # noqa: E402

META = torch.device("meta")
FRAME_HW = (540, 960)  # protocol.md, Data: CO3Dv2 resized to 960x540; DL3DV images_4 (960x540)
TORCH_KERNEL = "bilinear"  # stands in for the PIL kernels of the paper configs (they need pixel values)
PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"


@dataclass(frozen=True)
class Reading:
    """Where the study reads a model (protocol.md), as modules of the adapter's network (``transformer`` or ``model``).

    ``grid``: frames fed -> ``(n, h, w, C)`` of one clip (None: per-frame, n = frames in the pass); ``module``: whose
    output the feature is; ``norm_of``: for a final-norm reading, the block whose output that norm receives;
    ``others``: perturbed layers and the module each must tap instead; ``clips``: (number, frames) of interleaved clips.
    """

    layer: int
    grid: dict[int | None, tuple[int, ...]]
    module: str
    norm_of: str | None = None
    others: tuple[tuple[int, str], ...] = ()
    clips: tuple[int, int] | None = None
    blocks: tuple[str, ...] = ("blocks",)  # the block lists, in layer order


PROTOCOL: dict[str, Reading] = {
    # block 20 of 30 / of 40 (0-based) = vidprobe layer 21; 81 frames 832x480 -> 21 x 30 x 52
    "wan2.1-t2v-1.3b": Reading(21, {81: (21, 30, 52, 1536)}, "blocks.20", others=((20, "blocks.19"),)),
    "wan2.1-t2v-14b": Reading(21, {81: (21, 30, 52, 5120)}, "blocks.20", others=((20, "blocks.19"),)),
    # single-stream block 20 (0-based) after the 19 double-stream blocks = layer 40; 848x480 -> 30 x 53. DL3DV feeds
    # 129 frames -> 33 latent frames (the release's extract_features.py keeps feat[:21] of them; here all are kept)
    "opensora2": Reading(40, {81: (21, 30, 53, 3072), 129: (33, 30, 53, 3072)}, "single_blocks.20",
                         others=((39, "single_blocks.19"),), blocks=("double_blocks", "single_blocks")),
    # block 20 (0-based) = layer 21; 97 frames as 2 interleaved clips of 49, 720x480 -> 13 x 30 x 45 per clip
    "cogvideox-5b-i2v": Reading(21, {97: (13, 30, 45, 3072)}, "transformer_blocks.20",
                                others=((20, "transformer_blocks.19"),), clips=(2, 49), blocks=("transformer_blocks",)),
    # Aether: 2 interleaved clips of 41 -> 11 latent frames per clip
    "aether": Reading(21, {81: (11, 30, 45, 3072)}, "transformer_blocks.20", others=((20, "transformer_blocks.19"),),
                      clips=(2, 41), blocks=("transformer_blocks",)),
    # the last block BEFORE the final LayerNorm (block 32 of ViT-H); 5 interleaved clips of 16 -> 8 x 30 x 52 per clip
    "vjepa-vith16-384": Reading(32, {76: (8, 30, 52, 1280)}, "blocks.31", others=((31, "blocks.30"), (LAST, "norm")),
                                clips=(5, 16)),
    # last: last_hidden_state = the final LayerNorm of block 24; each frame alone at 728x420 -> 30 x 52
    "dinov2-large": Reading(LAST, {None: (30, 52, 1024)}, "layernorm", norm_of="encoder.layer.23",
                            others=((24, "encoder.layer.23"), (23, "encoder.layer.22")), blocks=("encoder.layer",)),
    # feature index 24 = dec_norm of fusion block 24 = layer -1; all frames in one pass at 512x288 -> 18 x 32
    "fast3r": Reading(LAST, {None: (18, 32, 1024)}, "decoder.dec_norm", norm_of="decoder.dec_blocks.23",
                      others=((24, "decoder.dec_blocks.23"), (23, "decoder.dec_blocks.22")),
                      blocks=("decoder.dec_blocks",)),
}


# ------------------------------------------------------------------ helpers
def _main(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata  # meta tensors have storages (no data): a view shares its base's


class Spy:
    """Forward hooks on ``root``'s modules at ``paths``: call order, and each one's (kept alive) output and input.

    Registered before the adapter's taps, so they fire first on a shared module (and before its early stop).
    """

    def __init__(self, root: torch.nn.Module, paths: list[str]):
        self.modules = {p: root.get_submodule(p) for p in paths}
        self.calls: list[str] = []
        self.outputs: dict[str, torch.Tensor] = {}
        self.inputs: dict[str, torch.Tensor | None] = {}
        self._handles: list = []

    def __enter__(self) -> "Spy":
        for path, mod in self.modules.items():
            def hook(_m, args, out, path=path):
                self.calls.append(path)
                self.outputs[path] = _main(out)
                self.inputs[path] = _main(args[0]) if args else None
            self._handles.append(mod.register_forward_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()

    def is_output_of(self, t: torch.Tensor, path: str) -> bool:
        return path in self.outputs and _storage(t) == _storage(self.outputs[path])


def block_paths(root: torch.nn.Module, lists: tuple[str, ...]) -> list[str]:
    return [f"{name}.{i}" for name in lists for i in range(len(root.get_submodule(name)))]


def text(tokens: int, dim: int) -> torch.Tensor:
    """A zero prompt embedding ``[1, tokens, dim]`` on the CPU, expanded (no memory); the adapters move it to meta."""
    return torch.zeros(1, 1, dim).expand(1, tokens, dim)


def meta_video(T: int) -> torch.Tensor:
    return torch.empty(T, 3, *FRAME_HW, device=META)


# ------------------------------------------------------------- meta builds
def build_meta(name: str, kw: dict):
    """The adapter of ``name`` around full-size meta modules, built as the planner builds it
    (:func:`vidprobe.pipeline.plan_meta.meta_backbone`, with the dtype resolved for the meta device)."""
    from vidprobe.pipeline.plan_meta import meta_backbone

    return meta_backbone(name, kw, device="meta")


_BUILT: dict[tuple[str, str], object] = {}


def built(name: str, kw: dict):
    """Meta backbones are cached per (name, kwargs): building is the slow part, the passes are cheap."""
    key = (name, json.dumps(kw, sort_keys=True))
    if key not in _BUILT:
        _BUILT[key] = build_meta(name, kw)
    return _BUILT[key]


# ------------------------------------------------------- the adapters' passes
def pass_diffusion(bb, T: int, layers: list[int], timestep):
    """``DiffusionBackbone.extract``'s steps for clip 0: ``encode``'s (preprocess, clip layout, VAE latents and
    conditions) for the first clip only (the clips of a layout have one length), one hooked denoiser pass, the grid."""
    if isinstance(bb, osr.OpenSoraBackbone):  # its encode first sets the time shift of the latent grid
        bb.scheduler.set_grid(*bb.latent_grid(T))
    bb.current_clip = 0
    cl = bb.encode_clip(bb.preprocess(meta_video(T))[bb.clips(T)[0]])
    choice = bb.timestep_choices([timestep])[0]
    noisy = torch.empty_like(cl.latents, dtype=bb.dtype)  # stands in for bb.noised (module docstring)
    resolved = resolve_layers(layers, bb.num_layers, bb.spec.name)
    toks = run_tapped(bb.blocks_for(choice), resolved, lambda: bb.denoiser_forward(noisy, choice, cl))
    return toks, {r: tokens_to_grid(t, *cl.grid) for r, t in toks.items()}, None


def pass_vjepa(bb, T: int, layers: list[int], timestep=None):
    """``VJEPABackbone.extract``'s steps for the first clip."""
    frames = bb.preprocess(meta_video(T))
    x = torch.stack([frames[c] for c in bb.clips(T)[:1]]).permute(0, 2, 1, 3, 4)  # [1,3,L,H,W]
    t, h, w = bb.model.token_grid(x)
    toks = run_tapped(bb.blocks, resolve_layers(layers, bb.num_layers, bb.spec.name), lambda: bb.model(x),
                      final=bb.model.norm)
    return toks, {r: tokens_to_grid(v, t, h, w) for r, v in toks.items()}, None


def pass_dinov2(bb, T: int, layers: list[int], timestep=None):
    """``DINOv2Backbone.extract``'s steps for the first batch of frames."""
    chunk = bb.preprocess(meta_video(T)).split(bb.batch_size)[0]
    toks = run_tapped(bb.blocks, resolve_layers(layers, bb.num_layers, bb.spec.name),
                      lambda: bb.model(pixel_values=chunk), final=bb.model.layernorm)
    h, w = bb.grid
    grids = {}
    for r, t in toks.items():
        t = t[:, bb.num_prefix:, :]
        grids[r] = t.reshape(t.shape[0], h, w, t.shape[-1])
    return toks, grids, chunk.shape[0]


def pass_fast3r(bb, T: int, layers: list[int], timestep=None):
    """``Fast3RBackbone.extract``'s steps: all frames in one pass, stopped after the deepest block."""
    x = bb.preprocess(meta_video(T))
    p = bb.model.cfg.patch_size
    h, w = x.shape[-2] // p, x.shape[-1] // p
    resolved = resolve_layers(layers, bb.num_layers, bb.spec.name)
    out = bb.model(x, stop_after=max(b for _, b in resolved), seed=bb.seed, image_ids=bb.image_ids)
    toks = {r: out["final"] if r == LAST else out["blocks"][b - 1] for r, b in resolved}
    return toks, {r: t.reshape(t.shape[0], h, w, t.shape[-1]) for r, t in toks.items()}, None


PASSES = {"wan": pass_diffusion, "cogvideox": pass_diffusion, "opensora": pass_diffusion, "vjepa": pass_vjepa,
          "dinov2": pass_dinov2, "fast3r": pass_fast3r}


def root_of(bb) -> torch.nn.Module:
    return bb.transformer if hasattr(bb, "transformer") else bb.model


# ------------------------------------------------------------------ cases
def paper_cases():
    """One case per distinct (backbone, kwargs, frames, layer, timestep) of ``configs/paper``; ids list the files."""
    cases: dict[tuple, list[str]] = {}
    for path in sorted(PAPER.glob("*.yaml")):
        for cell in plan_cells(load_sweep(path)):
            e = cell.entry
            key = (e.name, json.dumps(e.kwargs, sort_keys=True), e.num_frames, cell.layer, cell.timestep)
            cases.setdefault(key, []).append(path.stem.split("_")[-1])
    return [pytest.param(*k, id=f"{k[0]}-{k[2]}f-L{k[3]}-{'+'.join(v)}") for k, v in sorted(cases.items(), key=str)]


def test_every_table_model_has_a_paper_config():
    assert {c.values[0] for c in paper_cases()} == set(PROTOCOL)


@pytest.mark.parametrize("name,kwargs,num_frames,layer,timestep", paper_cases())
def test_paper_config_taps_the_reference_block(name, kwargs, num_frames, layer, timestep):
    reading = PROTOCOL[name]
    spec = registry()[name][0]
    assert layer == reading.layer, f"{name}: the paper config reads layer {layer}, the reference layer {reading.layer}"
    assert spec.default_layer == reading.layer, f"{name}: registered default layer {spec.default_layer}"
    T = num_frames or spec.num_frames
    bb = built(name, json.loads(kwargs))
    assert bb.num_layers == spec.num_layers, f"{name}: the full-size model has {bb.num_layers} blocks"
    root = root_of(bb)
    watch = block_paths(root, reading.blocks) + [reading.module] + [m for _, m in reading.others]
    layers = [reading.layer] + [lay for lay, _ in reading.others]
    with Spy(root, list(dict.fromkeys(watch))) as spy, torch.inference_mode():  # extract() runs in inference mode
        toks, grids, extra = PASSES[spec.family](bb, T, layers, timestep)

    # the grid [N, h, w, C] of the protocol (one clip / the frames of the pass)
    assert T in reading.grid or None in reading.grid, f"{name}: the protocol has no grid for {T} frames"
    expected = reading.grid[T] if None not in reading.grid else (extra if extra else T, *reading.grid[None])
    assert tuple(grids[reading.layer].shape) == tuple(expected), f"{name}: grid {tuple(grids[reading.layer].shape)}"
    assert grids[reading.layer].is_meta
    if reading.clips is not None:
        assert [len(c) for c in bb.clips(T)] == [reading.clips[1]] * reading.clips[0]

    # the tapped tensor is the output of the module the study reads; the pass stopped right after its block
    assert spy.is_output_of(toks[reading.layer], reading.module), \
        f"{name}: layer {reading.layer} is not the output of {reading.module}"
    if reading.norm_of is not None:
        x = spy.inputs[reading.module]
        assert x is not None and _storage(x) == _storage(spy.outputs[reading.norm_of])
    ran = [c for c in spy.calls if c in set(block_paths(root, reading.blocks))]
    assert ran[-1] == (reading.norm_of or reading.module), f"{name}: the pass ran on after {ran[-1]}"
    # perturbed layers tap other modules: a mis-tap would fail the identity check above
    for lay, module in reading.others:
        assert spy.is_output_of(toks[lay], module), f"{name}: layer {lay} is not {module}"
        assert not spy.is_output_of(toks[lay], reading.module), f"{name}: layer {lay} reads {reading.module} too"


def test_vggt_default_layer_taps_the_last_aggregator_block():
    """VGGT-1B (registered as a backbone, not in the table): layer -1 = block 24's ``frame || global`` patch tokens.

    960x540 frames -> VGGT's crop preprocessing 518x294 -> 21 x 37 patches; C = 2 x 1024 (upstream's aggregator
    concatenates the frame and global attention outputs). ``preprocess`` resizes with PIL, so the meta frames take
    the size of the adapter's own ``vggt_input_hw``; the token selection is ``VGGTBackbone.extract``'s.
    """
    spec = registry()["vggt-1b"][0]
    bb = vggt.VGGTBackbone(spec, fs.on_meta(vggt.VGGTModel, cfg=vggt.FULL), META, torch.float32, None)
    assert spec.default_layer == LAST and bb.num_layers == spec.num_layers == 24
    cfg, agg = bb.model.cfg, bb.model.aggregator
    (rh, rw), crop = vggt.vggt_input_hw(FRAME_HW, cfg.input_width, cfg.patch_size)
    S = 4
    x = torch.empty(S, 3, min(rh, crop), rw, device=META)
    h, w = x.shape[-2] // cfg.patch_size, x.shape[-1] // cfg.patch_size
    paths = block_paths(agg, ("frame_blocks", "global_blocks"))
    resolved = resolve_layers([LAST, 23], bb.num_layers, spec.name)
    with Spy(agg, paths) as spy, torch.inference_mode():
        outs = agg(x[None], stop_after=max(b for _, b in resolved))
    maps = {}
    for r, b in resolved:
        t = outs[b - 1][0, :, agg.patch_start_idx:]
        maps[r] = t.reshape(t.shape[0], h, w, t.shape[-1])
    assert tuple(maps[LAST].shape) == (S, 21, 37, 2048)
    assert spy.calls[-2:] == ["frame_blocks.23", "global_blocks.23"]  # stopped right after block 24
    assert _storage(maps[LAST]) != _storage(maps[23])  # layer 23 is another block's output
    assert spy.calls.index("global_blocks.22") < spy.calls.index("frame_blocks.23")


def test_fullsize_configs_agree_with_the_adapters():
    """The hub facts give the depth and width each adapter registers (a wrong dict or VARIANTS entry fails here)."""
    reg = registry()
    for name in ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b"):
        cfg, arch = fs.fullsize(name, "transformer"), wan.VARIANTS[name]
        width = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        assert (cfg["num_layers"], width) == (arch["layers"], arch["dim"])
        assert reg[name][0].num_layers == cfg["num_layers"]
    cog = fs.fullsize("cogvideox-5b-i2v", "transformer")
    arch = cogvideox.VARIANTS["cogvideox-5b-i2v"]
    assert (cog["num_layers"], cog["num_attention_heads"] * cog["attention_head_dim"]) == (arch["layers"], arch["dim"])
    ae = fs.fullsize("aether", "transformer")
    assert (ae["num_layers"], ae["num_attention_heads"] * ae["attention_head_dim"]) == (aether.NUM_LAYERS, aether.DIM)
    assert ae["out_channels"] - 16 - 16 == aether.RAYMAP_CHANNELS == ae["in_channels"] - ae["out_channels"] - 16
    ours = dinov2.full_config("large", registers=False).to_dict()
    assert {k: ours[k] for k in fs.DINOV2_LARGE} == fs.DINOV2_LARGE
    with pytest.raises(KeyError, match="no full-size config"):
        fs.fullsize("fast3r", "transformer")
    with pytest.raises(KeyError, match="no full-size 'config'"):
        fs.fullsize("aether", "config")


# ------------------------------------------------- families added after the paper (issue 13)
#: published parameter counts are rounded ("27B", "13B", "2B", "21M"): a meta build must come within this fraction
#: (WAN2.2-A14B's two experts are 28.6B against the README's "27B"; every other model is within 4%)
PARAM_TOLERANCE = 0.07


@dataclass(frozen=True)
class NewReading:
    """The registered default reading of a new family at full size: frames fed, ``[n, h, w, C]`` of one clip (per-frame
    models: of the frames in the pass), and the module (of the network that serves the default timestep) tapped."""

    frames: int
    grid: tuple[int, int, int, int]
    module: str


#: 9 frames instead of the registered 81 keep the meta VAE passes short: the spatial grid, the channels and the tapped
#: block are what is checked here (the frame layouts are tests/test_new_families.py's, on the real VAEs)
NEW_READINGS = {
    "wan2.2-ti2v-5b": NewReading(9, (3, 22, 40, 3072), "blocks.20"),  # 1280x704 / (16 x 2)
    "wan2.2-t2v-a14b": NewReading(9, (3, 30, 52, 5120), "blocks.20"),  # of transformer_2 (index 749: t = 502 < 875)
    "hunyuanvideo": NewReading(9, (3, 34, 60, 3072), "single_transformer_blocks.20"),  # 960x544 / 16
    "ltx-video": NewReading(9, (2, 17, 30, 2048), "transformer_blocks.19"),  # 960x544 / 32, (9 - 1) / 8 + 1
    "dinov3-vitl16": NewReading(4, (4, 30, 52, 1024), "norm"),  # 832x480 / 16
}

_NETS: dict[str, dict[str, torch.nn.Module]] = {}


def new_nets(name: str) -> dict[str, torch.nn.Module]:
    """The full-size networks of a new family on meta (cached): part -> module, from :mod:`vidprobe.backbones.fullsize`."""
    if name not in _NETS:
        if name.startswith("dinov3-"):
            config = transformers.DINOv3ViTConfig(**fs.fullsize(name, "config"))
            _NETS[name] = {"model": fs.on_meta(transformers.DINOv3ViTModel, config=config)}
        else:
            tr, vae = {"wan2.2-ti2v-5b": (diffusers.WanTransformer3DModel, diffusers.AutoencoderKLWan),
                       "wan2.2-t2v-a14b": (diffusers.WanTransformer3DModel, diffusers.AutoencoderKLWan),
                       "hunyuanvideo": (diffusers.HunyuanVideoTransformer3DModel, diffusers.AutoencoderKLHunyuanVideo),
                       "ltx-video": (diffusers.LTXVideoTransformer3DModel, diffusers.AutoencoderKLLTXVideo)}[name]
            parts = fs.FULLSIZE[name]
            _NETS[name] = {p: fs.on_meta(vae if p == "vae" else tr, **fs.fullsize(name, p)) for p in parts}
    return _NETS[name]


def new_meta_adapter(name: str):
    """The adapter of a new family around its full-size meta networks (the registered input size, bf16 weights)."""
    spec, nets, dt = registry()[name][0], new_nets(name), torch.bfloat16
    if name.startswith("dinov3-"):
        return dinov3.DINOv3Backbone(spec, nets["model"].to(dt), spec.input_hw, META, dt, batch_size=4,
                                     resize=TORCH_KERNEL)
    common = dict(vae_dtype=torch.float32, resize=TORCH_KERNEL)
    tr = _cast(nets["transformer"], dt)
    if spec.family == "wan22":
        two = "transformer_2" in nets
        extra = {"transformer_2": _cast(nets["transformer_2"], dt), "boundary_ratio": fs.WAN22_A14B_BOUNDARY_RATIO} \
            if two else {}
        return wan22.Wan22Backbone(spec, tr, nets["vae"], wan22.make_scheduler(name), text(*fs.WAN21_TEXT),
                                   spec.input_hw, META, dt, flow_schedule="current",
                                   expand_timesteps=wan22.VARIANTS[name]["expand_timesteps"], **extra, **common)
    if spec.family == "hunyuanvideo":
        return hv.HunyuanVideoBackbone(spec, tr, nets["vae"], hv.make_scheduler(), text(8, 4096), spec.input_hw, META,
                                       dt, pooled_embeds=torch.zeros(1, 768), **common)
    return ltx.LTXVideoBackbone(spec, tr, nets["vae"], ltx.make_scheduler(), text(8, 4096), spec.input_hw, META, dt,
                                **common)


def pass_dinov3(bb, T: int, layers: list[int], timestep=None):
    """``DINOv3Backbone.extract``'s steps for the first batch of frames."""
    chunk = bb.preprocess(meta_video(T)).split(bb.batch_size)[0]
    toks = run_tapped(bb.blocks, resolve_layers(layers, bb.num_layers, bb.spec.name),
                      lambda: bb.model(pixel_values=chunk), final=bb.model.norm)
    return toks, {r: bb.patch_tokens(t) for r, t in toks.items()}, chunk.shape[0]


@pytest.mark.parametrize("name", sorted(fs.PUBLISHED_PARAMS))
def test_new_family_parameter_counts(name):
    """The full-size configs written out in fullsize.py have the published sizes (model cards / READMEs)."""
    published, what, source = fs.PUBLISHED_PARAMS[name]
    nets = new_nets(name)
    count = sum(p.numel() for part in what.split(" + ") for p in nets[part].parameters())
    assert abs(count - published) / published < PARAM_TOLERANCE, f"{name}: {count:,} parameters, {source}"


@pytest.mark.parametrize("name", sorted(NEW_READINGS))
def test_new_family_default_layer_at_full_size(name):
    """The registered default layer and timestep of a new family tap the documented block with the documented grid."""
    reading, spec = NEW_READINGS[name], registry()[name][0]
    bb = new_meta_adapter(name)
    assert bb.num_layers == spec.num_layers
    layer, timestep = spec.default_layer, spec.default_timestep
    if timestep is None:
        root, run = bb.model, pass_dinov3
    else:
        choice = bb.timestep_choices([timestep])[0]
        root, run = (bb.expert(choice) if hasattr(bb, "expert") else bb.transformer), pass_diffusion
    with Spy(root, [reading.module]) as spy, torch.inference_mode():
        toks, grids, _ = run(bb, reading.frames, [layer], timestep)
    assert tuple(grids[layer].shape) == reading.grid and grids[layer].is_meta
    assert spy.is_output_of(toks[layer], reading.module), f"{name}: layer {layer} is not {reading.module}"
    if name == "wan2.2-t2v-a14b":
        assert root is bb.transformer_2 and bb.expert_name(choice) == "transformer_2"
