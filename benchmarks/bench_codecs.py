"""Feature codecs: bytes on disk per codec and what each costs the probe, on the synthetic oracle control.

A synthetic dataset (``write_synthetic_dataset``) and its ``oracle`` features (14 ground-truth channels per patch,
fp16) are written once; each codec (``--codecs``) is applied with ``compress_store`` (PCA fitted on the first 16
videos). Then :func:`vidprobe.pipeline.compress_check.check_stores` trains the same small probe with the same seeds
(``--seeds``) on the uncompressed store and on each compressed one (the uncompressed runs are shared), scores the
test clips, and reports per metric the change ``compressed - uncompressed`` with its paired bootstrap 95% interval
over clips, the seed noise (max - min over seeds of the uncompressed run) and the verdict (outside noise: the
interval excludes 0 and on every seed the change has one sign and exceeds the seed noise). Bytes are every file
under each store's root (features, PCA bases, manifest). Target (issue 14): some codec with >= 4x fewer bytes and
every metric within seed noise. ``pca:1`` (1 of 14 channels kept) is the destructive control: a verdict that
did not flag it would have no power at this scale. Exit 0 when measured, 1 when it cannot run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

SHOWN = ("point_err", "depth_err", "abs_rel", "delta_1_25", "auc_30", "rra_15", "rta_15")


def train_config(args) -> dict:
    return {
        "probe": {"preset": "tiny", "depth": 1, "camera_depth": 1, "camera_iters": 2},
        "epochs": 1000, "max_steps": args.steps, "batch_size": 2, "out_hw": [14, 24], "checkpoint_epochs": 0,
        "sampler": {"num_frames": 4, "min_gap": 3, "max_frame": args.frames, "snap": 4},
        "optim": {"lr": 3e-3, "warmup_frac": 0.1},
        "loader": {"workers": 0},  # batches loaded in the training process: no worker process per short run
    }


def run(root: Path, args) -> dict:
    from vidprobe.data.synthetic import write_synthetic_dataset
    from vidprobe.features.compress import compress_store
    from vidprobe.features.extract import extract_dataset
    from vidprobe.pipeline.compress_check import check_stores

    data = write_synthetic_dataset(root / "data", args.videos, num_frames=args.frames, hw=(28, 48), seed=0,
                                   test_fraction=0.4, progress=False)
    plain = root / "plain"
    extract_dataset("oracle", data, plain, layers=[1], backbone_kwargs={"height": 28, "width": 48, "patch": 4},
                    progress=False)
    out = {"config": vars(args), "train": train_config(args), "codecs": {}}
    for spec in args.codecs.split(","):
        t = time.perf_counter()
        dst = root / spec.replace(":", "-")
        s = compress_store(plain, spec, out=dst, progress=False)
        doc = check_stores(plain, dst, data, root / "runs", args.seed_list, train=train_config(args), progress=False,
                           echo=lambda _: None, n_resamples=2000)
        doc["fit"] = s.fit
        doc["seconds"] = time.perf_counter() - t
        out["codecs"][spec] = doc
    return out


def _cell(r: dict) -> str:
    mark = "*" if r["verdict"] == "outside noise" else " "
    return f"{r['change']:+.4f} [{r['low']:+.4f},{r['high']:+.4f}]{mark}"


def report(res: dict) -> list[str]:
    codecs = res["codecs"]
    first = next(iter(codecs.values()))
    cfg = res["config"]
    clips = next(iter(first["metrics"].values()))["clips"]
    lines = [f"# synthetic oracle features: {cfg['videos']} videos x {cfg['frames']} frames, 7x12 patches x 14 channels, "
             f"fp16; probe tiny (1 block), {cfg['steps']} steps, seeds {first['seeds']}, {clips} test clips",
             f"# uncompressed store: {first['uncompressed']['bytes']:,} bytes",
             f"  {'codec':<14}{'bytes':>10}{'ratio':>8}  {'PCA variance kept':>17}  outside noise  target (>=4x, all within)"]
    for spec, doc in codecs.items():
        ev = doc["fit"].get("explained_variance", {})
        kept = f"{next(iter(ev.values())):.4f}" if ev else "-"
        n_out = len(doc["outside_noise"])
        ok = doc["ratio"] >= 4 and doc["all_within_noise"]
        lines.append(f"  {spec:<14}{doc['compressed']['bytes']:>10,}{doc['ratio']:>7.2f}x  {kept:>17}  "
                     f"{n_out:>2} of {len(doc['metrics']):<2}      {'MET' if ok else 'no'}")
    lines.append("# change = compressed - uncompressed [paired 95% interval over clips]; * = outside seed noise "
                 "(interval excludes 0, and on every seed one sign and |change| > seed noise)")
    lines.append("# seed noise = max - min over seeds of the uncompressed run's metric")
    head = f"  {'metric':<21}{'uncompr.':>9}{'noise':>8}  " + "".join(f"{s:<31}" for s in codecs)
    lines.append(head.rstrip())
    names = [m for m in first["metrics"] if m in SHOWN] + [m for m in first["metrics"] if m not in SHOWN]
    for m in names:
        r0 = first["metrics"][m]
        row = f"  {m:<21}{r0['uncompressed']:9.4f}{r0['seed_noise']:8.4f}  "
        row += "".join(f"{_cell(doc['metrics'][m]):<31}" for doc in codecs.values())
        lines.append(row.rstrip())
    lines.append("# per-seed changes (compressed - uncompressed run of the same seed):")
    for spec, doc in codecs.items():
        per = "  ".join(f"{m} [{', '.join(f'{d:+.4f}' for d in doc['metrics'][m]['change_per_seed'])}]"
                        for m in ("point_err", "depth_err") if m in doc["metrics"])
        lines.append(f"  {spec:<14}{per}")
    met = [s for s, d in codecs.items() if d["ratio"] >= 4 and d["all_within_noise"]]
    lines.append(f"# target >= 4x fewer bytes with every metric within seed noise: "
                 + (f"MET by {', '.join(met)}" if met else "NOT MET by any codec"))
    if "pca:1" in codecs:
        n = len(codecs["pca:1"]["outside_noise"])
        lines.append(f"# destructive control pca:1: {n} metric(s) outside seed noise "
                     + ("(the verdict has power here)" if n else "(NOT flagged: the verdict has no power at this scale)"))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--codecs", default="int8,fp8,pca:6,pca:6+int8,pca:1",
                    help="pca:1 keeps 1 of the 14 channels: the destructive control the verdict must flag")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: no spinning on a busy machine)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    args.seed_list = [int(s) for s in args.seeds.split(",")]
    import torch

    torch.set_num_threads(args.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="bench_codecs_") as td:
            res = run(Path(td), args)
    except Exception as ex:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        print(f"ERROR: bench_codecs could not run: {type(ex).__name__}: {ex}", file=sys.stderr)
        return 1
    print("\n".join(report(res)))
    res["target_met_by"] = [s for s, d in res["codecs"].items() if d["ratio"] >= 4 and d["all_within_noise"]]
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str, allow_nan=True))
    return 0 if all(math.isfinite(d["ratio"]) for d in res["codecs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
