#!/usr/bin/env python
"""Golden fixture for vidprobe's own Fast3R (encoder + fusion transformer) and its reference inputs.

Run (never in CI)::

    /work/upenv/bin/python tools/parity/fast3r.py --upstream /work/up/<dir>

``--upstream`` is a checkout of the study's release (zxhuang1698/VidFM3D),
which vendors Fast3R under ``features/f3r/f3r``. The script runs the release's
own code at a tiny config:

* ``f3r/models/fast3r.py``: ``Fast3R`` with its own ``build_encoder``
  (``CroCoEncoder``: ``PatchEmbedDust3R``, croco ``Block`` with RoPE100) and
  ``build_decoder`` (``Fast3RDecoder``: random image-index embedding), and its
  own ``forward`` (``return_feature=True``: the decoder's output list, before
  any head), called through ``f3r/dust3r/inference_multiview.py: inference``.
  ``Fast3R.__init__`` is bypassed (``Fast3R.__new__`` + the two build methods)
  because its DPT head factory asserts decoder depth > 9 and the heads play no
  part in the features.
* Image indices: ``Fast3RDecoder._generate_per_rank_generator`` (which seeds
  a generator from the global RNG on every forward) is pinned to
  ``torch.Generator().manual_seed(SEED)``; the indices drawn from it (view 0
  -> 0, the others ``randperm(999)[:V-1] + 1``) are read back from the
  embedding the decoder added and saved.
* ``f3r/dust3r/utils/image.py: load_images`` (the release's reader: PIL
  LANCZOS straight to 512x288 whatever the source size, ``ImgNorm`` = ToTensor +
  Normalize(0.5, 0.5)) on one seeded 8-bit 180x320 PNG.
* ``vidfm3d/data/components/video_probe_dataset.py: VideoProbeDataset``
  (``vfm_name='f3r'``, ``feat_postfix='_l24'``, ``fold_stride=1``,
  ``context_len=76``) on a 150-map feature file (a DL3DV window): the map the
  probe reads for every frame 0..75.

Substitutions: the CUDA RoPE kernel ``curope`` is not built, so croco's own
plain-PyTorch ``RoPE2D`` (its import fallback in ``croco/models/pos_embed.py``)
runs; attention ``attn_implementation='pytorch_naive'`` (the CPU-capable one of
upstream's implementations). Import-only stubs: ``f3r.dust3r.datasets`` (only
``view_name`` is imported by ``fast3r.py``; it is never called here),
``f3r.utils`` package ``__init__`` skipped (needs hydra; ``pylogger`` loads
unchanged), ``cv2`` (imported by ``image.py`` for functions not used here),
torchvision's package ``__init__`` skipped (compiled ops do not load on the
CPU-only torch; ``transforms`` run unchanged). ``inference`` is called with
precision ``"32"`` (autocast off: fp32 fixture) instead of the release's
``torch.bfloat16`` (CPU autocast does not mirror CUDA's: it runs LayerNorm in
bf16, so no bf16 outputs are saved).

Saved (fp32 unless noted): ``<official key>`` weights (``encoder.*``,
``decoder.*``); ``model.views_u8`` (uint8 [V,3,32,64]) and ``model.views``
(their ``ImgNorm``); ``model.image_ids``; ``out.0`` (encoder output) ..
``out.L`` (the decoder list; ``out.L`` = ``dec_norm`` of block L, the
release's "feature index L"), ``out.block_L_raw`` (block L before
``dec_norm``, hooked); ``bias.*`` the same with
``attn_bias_for_inference_enabled=True``; ``pre.src_u8`` /
``pre.out_u8`` (the release reader's input and its output as 8-bit, exact);
``layout.frame_to_map`` ([76]).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vjepa import commit_of, import_torchvision_transforms, release_frame_map, skip_package_init  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "parity" / "fast3r.safetensors"
REPO = "zxhuang1698/VidFM3D"
CONFIG = dict(patch_size=8, enc_dim=32, enc_depth=2, enc_heads=2, dec_dim=32, dec_depth=4, dec_heads=2,
              mlp_ratio=4.0, rope_freq=100.0, views=4, view_hw=(32, 64), seed=1234, pre_src_hw=(180, 320))


def install_stubs(f3r_root: Path) -> None:
    for name in ("f3r.dust3r.datasets", "f3r.dust3r.datasets.base", "f3r.dust3r.datasets.base.base_stereo_view_dataset"):
        mod = types.ModuleType(name)
        mod.__path__ = []
        sys.modules[name] = mod
    sys.modules["f3r.dust3r.datasets.base.base_stereo_view_dataset"].view_name = lambda *a, **k: "stub"
    skip_package_init("f3r.utils", f3r_root / "f3r" / "utils")
    cv2 = types.ModuleType("cv2")
    cv2.IMREAD_COLOR, cv2.IMREAD_ANYDEPTH, cv2.COLOR_BGR2RGB = 1, 2, 4
    sys.modules["cv2"] = cv2


def build_release_model(Fast3R, bias: bool):
    c = CONFIG
    enc = dict(encoder_type="croco", img_size=512, patch_size=c["patch_size"], patch_embed_cls="PatchEmbedDust3R",
               embed_dim=c["enc_dim"], num_heads=c["enc_heads"], depth=c["enc_depth"], mlp_ratio=c["mlp_ratio"],
               pos_embed=f"RoPE{int(c['rope_freq'])}", attn_implementation="pytorch_naive")
    dec = dict(decoder_type="fast3r", random_image_idx_embedding=True, enc_embed_dim=c["enc_dim"],
               embed_dim=c["dec_dim"], num_heads=c["dec_heads"], depth=c["dec_depth"], mlp_ratio=c["mlp_ratio"],
               qkv_bias=True, attn_implementation="pytorch_naive", attn_bias_for_inference_enabled=bias)
    model = Fast3R.__new__(Fast3R)
    torch.nn.Module.__init__(model)
    model.encoder_args, model.decoder_args = dict(enc), dict(dec)
    model.build_encoder(enc)
    model.build_decoder(dec)
    return model.eval(), enc, dec


def randomise_(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.15 * noise)


def run(model, inference, views, precision) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The release's forward with pinned image indices: (decoder list, raw last block, image ids)."""
    dec = model.decoder
    dec._generate_per_rank_generator = lambda: torch.Generator().manual_seed(CONFIG["seed"])
    seen = {}
    orig = type(dec)._get_random_image_pos

    def spy(self, *a, **k):
        seen["pos"] = orig(self, *a, **k)
        return seen["pos"]

    dec._get_random_image_pos = types.MethodType(spy, dec)
    h = dec.dec_blocks[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("raw", o.detach().clone()))
    out = inference(views, model, torch.device("cpu"), dtype=precision, verbose=False)
    h.remove()
    V, P = len(views), out[0].shape[1]
    per_view = seen["pos"].reshape(V, P, -1)[:, 0].float()  # [V, D]: one row of the table per view
    ids = [int(torch.nonzero((dec.image_idx_emb == row).all(1))[0]) for row in per_view]
    raw = seen["raw"].reshape(V, P, -1)  # B = 1: (B, V*P, D) -> (V, P, D), the order of the rearranged list
    return out, raw, torch.tensor(ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--upstream", type=Path, required=True, help="checkout of zxhuang1698/VidFM3D")
    ap.add_argument("--commit", default=None)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    up = args.upstream.resolve()
    f3r_root = up / "features" / "f3r"
    sys.path.insert(0, str(f3r_root))
    import_torchvision_transforms()
    install_stubs(f3r_root)
    from f3r.dust3r.inference_multiview import inference
    from f3r.dust3r.utils.image import ImgNorm, load_images
    from f3r.models.fast3r import Fast3R
    from PIL import Image
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model, enc_args, dec_args = build_release_model(Fast3R, bias=False)
    randomise_(model, seed=1)
    weights = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(2)
    V, (H, W) = CONFIG["views"], CONFIG["view_hw"]
    views_u8 = torch.randint(0, 256, (V, 3, H, W), generator=g, dtype=torch.uint8)
    views = [dict(img=ImgNorm(Image.fromarray(u.permute(1, 2, 0).numpy(), mode="RGB"))[None],
                  true_shape=np.int32([[H, W]]), idx=i, instance=str(i)) for i, u in enumerate(views_u8)]
    tensors = {**weights, "model.views_u8": views_u8, "model.views": torch.cat([v["img"] for v in views])}
    out, raw, ids = run(model, inference, views, "32")
    assert len(out) == CONFIG["dec_depth"] + 1
    tensors.update({f"out.{i}": t.contiguous() for i, t in enumerate(out)})
    tensors.update({"out.block_L_raw": raw.contiguous(), "model.image_ids": ids})

    biased, _, _ = build_release_model(Fast3R, bias=True)
    biased.load_state_dict(weights)
    bout, braw, bids = run(biased, inference, views, "32")
    assert torch.equal(bids, ids)
    tensors.update({f"bias.out.{i}": t.contiguous() for i, t in enumerate(bout)})
    tensors["bias.out.block_L_raw"] = braw.contiguous()

    # ---- the release's image reader
    sh, sw = CONFIG["pre_src_hw"]
    src = torch.randint(0, 256, (sh, sw, 3), generator=g, dtype=torch.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "frame_00001.png")
        Image.fromarray(src.numpy(), mode="RGB").save(path)
        img = load_images([path], size=512, verbose=False)[0]["img"]  # [1,3,288,512] in [-1,1]
    out_u8 = ((img[0] * 0.5 + 0.5) * 255).round().to(torch.uint8)
    assert torch.equal(ImgNorm(Image.fromarray(out_u8.permute(1, 2, 0).numpy(), mode="RGB"))[None], img)
    tensors.update({"pre.src_u8": src.permute(2, 0, 1).contiguous(), "pre.out_u8": out_u8.contiguous()})

    frame_to_map = release_frame_map(up, "f3r", (150, 1, 1, 1), num_frames=150, context_len=76,
                                     feat_postfix="_l24", fold_stride=1)
    tensors["layout.frame_to_map"] = torch.tensor(frame_to_map)

    meta = {
        "upstream_repo": REPO, "upstream_commit": args.commit or commit_of(up),
        "upstream_modules": "features/f3r/f3r/models/fast3r.py: Fast3R (build_encoder, build_decoder, forward with "
        "return_feature=True), CroCoEncoder, Fast3RDecoder; croco/models/blocks.py: Block, Attention, Mlp, "
        "PatchEmbed; dust3r/patch_embed.py: PatchEmbedDust3R; croco/models/pos_embed.py: RoPE2D (PyTorch "
        "fallback); dust3r/inference_multiview.py: inference; dust3r/utils/image.py: load_images, ImgNorm; "
        "vidfm3d/data/components/video_probe_dataset.py: VideoProbeDataset (vfm_name='f3r')",
        "config": json.dumps(CONFIG), "encoder_args": json.dumps(enc_args), "decoder_args": json.dumps(dec_args),
        "substitutions": "curope (CUDA RoPE kernel) not built -> croco's plain-PyTorch RoPE2D fallback; "
        "attn_implementation pytorch_naive; Fast3R.__init__ bypassed (no DPT heads: head factory needs depth > 9); "
        "import-only stubs: f3r.dust3r.datasets (view_name), f3r.utils __init__ skipped, cv2, torchvision __init__ "
        "skipped; inference(dtype='32') for the fp32 outputs",
        "image_ids": "Fast3RDecoder._generate_per_rank_generator pinned to torch.Generator().manual_seed(seed); "
        f"drawn ids {ids.tolist()} (the release itself seeds that generator from the unseeded global RNG)",
        "weights": "every parameter ~ seeded normal (std 0.15; LayerNorm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2))",
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata=meta)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {len(tensors)} tensors); ids {ids.tolist()}; "
          f"frame_to_map[:8] {frame_to_map[:8]}")


if __name__ == "__main__":
    main()
