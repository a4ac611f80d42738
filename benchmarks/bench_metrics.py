"""Evaluation: metric computation time per 1000 clips (vidprobe.metrics.MetricAccumulator).

Shape (the reference evaluation): clips of S=4 frames at 294x518, batches of 10; points
(Sim(3)-aligned, confidence-weighted), depth and camera metrics (``compat="clean"``) per
clip, then ``compute()`` and the bootstrap intervals. Measured on ``--clips`` clips (default
50) of random predictions near the ground truth and extrapolated linearly to 1000 (the
per-clip work is independent; compute()/intervals are measured separately and scale with the
number of clips too). Exit 0 when measured, 1 when it cannot run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def random_extrinsics(B: int, S: int, g: torch.Generator) -> torch.Tensor:
    import roma

    R = roma.unitquat_to_rotmat(
        torch.nn.functional.normalize(torch.randn(B, S, 4, generator=g), dim=-1))
    t = torch.randn(B, S, 3, 1, generator=g)
    return torch.cat([R, t], dim=-1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=50)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--height", type=int, default=294)
    ap.add_argument("--width", type=int, default=518)
    ap.add_argument("--chamfer", action="store_true", help="also acc/comp/Chamfer (slower)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    try:
        from vidprobe.metrics import MetricAccumulator

        g = torch.Generator().manual_seed(0)
        B, S, H, W = args.batch, args.frames, args.height, args.width
        batches = []
        for _ in range(max(1, args.clips // B)):
            gt_pts = torch.randn(B, S, H, W, 3, generator=g)
            gt_depth = torch.rand(B, S, H, W, generator=g) + 0.5
            gt_ext = random_extrinsics(B, S, g)
            batches.append(dict(  # noqa: C408
                pred_points=gt_pts + 0.05 * torch.randn(B, S, H, W, 3, generator=g), gt_points=gt_pts,
                gt_conf=torch.rand(B, S, H, W, generator=g), valid=torch.rand(B, S, H, W, generator=g) > 0.1,
                pred_depth=gt_depth * (1 + 0.05 * torch.randn(B, S, H, W, generator=g)), gt_depth=gt_depth,
                pred_extrinsics=gt_ext + 0.01 * torch.randn(B, S, 3, 4, generator=g), gt_extrinsics=gt_ext))
        n = len(batches) * B
        acc = MetricAccumulator(chamfer=args.chamfer)
        t = time.perf_counter()
        for b in batches:
            acc.update(**b)
        t_update = time.perf_counter() - t
        t = time.perf_counter()
        res = acc.compute()
        t_compute = time.perf_counter() - t
        t = time.perf_counter()
        acc.intervals()
        t_ci = time.perf_counter() - t
    except Exception as ex:  # noqa: BLE001
        print(f"ERROR: bench_metrics could not run: {type(ex).__name__}: {ex}", file=sys.stderr)
        return 1
    per1000 = (t_update + t_compute + t_ci) * 1000 / n
    print(f"# metrics: {n} clips of S={S} at {H}x{W}, batch {B}, points+depth+camera{' +chamfer' if args.chamfer else ''}, CPU fp32, {torch.get_num_threads()} threads")
    print(f"  update {t_update:.2f} s ({t_update / n * 1e3:.1f} ms/clip), compute {t_compute * 1e3:.1f} ms, bootstrap intervals {t_ci * 1e3:.0f} ms")
    print(f"  => {per1000:.0f} s per 1000 clips (extrapolated linearly from {n}); {len(res)} aggregate values")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "clips": n, "t_update_s": t_update, "t_compute_s": t_compute,
                                               "t_intervals_s": t_ci, "s_per_1000_clips": per1000}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
