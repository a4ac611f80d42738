"""Sweep extraction: one hooked, early-stopped pass per timestep vs one full run per (layer, timestep).

Two measurements, each a ratio inside one run (CPU, tiny random models of the real library classes):

* **diffusion (WAN2.1 T2V, tiny config)**: L layers x K timesteps.
  ours       ``extract(video, layers, timesteps)``: ONE VAE encode per clip, one denoiser
             pass per timestep, all L layers hooked, the pass stopped after the deepest layer.
  reference  one ``extract(video, [layer], [t])`` call per (layer, timestep) with early stopping
             disabled (every block runs), so the VAE re-encodes the clip each time
             (what the reference release does: one full pipeline run per setting).
* **encoder (DINOv2, tiny config)**: L layers in one hooked, early-stopped pass vs L separate
  full passes (one per layer, early stopping disabled).

Ideal ratios: for the denoiser alone ``L*K / K * (blocks / deepest)`` = ``L * depth saved``; with the
VAE counted, ``L*K*(V + F) / (V + K*F*deepest/blocks)`` from the measured single-call costs
V (one VAE encode) and F (one full denoiser pass). Exit 0 when measured, 1 when it cannot run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch


@contextlib.contextmanager
def no_early_stop():
    """Make every BlockTap run the whole model (the reference's full pass)."""
    from vidprobe.backbones import hooks

    orig = hooks.BlockTap

    class FullPass(orig):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **kw):
            kw["stop_early"] = False
            super().__init__(*a, **kw)

    hooks.BlockTap = FullPass
    try:
        yield
    finally:
        hooks.BlockTap = orig


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def bench_diffusion(args) -> dict:
    from vidprobe.backbones.base import get_backbone

    torch.manual_seed(0)
    bb = get_backbone("wan2.1-t2v-1.3b", tiny=True, tiny_layers=args.blocks, height=args.height, width=args.width)
    video = torch.rand(args.frames, 3, args.height, args.width, generator=torch.Generator().manual_seed(0))
    layers = args.layers
    steps = args.timesteps
    L, K, D = len(layers), len(steps), args.blocks
    deepest = max(layers)

    def ours():
        return bb.extract(video, layers, steps)

    def reference():
        out = {}
        with no_early_stop():
            for layer in layers:
                for t in steps:
                    out.update(bb.extract(video, [layer], [t]).maps)
        return out

    # correctness: identical features either way
    a = ours().maps
    b = reference()
    for k in a:
        if not torch.allclose(a[k], b[k], atol=1e-5):
            raise RuntimeError(f"diffusion: features of {k} differ between the sweep and the reference way")
    v0, f0 = bb.vae_calls, bb.forward_calls
    ours()
    calls_ours = (bb.vae_calls - v0, bb.forward_calls - f0)
    v0, f0 = bb.vae_calls, bb.forward_calls
    reference()
    calls_ref = (bb.vae_calls - v0, bb.forward_calls - f0)

    t_ours = best_of(ours, args.repeats)
    t_ref = best_of(reference, args.repeats)
    # single-call costs for the ideal ratio
    with torch.inference_mode():
        frames = bb.preprocess(video)
        t_vae = best_of(lambda: bb.encode(video), args.repeats)
        cl = bb.encode(video)[0]
        ch = bb.timestep_choices([steps[0]])[0]
        noisy = bb.noised(cl, ch, 0)
        t_full = best_of(lambda: bb.denoiser_forward(noisy, ch, cl), args.repeats)
    del frames
    ideal_blocks = L * D / deepest
    ideal_vae = L * K * (t_vae + t_full) / (t_vae + K * t_full * deepest / D)
    return {
        "model": f"WAN2.1 T2V tiny ({D} blocks, dim 16), video {args.frames}x3x{args.height}x{args.width}",
        "layers": layers, "timesteps": steps, "L": L, "K": K,
        "calls_ours": {"vae": calls_ours[0], "denoiser": calls_ours[1]},
        "calls_reference": {"vae": calls_ref[0], "denoiser": calls_ref[1]},
        "t_ours_s": t_ours, "t_reference_s": t_ref, "ratio": t_ref / t_ours,
        "t_vae_s": t_vae, "t_full_pass_s": t_full,
        "ideal_denoiser_only": ideal_blocks, "ideal_with_vae": ideal_vae,
    }


def bench_encoder(args) -> dict:
    from vidprobe.backbones.base import get_backbone

    D = args.enc_blocks
    bb = get_backbone("dinov2-small", tiny=True, height=56, width=84, config_overrides={"num_hidden_layers": D})
    video = torch.rand(args.enc_frames, 3, 56, 84, generator=torch.Generator().manual_seed(1))
    layers = args.enc_layers
    L, deepest = len(layers), max(layers)

    def ours():
        return bb.extract(video, layers)

    def reference():
        out = {}
        with no_early_stop():
            for layer in layers:
                out.update(bb.extract(video, [layer]).maps)
        return out

    a, b = ours().maps, reference()
    for k in a:
        if not torch.allclose(a[k], b[k], atol=1e-5):
            raise RuntimeError(f"encoder: features of {k} differ between one pass and separate passes")
    t_ours = best_of(ours, args.repeats)
    t_ref = best_of(reference, args.repeats)
    return {
        "model": f"DINOv2-S tiny config, {D} blocks, {args.enc_frames} frames 56x84",
        "layers": layers, "L": L, "t_ours_s": t_ours, "t_reference_s": t_ref, "ratio": t_ref / t_ours,
        "ideal": L * D / deepest,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--blocks", type=int, default=8, help="denoiser blocks of the tiny WAN")
    ap.add_argument("--layers", type=lambda s: [int(x) for x in s.split(",")], default=[2, 3, 4, 6])
    ap.add_argument("--timesteps", type=lambda s: [int(x) for x in s.split(",")], default=[249, 499, 749])
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--enc-blocks", type=int, default=12)
    ap.add_argument("--enc-layers", type=lambda s: [int(x) for x in s.split(",")], default=[3, 6, 9])
    ap.add_argument("--enc-frames", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        d = bench_diffusion(args)
        e = bench_encoder(args)
    except Exception as ex:  # noqa: BLE001
        print(f"ERROR: bench_extract could not run: {type(ex).__name__}: {ex}", file=sys.stderr)
        return 1
    print(f"# diffusion sweep: {d['model']}; L={d['L']} layers {d['layers']} x K={d['K']} timesteps {d['timesteps']}")
    print(f"  ours      {d['t_ours_s']:.3f} s  (VAE encodes {d['calls_ours']['vae']}, denoiser passes {d['calls_ours']['denoiser']}, stopped at block {max(d['layers'])})")
    print(f"  reference {d['t_reference_s']:.3f} s  (VAE encodes {d['calls_reference']['vae']}, denoiser passes {d['calls_reference']['denoiser']}, full)")
    print(f"  ratio {d['ratio']:.2f}x; ideal: denoiser only L*(blocks/deepest) = {d['ideal_denoiser_only']:.2f}x, "
          f"with VAE (V={d['t_vae_s'] * 1e3:.1f} ms, F={d['t_full_pass_s'] * 1e3:.1f} ms) = {d['ideal_with_vae']:.2f}x")
    print(f"# encoder: {e['model']}; L={e['L']} layers {e['layers']}")
    print(f"  one pass {e['t_ours_s']:.3f} s, {e['L']} full passes {e['t_reference_s']:.3f} s: ratio {e['ratio']:.2f}x (ideal L*blocks/deepest = {e['ideal']:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"diffusion": d, "encoder": e}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
