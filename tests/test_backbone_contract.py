"""The registry-wide backbone contract, in the manner of timm's test over every registered model.

Every registered backbone is built tiny (the same classes at a tiny seeded random config, no weights) and extracts
its default layer and the last layer (``-1``) of one small synthetic clip at its default timestep; the FeatureSet
must keep the contract of ``vidprobe.backbones.base`` (DESIGN.md, "Backbone"), checked by :func:`check_contract`:

* exactly the requested (layer, timestep) keys; every map ``[N, h, w, C]`` float32 on the CPU, finite, ``(h, w)``
  equal to ``info["grid"]``, one ``N`` for all maps;
* ``frame_index`` long, one entry per input frame, each in ``[0, N)``, and every map serves some frame (maps made only
  of padding are dropped);
* ``info`` holds ``input_hw``, ``grid`` and ``layout`` (= the spec's frame layout); a model reports its
  ``model_id`` and, built with random weights, reports none;
* the same build (same seed) gives the same numbers.

Tiny models have fewer blocks than the real ones (3 for most families), so a registered default layer deeper than
the tiny model (the diffusion models' 21 / 40, V-JEPA's 32) is read at the tiny model's last block instead; that the
full-size models tap the registered default block is ``tests/test_fullsize_meta.py``'s job. No family is skipped.
A deliberately broken extract (one defect at a time) must fail the check.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import textwrap

import pytest
import torch

from vidprobe.backbones import family_modules, registry
from vidprobe.backbones.base import FeatureSet
from vidprobe.backbones.builder import BackboneFactory, BuildOptions
from vidprobe.data.synthetic import generate_clip

NAMES = sorted(registry())
REQUIRED_INFO = ("input_hw", "grid", "layout")


@pytest.fixture(scope="module")
def clip():
    return generate_clip("orbit", seed=0, num_frames=5, hw=(32, 48))


def tiny_kwargs(spec) -> dict:
    """``tiny`` (and the CPU) where the backbone takes them: controls without weights take neither."""
    opts = spec.options or {}
    return {k: v for k, v in (("tiny", True), ("device", "cpu")) if k in opts}


def contract_layers(spec, bb) -> list[int]:
    """The default layer (clamped to the tiny model's depth, see the module docstring) and the last layer."""
    default = spec.default_layer
    if default != -1 and default > bb.num_layers:
        default = bb.num_layers
    return sorted({default, -1})


def contract_timesteps(spec) -> tuple:
    return (None,) if spec.default_timestep is None else (spec.default_timestep,)


def check_contract(fs, spec, T: int, layers, timesteps, random_weights: bool) -> None:
    """Assert the FeatureSet contract (module docstring) for ``fs`` of a ``T``-frame clip."""
    assert isinstance(fs, FeatureSet), f"{spec.name}: extract returned {type(fs).__name__}"
    want = {(lay, t) for lay in layers for t in timesteps}
    assert set(fs.maps) == want, f"{spec.name}: keys {sorted(fs.maps, key=str)}, requested {sorted(want, key=str)}"
    for key in REQUIRED_INFO:
        assert key in fs.info, f"{spec.name}: info lacks {key!r} (has {sorted(fs.info)})"
    assert fs.info["layout"] == spec.frame_layout, f"{spec.name}: info layout {fs.info['layout']!r}"
    grid = tuple(int(x) for x in fs.info["grid"])
    ns = set()
    for key, m in fs.maps.items():
        assert m.dim() == 4 and min(m.shape) > 0, f"{spec.name} {key}: shape {tuple(m.shape)}"
        assert m.dtype == torch.float32 and m.device.type == "cpu", f"{spec.name} {key}: {m.dtype} on {m.device}"
        assert torch.isfinite(m).all(), f"{spec.name} {key}: non-finite features"
        assert tuple(m.shape[1:3]) == grid, f"{spec.name} {key}: map grid {tuple(m.shape[1:3])}, info grid {grid}"
        ns.add(m.shape[0])
    assert len(ns) == 1, f"{spec.name}: maps disagree on N: {sorted(ns)}"
    (n,) = ns
    fi = fs.frame_index
    assert fi.dtype == torch.long and tuple(fi.shape) == (T,), f"{spec.name}: frame_index {fi.dtype} {tuple(fi.shape)}"
    assert int(fi.min()) >= 0 and int(fi.max()) < n, f"{spec.name}: frame_index outside [0, {n})"
    assert set(fi.tolist()) == set(range(n)), f"{spec.name}: maps {sorted(set(range(n)) - set(fi.tolist()))} serve no frame"
    if spec.family != "control":
        assert "model_id" in fs.info, f"{spec.name}: info lacks 'model_id'"
    if random_weights and "model_id" in fs.info:
        assert fs.info["model_id"] is None, f"{spec.name}: random weights report model_id {fs.info['model_id']!r}"


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_backbone_keeps_the_contract(name, clip):
    spec, factory = registry()[name]
    kw = tiny_kwargs(spec)
    bb = factory(**kw)
    assert bb.spec.name == name and bb.spec.frame_layout == spec.frame_layout
    layers, ts = contract_layers(spec, bb), contract_timesteps(spec)
    fs = bb.extract(clip.images, layers, ts, clip=clip)
    check_contract(fs, spec, clip.num_frames, layers, ts, random_weights=spec.family == "control" or "tiny" in kw)
    again = factory(**kw).extract(clip.images, layers, ts, clip=clip)  # same build, same seed -> same numbers
    for key, m in fs.maps.items():
        assert torch.equal(m, again.maps[key]), f"{name} {key}: a rebuild with the same seed gives other features"
    assert torch.equal(fs.frame_index, again.frame_index)


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_backbone_declares_its_options(name):
    """The spec declares the build options; the factory's signature and its refusals follow the declaration."""
    spec, factory = registry()[name]
    assert isinstance(factory, BackboneFactory), f"{name}: registered outside a Family (no declared options)"
    assert spec.options is not None and spec.options == factory.options
    params = inspect.signature(factory).parameters
    assert {k: p.default for k, p in params.items()} == spec.options
    common = {f.name for f in BuildOptions.__dataclass_fields__.values()}
    own = [k for k in spec.options if k not in common]
    assert len(set(own)) == len(own)
    with pytest.raises(TypeError, match="no_such_option"):
        factory(no_such_option=1)


# ------------------------------------------------------------------ the check can fail
def _broken_variants(fs: FeatureSet) -> dict[str, FeatureSet]:
    key = next(iter(fs.maps))
    m = fs.maps[key]
    nan = m.clone()
    nan.view(-1)[0] = float("nan")
    info_no_layout = {k: v for k, v in fs.info.items() if k != "layout"}
    return {
        "missing key": FeatureSet({k: v for k, v in fs.maps.items() if k != key}, fs.frame_index, fs.info),
        "extra key": FeatureSet({**fs.maps, (99, None): m}, fs.frame_index, fs.info),
        "fp16 maps": FeatureSet({k: v.half() for k, v in fs.maps.items()}, fs.frame_index, fs.info),
        "NaN": FeatureSet({**fs.maps, key: nan}, fs.frame_index, fs.info),
        "short frame_index": FeatureSet(fs.maps, fs.frame_index[:-1], fs.info),
        "int32 frame_index": FeatureSet(fs.maps, fs.frame_index.int(), fs.info),
        "unused map": FeatureSet(fs.maps, torch.zeros_like(fs.frame_index), fs.info),
        "no layout": FeatureSet(fs.maps, fs.frame_index, info_no_layout),
        "wrong layout": FeatureSet(fs.maps, fs.frame_index, {**fs.info, "layout": "interleaved"}),
        "wrong grid": FeatureSet(fs.maps, fs.frame_index, {**fs.info, "grid": (1, 1)}),
        "claims weights": FeatureSet(fs.maps, fs.frame_index, {**fs.info, "model_id": "facebook/dinov2-large"}),
    }


def test_a_broken_extract_fails_the_contract(clip):
    spec, factory = registry()["dinov2-small"]
    bb = factory(tiny=True, device="cpu")
    layers, ts = contract_layers(spec, bb), contract_timesteps(spec)
    fs = bb.extract(clip.images, layers, ts)
    check_contract(fs, spec, clip.num_frames, layers, ts, random_weights=True)  # the intact one passes
    for what, broken in _broken_variants(fs).items():
        with pytest.raises(AssertionError):
            check_contract(broken, spec, clip.num_frames, layers, ts, random_weights=True)
            pytest.fail(f"the contract check accepted a FeatureSet with {what}")

    class BrokenExtract:  # a whole adapter whose extract drops the last frame's entry
        def __init__(self, inner):
            self.spec, self.inner = inner.spec, inner

        def extract(self, video, layers, timesteps=(None,), clip=None):
            out = self.inner.extract(video, layers, timesteps, clip)
            return FeatureSet(out.maps, out.frame_index[:-1], out.info)

    with pytest.raises(AssertionError, match="frame_index"):
        check_contract(BrokenExtract(bb).extract(clip.images, layers, ts), spec, clip.num_frames, layers, ts, True)


# ------------------------------------------------------------------ registration by discovery
def test_every_hook_module_is_discovered_and_controls_come_last():
    import vidprobe.backbones as pkg

    mods = family_modules()
    assert mods[-1] == "vidprobe.backbones.controls"
    assert mods[:-1] == sorted(mods[:-1])
    for name in mods:
        assert callable(importlib.import_module(name).register_backbones)
    registered_by = {type(f).__module__ for _, f in registry().values()}
    assert registered_by == {"vidprobe.backbones.builder"}
    families = {f.family.make.__module__ for _, f in registry().values()}
    assert families <= set(mods) and len(families) == len(mods)  # each hook module registers something
    assert not hasattr(pkg, "FAMILY_MODULES")  # no hand-kept list to edit


def test_discovery_reads_source_and_imports_only_hook_modules(tmp_path, monkeypatch):
    """A new backbone module is found by its ``register_backbones``; a module without one is never imported."""
    root = tmp_path / "pkgx"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "zeta.py").write_text("def register_backbones():\n    pass\n")
    (root / "alpha.py").write_text("REGISTER_ORDER = 1\n\ndef register_backbones():\n    pass\n")
    (root / "mid.py").write_text(textwrap.dedent("""\
        def register_backbones():
            pass
        """))
    (root / "noisy_cli.py").write_text("raise RuntimeError('imported although it registers nothing')\n")
    (root / "helper.py").write_text("def helper():\n    return 'register_backbones is only mentioned here'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for m in [m for m in sys.modules if m == "pkgx" or m.startswith("pkgx.")]:
        monkeypatch.delitem(sys.modules, m)
    assert family_modules("pkgx", [str(root)]) == ["pkgx.mid", "pkgx.zeta", "pkgx.alpha"]
    assert "pkgx.noisy_cli" not in sys.modules and "pkgx.helper" not in sys.modules


#: the one file a new backbone needs (docs/ARCHITECTURE.md, "How to add a backbone"): its own options, adapter,
#: make() and registration hook; the skeleton does the rest
EXAMPLE = '''
"""Tiny conv net: per-frame features of two strided conv blocks (an example family)."""

from dataclasses import dataclass

import torch

from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.backbones.builder import BuildContext, Family
from vidprobe.backbones.common import per_frame_index, resize_video, start_extract
from vidprobe.backbones.loading import freeze


@dataclass(frozen=True)
class ConvOptions:
    channels: int = 8  # the family's own build option


class ConvBackbone:
    def __init__(self, spec, net, input_hw, device):
        self.spec, self.net, self.input_hw, self.device = spec, net, input_hw, device
        self.num_layers = len(net)

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(None,), clip=None) -> FeatureSet:
        resolved = start_extract(self, video, layers, timesteps)  # video, timesteps, layers checked
        x, outs = resize_video(video.to(self.device), self.input_hw), []
        for block in self.net:
            x = block(x)
            outs.append(x)
        maps = {(req, None): outs[b - 1].permute(0, 2, 3, 1).float().cpu() for req, b in resolved}
        grid = tuple(outs[-1].shape[-2:])
        info = {"input_hw": self.input_hw, "grid": grid, "layout": self.spec.frame_layout, "model_id": None}
        return FeatureSet(maps, per_frame_index(video.shape[0]), info)


def make(ctx: BuildContext, own: ConvOptions) -> ConvBackbone:
    with ctx.seeded():
        net = torch.nn.Sequential(torch.nn.Conv2d(3, own.channels, 4, 4), torch.nn.Conv2d(own.channels, 8, 1))
    return ConvBackbone(ctx.spec, freeze(net.to(ctx.device)), ctx.input_hw(), ctx.device)


FAMILY = Family("tinyconv", make, options=("device", "height", "width", "seed"), own=ConvOptions)


def register_backbones() -> None:
    FAMILY.register(BackboneSpec(name="tinyconv", family="tinyconv", model_id=None, num_layers=2, default_layer=-1,
                                 input_hw=(32, 48), num_frames=None, frame_layout="per-frame"))
'''


def test_the_documented_one_file_backbone_works(tmp_path, monkeypatch, clip):
    from vidprobe.backbones import base

    root = tmp_path / "newfam"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "tinyconv.py").write_text(EXAMPLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    (mod,) = family_modules("newfam", [str(root)])
    importlib.import_module(mod).register_backbones()
    spec, factory = registry()["tinyconv"]
    assert spec.options == {"device": None, "height": None, "width": None, "seed": 0, "channels": 8}
    assert base.unknown_options("tinyconv", {"channels": 4, "tiny": True}) == ["tiny"]
    bb = factory(channels=4, height=16, width=24)
    layers = contract_layers(spec, bb)
    check_contract(bb.extract(clip.images, layers), spec, clip.num_frames, layers, (None,), random_weights=True)
    with pytest.raises(ValueError, match="height and width"):
        factory(height=16)


def test_listing_imports_no_heavy_library():
    import subprocess

    code = ("import sys, vidprobe.backbones as b; b.registry(); "
            "print(sorted(m for m in ('transformers', 'diffusers', 'typer', 'vidprobe.cli') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out
