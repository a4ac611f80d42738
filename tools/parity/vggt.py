#!/usr/bin/env python
"""Golden fixture for vidprobe's own VGGT (``vidprobe.backbones.vggt``).

Run (never in CI)::

    /work/upenv/bin/python tools/parity/vggt.py --upstream /work/up/vggt \
        [--release /work/up/vggt-release] [--keys-out tests/fixtures/vggt_keys.json]

``--upstream`` is a checkout holding upstream's ``vggt/`` package
(facebookresearch/vggt; the fork Lightmeter30/vggt at 44b3afb holds it
unchanged). The script imports upstream's own ``VGGT`` class and runs its own
``forward`` at a tiny config:

* the constructors the ``VGGT`` class calls are wrapped with
  ``functools.partial`` to shrink them (aggregator depth 4 / 2 heads; camera
  head trunk depth 1 / 2 heads; DPT heads with 16 features, out channels
  [8, 16, 32, 32] on blocks [0, 1, 2, 3]);
* the DINOv2 patch embedder the aggregator builds (``vit_large``, named by
  ``patch_embed="dinov2_vitl14_reg"``) is replaced by upstream's own
  ``DinoVisionTransformer`` built exactly as ``vit_large`` builds it
  (``NestedTensorBlock`` with ``MemEffAttention``, MLP ratio 4, the
  aggregator's kwargs: 4 registers, antialiased bicubic position
  interpolation, offset 0, LayerScale 1.0) but with width 32, 2 blocks, 2 heads.

Every parameter is then re-drawn from a seeded generator (so that every path
matters: LayerScale ~ U(0.5, 1), tokens ~ N(0, 0.5^2), ...). Saved (fp32):
the weights under upstream's key names, the input frames, the DINO patch
tokens, every aggregator block output (frame || global), the camera head's
pose encoding for each refinement iteration, depth / depth_conf and
world_points / world_points_conf, the release's label post-processing
(``pose_encoding_to_extri_intri`` and ``unproject_depth_map_to_point_map``),
the aggregator outputs under CPU bf16 autocast, and (with ``--release``) the
release's ``load_and_preprocess_images`` on two seeded images.

Upstream's attention never uses xFormers in this tree (``XFORMERS_AVAILABLE =
False`` is hard-coded in ``vggt/layers/attention.py`` and ``block.py``):
``MemEffAttention`` falls back to ``Attention.forward``, i.e. PyTorch's
``scaled_dot_product_attention``; nothing is substituted there.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "parity" / "vggt.safetensors"
UPSTREAM_REPO = "facebookresearch/vggt (vggt/ tree unchanged in the fork Lightmeter30/vggt)"
RELEASE_REPO = "zxhuang1698/VidFM3D"

# vidprobe.backbones.vggt.TINY, field by field (the test checks both agree).
CONFIG = {
    "img_size": 42, "patch_size": 14, "embed_dim": 32, "depth": 4, "num_heads": 2, "mlp_ratio": 4.0,
    "num_register_tokens": 4, "rope_freq": 100.0, "dino_dim": 32, "dino_depth": 2, "dino_heads": 2,
    "camera_heads": 2, "camera_trunk_depth": 1, "dpt_features": 16, "dpt_out_channels": [8, 16, 32, 32],
    "dpt_layers": [0, 1, 2, 3],
}
FRAMES, HEIGHT, WIDTH = 3, 28, 42
PRE_STRIDE = 4  # the release-preprocessing outputs are stored every 4th row/column


def git_commit(path: Path) -> str:
    """``HEAD`` of a git checkout; an extracted archive has none (pass ``--commit`` then)."""
    try:
        cmd = ["git", "-C", str(path), "rev-parse", "HEAD"]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def import_upstream(upstream: Path):
    """Put the checkout first on ``sys.path``; returns upstream's ``VGGT`` class (unpatched)."""
    here = Path(__file__).resolve().parent  # this script is itself named vggt.py: keep it off the path
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(upstream))
    import vggt.models.vggt as mv

    if not Path(mv.__file__).resolve().is_relative_to(upstream.resolve()):
        raise SystemExit(f"imported vggt from {mv.__file__}, not from {upstream}")
    return mv.VGGT


def build_upstream(upstream: Path):
    """Upstream ``VGGT`` at the tiny config (see the module docstring), plus the utils modules used."""
    import_upstream(upstream)
    import vggt.models.aggregator as ma
    import vggt.models.vggt as mv
    from vggt.heads.camera_head import CameraHead
    from vggt.heads.dpt_head import DPTHead
    from vggt.layers import MemEffAttention, NestedTensorBlock
    from vggt.layers.vision_transformer import DinoVisionTransformer
    from vggt.utils import geometry, pose_enc

    c = CONFIG

    def tiny_vit_large(patch_size=16, num_register_tokens=0, **kwargs):
        return DinoVisionTransformer(
            patch_size=patch_size, embed_dim=c["dino_dim"], depth=c["dino_depth"], num_heads=c["dino_heads"],
            mlp_ratio=4, block_fn=functools.partial(NestedTensorBlock, attn_class=MemEffAttention),
            num_register_tokens=num_register_tokens, **kwargs,
        )

    ma.vit_large = tiny_vit_large
    mv.Aggregator = functools.partial(ma.Aggregator, depth=c["depth"], num_heads=c["num_heads"],
                                      mlp_ratio=c["mlp_ratio"], num_register_tokens=c["num_register_tokens"],
                                      rope_freq=int(c["rope_freq"]))
    mv.CameraHead = functools.partial(CameraHead, trunk_depth=c["camera_trunk_depth"], num_heads=c["camera_heads"])
    mv.DPTHead = functools.partial(DPTHead, features=c["dpt_features"], out_channels=list(c["dpt_out_channels"]),
                                   intermediate_layer_idx=list(c["dpt_layers"]))
    model = mv.VGGT(img_size=c["img_size"], patch_size=c["patch_size"], embed_dim=c["embed_dim"], enable_track=False)
    return model.eval(), geometry, pose_enc


def _fan_in(name: str, shape: tuple[int, ...]) -> float:
    """Fan-in scale of a weight: ``[out, in, *k]``; the DPT heads' ConvTranspose2d (``resize_layers.0/1``)
    store ``[in, out, k, k]`` and get ``in * k * k / 4``."""
    if "resize_layers.0" in name or "resize_layers.1" in name:
        return shape[0] * math.prod(shape[2:]) / 4
    return shape[1] * math.prod(shape[2:])


def seed_weights(model: torch.nn.Module, seed: int) -> None:
    """Re-draw every parameter from one seeded generator (names sorted), scaled so every path carries signal."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "gamma":  # LayerScale
                v = 0.5 + 0.5 * torch.rand(p.shape, generator=g)
            elif p.dim() == 1 and leaf == "weight":  # LayerNorm scale
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            elif leaf == "bias":
                v = 0.1 * torch.randn(p.shape, generator=g)
            elif p.dim() >= 2 and leaf == "weight":
                v = torch.randn(p.shape, generator=g) / math.sqrt(_fan_in(name, tuple(p.shape)))
            else:  # tokens, position table, mask token
                v = 0.5 * torch.randn(p.shape, generator=g)
            p.copy_(v)
        # the last conv of each DPT head: small, so exp / expm1 stay in a sane range
        for head in ("depth_head", "point_head"):
            params[f"{head}.scratch.output_conv2.2.weight"].mul_(0.3)
        # camera head: smaller steps and positive fields of view (0.25 per refinement step), so the
        # last iteration's fovs lie in (0, pi) and the labels' intrinsics are finite
        params["camera_head.pose_branch.fc2.weight"].mul_(0.2)
        params["camera_head.pose_branch.fc2.bias"][7:] = 0.25


def seeded_images(seed: int) -> torch.Tensor:
    """``[1, S, 3, H, W]`` in [0,1], quantised to k/255 like decoded 8-bit frames."""
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, 256, (1, FRAMES, 3, HEIGHT, WIDTH), generator=g).float() / 255.0


def run_fp32(model, geometry, pose_enc_mod, images: torch.Tensor) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    captured = {}
    h = model.aggregator.patch_embed.register_forward_hook(lambda m, a, o: captured.__setitem__("pt", o))
    with torch.no_grad():
        pred = model(images)
        h.remove()
        tokens, ps = model.aggregator(images)
    assert ps == 1 + CONFIG["num_register_tokens"]
    out["patch_embed.x_norm_patchtokens"] = captured["pt"]["x_norm_patchtokens"]
    for i, t in enumerate(tokens):
        out[f"aggregator.{i}"] = t
    for i, p in enumerate(pred["pose_enc_list"]):
        out[f"camera_head.pose_enc.{i}"] = p
    for k in ("depth", "depth_conf", "world_points", "world_points_conf"):
        out[k] = pred[k]
    # the release's label post-processing (vidfm3d/data/processing/*/extract_points.py)
    ext, K = pose_enc_mod.pose_encoding_to_extri_intri(pred["pose_enc"], images.shape[-2:])
    pts = geometry.unproject_depth_map_to_point_map(pred["depth"][0].numpy(), ext[0].numpy(), K[0].numpy())
    out["labels.extrinsic"] = ext[0]
    out["labels.intrinsic"] = K[0]
    out["labels.world_points_from_depth"] = torch.from_numpy(np.ascontiguousarray(pts)).float()
    return out


def run_bf16_autocast(model, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The release's bf16 labelling on CPU: the aggregator under bf16 autocast, then the heads without it.

    On CUDA ``VGGT.forward`` wraps its heads in ``torch.cuda.amp.autocast(enabled=False)``; that does not
    switch CPU autocast off, so here the heads are called outside the autocast block instead, on the
    aggregator's outputs as they come (fp32: see the recorded dtypes).
    """
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            tokens, ps = model.aggregator(images)
        poses = model.camera_head(tokens)
        depth, depth_conf = model.depth_head(tokens, images=images, patch_start_idx=ps)
    out = {f"autocast_bf16.aggregator.{i}": t for i, t in enumerate(tokens)}
    out.update({"autocast_bf16.pose_enc": poses[-1], "autocast_bf16.depth": depth,
                "autocast_bf16.depth_conf": depth_conf})
    return out, [str(t.dtype) for t in tokens]


def release_preprocessing(release: Path, seed: int) -> tuple[dict[str, torch.Tensor], dict]:
    """The release's ``load_and_preprocess_images`` on a wide and a tall seeded 8-bit image."""
    from PIL import Image

    # torchvision is not installed here; the release uses only transforms.ToTensor, which maps an
    # 8-bit RGB PIL image to float [3, H, W] = value / 255. Stubbed with exactly that.
    class ToTensor:
        def __call__(self, img):
            return torch.from_numpy(np.array(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255.0)

    tv = types.ModuleType("torchvision")
    tv.transforms = types.SimpleNamespace(ToTensor=ToTensor)
    sys.modules.setdefault("torchvision", tv)
    path = release / "vidfm3d" / "vggt" / "utils" / "load_fn.py"
    spec = importlib.util.spec_from_file_location("release_load_fn", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    g = torch.Generator().manual_seed(seed + 2)
    out, meta = {}, {}
    for name, (h, w) in {"wide": (30, 53), "tall": (40, 20)}.items():
        src = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
        res = mod.load_and_preprocess_images([Image.fromarray(src.numpy())])[0]  # 8-bit RGB
        q = torch.round(res * 255.0)
        assert torch.equal(q / 255.0, res), "ToTensor output is not k/255"
        out[f"preprocess.{name}.source"] = src
        out[f"preprocess.{name}.result"] = q.to(torch.uint8)[:, ::PRE_STRIDE, ::PRE_STRIDE].contiguous()
        meta[name] = list(res.shape)
    return out, meta


def same_functions(a: Path, b: Path, names: list[str]) -> dict[str, bool]:
    """Whether each named top-level function has the same AST (docstrings dropped) in two files."""
    def funcs(p: Path):
        d = {}
        for n in ast.parse(p.read_text()).body:
            if isinstance(n, ast.FunctionDef):
                if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant):
                    n.body = n.body[1:]
                d[n.name] = ast.dump(n)
        return d
    fa, fb = funcs(a), funcs(b)
    return {n: n in fa and fa.get(n) == fb.get(n) for n in names}


def write_keys(upstream: Path, out: Path, commit: str) -> None:
    """Full-size parameter names/shapes of upstream ``VGGT()`` (tracking head excluded), built on the meta device."""
    cls = import_upstream(upstream)
    linspace = torch.linspace  # DINO's drop-path schedule calls .item(): keep that one tensor on the CPU
    torch.linspace = lambda *a, **k: linspace(*a, **{**k, "device": k.get("device") or "cpu"})
    try:
        with torch.device("meta"):
            full = cls(enable_track=False)
    finally:
        torch.linspace = linspace
    tensors = {k: list(v.shape) for k, v in full.state_dict().items()}
    doc = {
        "checkpoint": "facebook/VGGT-1B (model.safetensors / model.pt)",
        "derived_from": f"{UPSTREAM_REPO} @ {commit}: VGGT(enable_track=False).state_dict() built on the meta "
                        "device by tools/parity/vggt.py (defaults: img 518, patch 14, embed 1024)",
        "not_listed_prefixes": ["track_head."],
        "num_tensors": len(tensors),
        "num_params": sum(math.prod(s) for s in tensors.values()),
        "tensors": tensors,
    }
    out.write_text(json.dumps(doc, indent=0) + "\n")
    print(f"wrote {out}: {doc['num_tensors']} tensors, {doc['num_params']} parameters")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", type=Path, required=True, help="checkout holding upstream's vggt/ package")
    ap.add_argument("--commit", default=None, help="upstream commit (when the checkout is an archive without .git)")
    ap.add_argument("--release", type=Path, default=None, help="VidFM3D checkout (for load_and_preprocess_images)")
    ap.add_argument("--release-commit", default=None)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--keys-out", type=Path, default=None, help="also write the full-size key fixture here")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from safetensors.torch import save_file

    torch.manual_seed(args.seed)
    commit = args.commit or git_commit(args.upstream)
    if args.keys_out is not None:  # before build_upstream shrinks the constructors
        write_keys(args.upstream, args.keys_out, commit)
    model, geometry, pose_enc_mod = build_upstream(args.upstream)
    seed_weights(model, args.seed)
    images = seeded_images(args.seed)
    tensors = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    tensors["input.images"] = images
    outs = run_fp32(model, geometry, pose_enc_mod, images)
    bf16, bf16_dtypes = run_bf16_autocast(model, images)
    tensors.update({f"output.{k}": v.float().contiguous() for k, v in {**outs, **bf16}.items()})
    meta = {
        "upstream_repo": UPSTREAM_REPO,
        "upstream_commit": commit,
        "upstream_modules": "vggt.models.vggt.VGGT (its own forward), vggt.models.aggregator.Aggregator, "
                            "vggt.layers.vision_transformer.DinoVisionTransformer, vggt.heads.camera_head.CameraHead, "
                            "vggt.heads.dpt_head.DPTHead, vggt.utils.pose_enc.pose_encoding_to_extri_intri, "
                            "vggt.utils.geometry.unproject_depth_map_to_point_map",
        "config": json.dumps(CONFIG),
        "input": json.dumps({"frames": FRAMES, "height": HEIGHT, "width": WIDTH, "values": "k/255"}),
        "substitutions": "VGGT's constructors wrapped with functools.partial to the tiny config; aggregator's "
                         "vit_large replaced by DinoVisionTransformer(embed_dim=32, depth=2, num_heads=2, mlp_ratio=4, "
                         "block_fn=partial(NestedTensorBlock, attn_class=MemEffAttention)) = vit_large with smaller "
                         "dims; track head disabled (enable_track=False); all parameters re-drawn by seed_weights",
        "attention": "plain PyTorch: XFORMERS_AVAILABLE=False is hard-coded upstream, MemEffAttention -> "
                     "Attention.forward -> F.scaled_dot_product_attention (CPU)",
        "autocast_bf16": "output.autocast_bf16.aggregator.*: model.aggregator(images) under torch.autocast('cpu', "
                         f"bfloat16) (output dtypes {bf16_dtypes}); output.autocast_bf16.pose_enc / depth / "
                         "depth_conf: camera_head / depth_head called on those outputs outside autocast (what "
                         "VGGT.forward's torch.cuda.amp.autocast(enabled=False) does on CUDA; it does not disable CPU "
                         "autocast, so VGGT.forward itself is not used for this path)",
        "seed": str(args.seed),
        "torch": torch.__version__,
        "generator": "tools/parity/vggt.py",
    }
    if args.release is not None:
        pre, shapes = release_preprocessing(args.release, args.seed)
        tensors.update(pre)
        rel_geo = args.release / "vidfm3d" / "vggt" / "utils"
        same = same_functions(args.upstream / "vggt" / "utils" / "geometry.py", rel_geo / "geometry.py",
                              ["unproject_depth_map_to_point_map", "depth_to_world_coords_points",
                               "depth_to_cam_coords_points", "closed_form_inverse_se3"])
        same.update(same_functions(args.upstream / "vggt" / "utils" / "pose_enc.py", rel_geo / "pose_enc.py",
                                   ["pose_encoding_to_extri_intri"]))
        same.update(same_functions(args.upstream / "vggt" / "utils" / "rotation.py", rel_geo / "rotation.py",
                                   ["quat_to_mat"]))
        if not all(same.values()):
            raise SystemExit(f"release label utils differ from upstream's: {same}")
        meta.update({
            "release_repo": RELEASE_REPO,
            "release_commit": args.release_commit or git_commit(args.release),
            "release_modules": "vidfm3d.vggt.utils.load_fn.load_and_preprocess_images (loaded from its file)",
            "release_substitutions": "torchvision.transforms.ToTensor stubbed (not installed) by its definition "
                                     "for 8-bit RGB: float(value) / 255, [3, H, W]",
            "release_label_utils_identical_to_upstream": json.dumps(same),
            "preprocess": json.dumps({"stride": PRE_STRIDE, "result_shapes": shapes, "sources": "[h, w, 3] uint8",
                                      "results": "[3, h, w] uint8 = round(255 * output), every stride-th row/col"}),
        })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata=meta)
    size = args.out.stat().st_size
    print(f"wrote {args.out}: {len(tensors)} tensors, {size / 1e6:.2f} MB")
    for k, v in outs.items():
        print(f"  {k:40s} {tuple(v.shape)} range [{float(v.min()):.3g}, {float(v.max()):.3g}]")


if __name__ == "__main__":
    main()
