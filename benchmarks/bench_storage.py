"""Storage: bytes per video per (layer, timestep) for each dtype, and probe metrics with fp16 vs fp32 features.

1. Bytes: one feature file per dtype written at the exact WAN2.1-1.3B shape (81 frames -> 21 maps of
   30x52x1536, frame index of 81) with ``write_feature_file``; the size on disk is reported
   (safetensors header + data), then the file is deleted. ``--channels`` changes C.
2. Agreement: a synthetic dataset (``write_synthetic_dataset``), ``oracle`` features extracted
   into two stores (fp16 and fp32), the same tiny probe trained with the same seed on each
   (plus a second fp32 run with another seed as the noise yardstick), evaluated with
   ``evaluate_run`` on the test split. fp16 and fp32 agree "within noise" when every metric's
   |fp16 - fp32| is no larger than the seed-to-seed difference or the 95% bootstrap half-width.
Exit 0 when measured, 1 when it cannot run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

METRICS = ("point_err", "depth_err", "abs_rel", "auc_30", "auc_5", "rra_15", "rta_15")


def storage_bytes(root: Path, channels: int) -> dict[str, int]:
    from vidprobe.features.store import DTYPES, write_feature_file

    T, h, w = 81, 30, 52
    t = torch.arange(T)
    fi = torch.where(t == 0, 0, (t - 1) // 4 + 1)
    feats = torch.zeros(int(fi.max()) + 1, h, w, channels)
    out = {}
    for name in DTYPES:
        p = root / f"wan_{name}.safetensors"
        write_feature_file(p, feats, fi, {"video_id": "v"}, name)
        out[name] = p.stat().st_size
        p.unlink()
    return out


def agreement(root: Path, args) -> dict:
    from vidprobe.data.synthetic import write_synthetic_dataset
    from vidprobe.features.extract import extract_dataset
    from vidprobe.pipeline.evaluate import evaluate_run
    from vidprobe.probe.train import load_config, train

    data = root / "data"
    write_synthetic_dataset(data, args.videos, num_frames=25, hw=(28, 49), seed=0, test_fraction=0.4, progress=False)
    runs = {}
    for dtype in ("fp16", "fp32"):
        extract_dataset("oracle", data, root / f"feats_{dtype}", layers=[1], dtype=dtype,
                        backbone_kwargs={"height": 28, "width": 49}, progress=False)
    plan = [("fp16", args.seed), ("fp32", args.seed), ("fp32 seed+1", args.seed + 1)]
    for name, seed in plan:
        dtype = name.split()[0]
        cfg = {"features": str(root / f"feats_{dtype}"), "dataset": str(data), "out": str(root / f"run_{name.replace(' ', '_')}"),
               "probe": {"preset": "tiny"}, "epochs": args.epochs, "batch_size": 2, "seed": seed,
               "sampler": {"num_frames": 4, "min_gap": 3, "max_frame": 25, "snap": 4}}
        t = time.perf_counter()
        res = train(load_config(None, base=cfg), progress=False)
        ev = evaluate_run(res.run_dir, progress=False, save_clips=0, n_resamples=500)
        runs[name] = {"metrics": {k: v for k, v in ev.metrics.items() if isinstance(v, float)},
                      "ci": {k: list(v) for k, v in ev.ci.items()}, "train_steps": res.steps, "seconds": time.perf_counter() - t}
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--channels", type=int, default=1536)
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="bench_storage_") as td:
            sizes = storage_bytes(Path(td), args.channels)
            runs = None if args.skip_agreement else agreement(Path(td), args)
    except Exception as ex:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        print(f"ERROR: bench_storage could not run: {type(ex).__name__}: {ex}", file=sys.stderr)
        return 1
    print(f"# storage per video per (layer, timestep), WAN2.1-1.3B shape 21 x 30 x 52 x {args.channels} (+ frame index of 81):")
    for k, v in sizes.items():
        print(f"  {k}: {v:,} bytes ({v / 2**20:.2f} MiB)")
    out = {"config": vars(args), "bytes": sizes}
    if runs:
        names = list(runs)
        keys = [k for k in runs["fp32"]["metrics"] if not k.startswith("skipped_") and k != "num_clips"
                and all(k in r["metrics"] for r in runs.values())]
        shown = [k for k in keys if any(k.startswith(m) for m in METRICS)] or keys
        print(f"# probe on synthetic oracle features (tiny probe, {args.epochs} epochs, {runs['fp32']['train_steps']} steps, "
              f"test clips {int(runs['fp32']['metrics'].get('num_clips', 0))}):")
        print(f"  {'metric':<16}" + "".join(f"{n:>14}" for n in names) + f"{'|16-32|':>10}{'|seed diff|':>12}{'CI half':>9}  within noise")
        verdict = {}
        for k in shown:
            a, b, c = (runs[n]["metrics"][k] for n in names)
            ci = runs["fp32"]["ci"].get(k)
            half = (ci[1] - ci[0]) / 2 if ci else float("nan")
            d, s = abs(a - b), abs(b - c)
            ok = d <= max(s, half) + 1e-12
            verdict[k] = ok
            print(f"  {k:<16}" + "".join(f"{runs[n]['metrics'][k]:14.4f}" for n in names) + f"{d:10.1e}{s:12.4f}{half:9.4f}  {'yes' if ok else 'NO'}")
        out.update(runs=runs, within_noise=verdict)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
