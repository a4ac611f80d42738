#!/usr/bin/env python
"""Golden fixture for vidprobe's own V-JEPA encoder and its reference frame layout.

Run (never in CI)::

    /work/upenv/bin/python tools/parity/vjepa.py --upstream /work/up/<dir>

``--upstream`` is a checkout of the study's release (zxhuang1698/VidFM3D). The
script runs the release's own code, unchanged, at a tiny config:

* ``features/vjepa/vjepa.py``: ``VisionTransformer`` and ``build_model``.
  ``build_model`` builds ``vit_huge(num_frames=16)``; the module-level name
  ``vit_huge`` is replaced by the same ``VisionTransformer`` class at width
  16, 3 blocks, 2 heads, patch 16, tubelet 2, 16 frames, trained size 32
  (the class, its ``Block``/``Attention``/``MLP``/``PatchEmbed3D`` and the
  3D sin-cos table are upstream's). Every weight is re-drawn from a seeded
  generator (``pos_embed`` keeps upstream's sin-cos table).
* A checkpoint like the official ``.pth.tar`` is written with ``encoder`` and
  ``target_encoder`` entries under ``module.backbone.`` keys (the
  ``target_encoder`` tensors are the ``encoder`` ones times 0.5, so the two
  are told apart); the release's ``build_model(path)`` loads it.
* ``features/vjepa/extract_features.py``: ``VJEPAFeaturizer_Spaced`` (the
  release's default ``--partition spaced``) runs on 76 seeded 8-bit frames of
  36x52 resized to 48x32 by its own torchvision transform (``T.Resize`` on PIL
  images: PIL bilinear, antialiased), ImageNet-normalised, as 5 interleaved
  16-frame clips.
* ``vidfm3d/data/components/video_probe_dataset.py``: ``VideoProbeDataset``
  (``vfm_name='vjepa'``, ``context_len=76``) reads a feature file whose map
  ``n`` is filled with ``n``, with the query frames pinned, to record which
  feature map the probe reads for every frame 0..75.

Substitution: torchvision's package ``__init__`` is skipped (its compiled ops
do not load against the CPU-only torch of the upstream env); the
``torchvision.transforms`` modules the release uses are pure Python/PIL and run
unchanged.

Saved (fp32 unless noted): ``encoder.<official key>`` weights; ``input.video_u8``
(the 76 source frames, uint8 [76,3,36,52]); ``input.frames_u8`` (the release's
resized frames, uint8 [76,3,32,48]: its normalised clip batch is exactly
``Normalize(ToTensor(frames_u8))[clips]``, checked here); ``input.clips``
([5,16] frame ids of each clip, read back from the batch the release built);
``block.<k>`` (k = 1..3, upstream blocks' outputs, [5, 8*2*3, 16]);
``returned`` (what the release's encoder returns); ``normed`` (its ``norm``
applied to that); ``feat`` (the release's saved tensor, [5,8,2,3,16]);
``layout.clips_76`` ([5,16] clip frame ids for 76 frames, from index-coded
frames); ``layout.frame_to_map`` ([76] map read by the probe for each frame).
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "parity" / "vjepa.safetensors"
REPO = "zxhuang1698/VidFM3D"
CONFIG = dict(img_size=32, patch_size=16, num_frames=16, tubelet_size=2, embed_dim=16, depth=3, num_heads=2)
SRC_HW, IN_HW = (36, 52), (32, 48)  # source frames, fed size (H, W)
PREFIX = "module.backbone."
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def commit_of(path: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except Exception:  # noqa: BLE001 - an archive without .git
        return "unknown (pass --commit)"


def skip_package_init(name: str, path: Path) -> None:
    """Register package ``name`` with its real directory but without running its ``__init__``."""
    mod = types.ModuleType(name)
    mod.__path__ = [str(path)]
    sys.modules[name] = mod


def import_torchvision_transforms():
    import importlib.util

    spec = importlib.util.find_spec("torchvision")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("torchvision is not installed in this env: /work/upenv/bin/pip install --no-deps torchvision")
    skip_package_init("torchvision", Path(list(spec.submodule_search_locations)[0]))
    import torchvision.transforms as T  # noqa: F401

    return T


def randomise_(model: torch.nn.Module, seed: int) -> None:
    """Re-draw every parameter except the fixed position table (weights ~ N(0, 0.15^2), norms ~ 1 + N(0, 0.1^2))."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "pos_embed":
                continue
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.15 * noise)


def release_frame_map(upstream: Path, vfm_name: str, feat_shape: tuple[int, ...], num_frames: int,
                      context_len: int, **kwargs) -> list[int]:
    """Feature map the release's ``VideoProbeDataset`` reads for each frame ``0..context_len-1``.

    A processed scene of ``num_frames`` frames and a feature file whose map ``n``
    (in the flattened order the dataset uses) holds the value ``n`` are written;
    ``_sample_query_frames`` is pinned to chosen frames, ``query_idx_divisor``
    is off so every frame can be asked for.
    """
    sys.path.insert(0, str(upstream))
    from safetensors.torch import save_file
    from vidfm3d.data.components.video_probe_dataset import VideoProbeDataset

    with tempfile.TemporaryDirectory() as tmp:
        root, root_vfm = Path(tmp) / "proc", Path(tmp) / "feat"
        (root / "sub").mkdir(parents=True)
        (root / "train.json").write_text(json.dumps([["sub", "scene"]]))
        S, H, W = num_frames, 2, 2
        g = torch.Generator().manual_seed(0)
        save_file({
            "images": torch.randint(0, 255, (S, 3, H, W), generator=g, dtype=torch.uint8),
            "pointmaps": torch.rand(S, H, W, 3, generator=g) + 1.0,
            "confmaps": torch.ones(S, H, W, 1), "depthmaps": torch.ones(S, H, W, 1),
            "intrinsic": torch.eye(3).repeat(S, 1, 1), "extrinsic": torch.eye(3, 4).repeat(S, 1, 1),
        }, str(root / "sub" / "scene.sft"))
        fdir = root_vfm / vfm_name / "sub" / "scene"
        fdir.mkdir(parents=True)
        n = int(np.prod(feat_shape[:-3]))
        feat = torch.arange(n, dtype=torch.float32).reshape(*feat_shape[:-3], 1, 1, 1).expand(*feat_shape).contiguous()
        save_file({"feat": feat}, str(fdir / f"feature{kwargs.get('feat_postfix', '')}.sft"))
        ds = VideoProbeDataset(root=str(root), root_vfm=str(root_vfm), subset="all", split="train",
                               vfm_name=vfm_name, feat_pixalign=True, num_views=4, min_view_interval=5,
                               context_len=context_len, query_idx_divisor=None, **kwargs)
        frames = list(range(context_len))
        out: list[int] = []
        for s in range(0, len(frames), 4):
            group = (frames[s:s + 4] + [0, 0, 0])[:4]
            ds._sample_query_frames = lambda rng, k, win, start=0, group=group: torch.tensor(group[:k])
            got = ds[0]["vfm_feat"].reshape(4, -1)[:, 0].round().long().tolist()
            out += got[: len(frames[s:s + 4])]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", type=Path, required=True, help="checkout of zxhuang1698/VidFM3D")
    ap.add_argument("--commit", default=None, help="commit of the checkout (default: git rev-parse HEAD)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    up = args.upstream.resolve()
    sys.path.insert(0, str(up))
    T = import_torchvision_transforms()
    import features.vjepa.vjepa as vj
    from features.vjepa.extract_features import VJEPAFeaturizer_Spaced
    from PIL import Image
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = dict(CONFIG)
    tiny = functools.partial(vj.VisionTransformer, mlp_ratio=4, qkv_bias=True,
                             norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
                             **{k: v for k, v in cfg.items() if k != "num_frames"})
    vj.vit_huge = lambda num_frames=16, **kw: tiny(num_frames=num_frames, **kw)  # what build_model calls
    src = vj.vit_huge(num_frames=cfg["num_frames"])
    randomise_(src, seed=1)
    enc = {PREFIX + k: v.clone() for k, v in src.state_dict().items()}
    ckpt = {"encoder": enc, "target_encoder": {k: v * 0.5 for k, v in enc.items()}, "epoch": 0}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vith16-384.pth.tar"
        torch.save(ckpt, path)
        feat_model = VJEPAFeaturizer_Spaced(str(path), img_size=(IN_HW[1], IN_HW[0]), device="cpu")
    model = feat_model.backbone
    loaded = {PREFIX + k: v for k, v in model.state_dict().items()}
    assert all(torch.equal(loaded[k], enc[k]) for k in enc), "build_model did not load checkpoint['encoder']"

    # ---- the numeric run: seeded 8-bit frames through the release's featurizer
    g = torch.Generator().manual_seed(2)
    video_u8 = torch.randint(0, 256, (76, 3, *SRC_HW), generator=g, dtype=torch.uint8)
    pil = [Image.fromarray(f.permute(1, 2, 0).numpy(), mode="RGB") for f in video_u8]
    seen: dict[str, torch.Tensor] = {}
    blocks: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: blocks.__setitem__(k, o.detach().clone()))
             for k, b in enumerate(model.blocks, start=1)]
    model.register_forward_pre_hook(lambda m, a: seen.__setitem__("batch", a[0].detach().clone()))
    feat = feat_model(pil)  # [5, 8, h, w, C]
    for h in hooks:
        h.remove()
    batch = seen["batch"]  # [5, 3, 16, H, W]
    returned = model(batch)
    normed = model.norm(returned)
    assert torch.equal(returned, blocks[cfg["depth"]]), "the encoder's output is not the last block's"
    mean, std = torch.tensor(MEAN).view(3, 1, 1, 1), torch.tensor(STD).view(3, 1, 1, 1)
    frames_u8 = torch.empty(76, 3, *IN_HW, dtype=torch.uint8)
    clips = torch.empty(5, 16, dtype=torch.long)
    resized = [T.ToTensor()(T.Resize(IN_HW)(im)) for im in pil]  # the release's transform, step by step
    normalised = [T.Normalize(MEAN, STD)(r) for r in resized]
    for j, r in enumerate(resized):
        frames_u8[j] = (r * 255).round().to(torch.uint8)
    for k in range(5):  # which frame sits at each clip position of the batch the release built
        for p in range(16):
            clips[k, p] = next(j for j, x in enumerate(normalised) if torch.equal(x, batch[k, :, p]))
    rebuilt = ((frames_u8.float() / 255).permute(1, 0, 2, 3)[:, clips] - mean[..., None]) / std[..., None]
    assert torch.equal(rebuilt.permute(1, 0, 2, 3, 4), batch), "Normalize(ToTensor(frames_u8))[clips] != batch"

    # ---- the layout at 76 frames / 5 clips: index-coded frames
    coded = [Image.fromarray(np.full((*SRC_HW, 3), j, dtype=np.uint8), mode="RGB") for j in range(76)]
    feat_model(coded)
    x = seen["batch"][:, 0, :, 0, 0]  # [5, 16]: channel 0, pixel (0,0)
    clips_76 = ((x * STD[0] + MEAN[0]) * 255).round().long()
    frame_to_map = release_frame_map(up, "vjepa", (5, 8, 1, 1, 1), num_frames=81, context_len=76, feat_postfix="")

    tensors = {f"encoder.{k}": v.contiguous() for k, v in enc.items()}
    tensors.update({"input.video_u8": video_u8, "input.frames_u8": frames_u8, "input.clips": clips,
                    "returned": returned.contiguous(), "normed": normed.contiguous(), "feat": feat.contiguous(),
                    "layout.clips_76": clips_76.contiguous(), "layout.frame_to_map": torch.tensor(frame_to_map)})
    tensors.update({f"block.{k}": v.contiguous() for k, v in blocks.items()})
    meta = {
        "upstream_repo": REPO, "upstream_commit": args.commit or commit_of(up),
        "upstream_modules": "features/vjepa/vjepa.py: VisionTransformer, build_model (vit_huge replaced by "
        "VisionTransformer at the tiny config); features/vjepa/extract_features.py: VJEPAFeaturizer_Spaced; "
        "vidfm3d/data/components/video_probe_dataset.py: VideoProbeDataset (vfm_name='vjepa', context_len=76)",
        "config": json.dumps(dict(cfg, mlp_ratio=4, qkv_bias=True, norm_eps=1e-6, src_hw=SRC_HW, input_hw=IN_HW,
                                  num_video_frames=76, num_clips=5)),
        "checkpoint": "{'encoder': {'module.backbone.'+k: w}, 'target_encoder': {same keys: 0.5 * w}}; "
        "the release's build_model loads 'encoder' (checked) and strips 16 characters",
        "weights": "every parameter ~ seeded normal (std 0.15; LayerNorm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2)); "
        "pos_embed = upstream's 3D sin-cos table (uniform_power=False, the class default)",
        "substitutions": "torchvision package __init__ skipped (compiled ops do not load on CPU-only torch); "
        "torchvision.transforms run unchanged",
        "dtype": "fp32 (the release runs V-JEPA in fp32)",
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata=meta)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB, {len(tensors)} tensors)")
    print("clips_76[0] =", clips_76[0].tolist())
    print("frame_to_map[:12] =", frame_to_map[:12])


if __name__ == "__main__":
    main()
