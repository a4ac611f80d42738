"""Training loader: samples/s of vidprobe's loader vs a whole-file loader (warm and cold page cache), bytes read per
sample, the old per-sample CPU conversion path vs the new one, and the data-wait fraction of a short training run.

WAN2.1-shaped features (81 input frames -> 21 maps of 30 x 52 x C, C = 1536 for WAN-1.3B: 96 MiB per fp16 file);
4-frame samples from the reference sampler (frame 0 + 3 frames at 1+4k below 76, gaps >= 5) -> 4 of 21 maps.
The loaders differ only in how a sample's features are read; the ground truth is one small fixed clip for all
(its cost is the dataset's, the same for every loader), so the figures are the feature path's.

Compared (each a ``ProbeDataset`` through the same DataLoader harness, then the batch's trip to the device, which
here is the CPU):
  vidprobe      ProbeDataset: exact byte ranges of the 4 maps, kept in fp16; to_device converts to fp32 and checks
                NaN/Inf batched (on a GPU that work leaves the CPU; here it is timed on the CPU, separately)
  old path      the loader before this change, reimplemented here: every sample read as fp32 with the store's CPU
                NaN/Inf check, collated as fp32, in the training process (no workers)
  whole file    read the whole per-video file, deserialize, convert to fp32, slice the 4 maps (the reference way)
Warm: files in the page cache; rates after one warm-up batch. Cold: every feature file evicted with
posix_fadvise(POSIX_FADV_DONTNEED) before each pass (a pass = one sample of every video, as an epoch over a
dataset larger than RAM), in the training process; physical bytes from /proc/self/io read_bytes (n/a where the
kernel does not account them). Bytes per sample: exact, from the byte-range plan (distinct maps x bytes per map),
against the file size. Data wait: ``vidprobe.probe.train.train`` on a synthetic dataset with WAN-shaped features,
time blocked on the loader / step time (the run's ``train_summary``), with and without worker processes.
Exit status: 0 when the figures were measured, 1 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_store import evict, read_bytes_io, wan_index  # noqa: E402

from vidprobe.probe.data import ProbeDataset, ProbeSample, resize_ground_truth  # noqa: E402

LAYER, TS = 20, 749
_T0 = time.perf_counter()


def progress(what: str) -> None:
    """A progress line on stderr (the figures go to stdout)."""
    print(f"[{time.perf_counter() - _T0:6.1f} s] {what}", file=sys.stderr, flush=True)


class FixedClips:
    """A GT dataset of ``T``-frame videos that all return one small fixed clip (the loaders' common part)."""

    def __init__(self, root: Path, videos: list[str], T: int, hw: tuple[int, int]):
        from vidprobe.data.clip import Clip

        self.root, self._videos, self.T = root, videos, T
        S, (H, W) = 4, hw
        K = torch.tensor([[float(W), 0, W / 2], [0, float(W), H / 2], [0, 0, 1]]).expand(S, 3, 3).clone()
        E = torch.cat([torch.eye(3), torch.zeros(3, 1)], 1).expand(S, 3, 4).clone()
        self.clip = Clip(images=torch.full((S, 3, H, W), 0.5), depth=torch.ones(S, H, W), valid=torch.ones(S, H, W, dtype=torch.bool),
                         intrinsics=K, extrinsics=E, frame_ids=torch.arange(S))

    def videos(self, split=None) -> list[str]:
        return list(self._videos)

    def num_frames(self, video: str) -> int:
        return self.T

    def load(self, video: str, frames):
        return self.clip


class OldPath(ProbeDataset):
    """``ProbeDataset.get`` before this change: fp32 from the store with its CPU NaN/Inf check on, per sample."""

    def get(self, i, epoch=None):
        from vidprobe.features.store import FeatureStore

        if not hasattr(self, "checked"):
            self.checked = FeatureStore(self.store.root)  # check_finite=True, the store's default
        vid, frames = self.videos[i], self.frames_for(i, epoch)
        feats = self.checked.read(vid, self.layer, self.timestep, frames).float()
        return ProbeSample(vid, frames, feats, resize_ground_truth(self.dataset.load(vid, frames), self.out_hw), "", [])


class WholeFile(ProbeDataset):
    """The whole file read, deserialized, converted to fp32, then the sample's maps sliced out."""

    def get(self, i, epoch=None):
        from safetensors.torch import load

        vid, frames = self.videos[i], self.frames_for(i, epoch)
        path = self.store.path(vid, self.layer, self.timestep)
        d = load(path.read_bytes())
        maps = d["frame_index"][frames]
        return ProbeSample(vid, frames, d["features"].float()[maps],
                           resize_ground_truth(self.dataset.load(vid, frames), self.out_hw), str(path), maps.tolist())


def loaders(store, data, out_hw, seed):
    """The three datasets (vidprobe, old path, whole file) over the same store, GT and frame draws."""
    from vidprobe.data.sampling import FrameSampler

    sampler = FrameSampler(num_frames=4, min_gap=5, max_frame=76, snap=4, method="uniform")
    return {name: cls(store, LAYER, TS, data, None, sampler, out_hw, seed=seed)
            for name, cls in (("vidprobe", ProbeDataset), ("old path", OldPath), ("whole file", WholeFile))}


def old_to_device(batch: dict, device) -> dict:
    """The batch's trip to the device before: already fp32 and checked, only moved."""
    return {**batch, "features": batch["features"].to(device), "gt": {k: v.to(device) for k, v in batch["gt"].items()}}


def rate(ds, keys, workers: int, prep) -> dict:
    """Samples/s of the loader alone and with ``prep`` (the trip to the device), after one warm-up batch."""
    from vidprobe.probe.data import batches, make_loader
    from vidprobe.probe.train_config import LoaderConfig

    cpu = torch.device("cpu")
    it = batches(make_loader(ds, keys, LoaderConfig(workers=workers), cpu))
    prep(next(it), cpu)
    n, t_load, t_prep = 0, 0.0, 0.0
    t = time.perf_counter()
    for b in it:
        t1 = time.perf_counter()
        t_load += t1 - t
        prep(b, cpu)
        t = time.perf_counter()
        t_prep += t - t1
        n += len(b["videos"])
    return {"samples": n, "samples_per_s": n / (t_load + t_prep), "loader_samples_per_s": n / t_load,
            "prep_ms_per_sample": 1e3 * t_prep / n}


def cold_rate(ds, paths, passes: int, prep) -> dict:
    """Samples/s and physical bytes per sample with every file evicted before each pass (no workers)."""
    from vidprobe.probe.data import batches, make_loader
    from vidprobe.probe.train_config import LoaderConfig

    if read_bytes_io() is None or not hasattr(os, "posix_fadvise"):
        return {"samples_per_s": None, "physical_bytes": None}
    cpu, n, dt, phys = torch.device("cpu"), 0, 0.0, 0
    for p in range(passes):
        keys = [[(i, 1000 + p)] for i in range(len(ds))]
        loader = make_loader(ds, keys, LoaderConfig(workers=0), cpu)
        gc.collect()
        for path in paths:
            evict(path)
        a = read_bytes_io()
        t = time.perf_counter()
        for b in batches(loader):
            prep(b, cpu)
            n += 1
        dt += time.perf_counter() - t
        phys += read_bytes_io() - a
    return {"samples_per_s": n / dt, "physical_bytes": phys / n if phys else None}


def plan_bytes(store, ds, keys) -> float:
    """Mean feature bytes per sample of the byte-range plan: distinct maps of the sample x bytes per map."""
    tot, n = 0, 0
    for batch in keys:
        for i, epoch in batch:
            vid = ds.videos[i]
            f = store.header(vid, LAYER, TS).features
            per_map = (f.end - f.start) // f.shape[0]
            maps = store.frame_index(vid, LAYER, TS)[ds.frames_for(i, epoch)]
            tot += per_map * torch.unique(maps).numel()
            n += 1
    return tot / n


def train_wait(root: Path, args, workers: int) -> dict:
    """A short ``train`` run on synthetic GT with WAN-shaped random features: its data-wait fraction."""
    from vidprobe.probe.train import load_config, train

    out = root / f"run_w{workers}"
    cfg = load_config(None, base={
        "features": str(root / "train_feats"), "dataset": str(root / "train_data"), "out": str(out), "epochs": 1000,
        "max_steps": args.train_steps, "batch_size": args.train_batch, "probe": {"preset": args.train_preset},
        "checkpoint_every": 0, "checkpoint_epochs": 0, "keep_checkpoints": 1, "out_hw": list(args.train_hw),
        "loader": {"workers": workers}, "device": "cpu", "seed": 0})
    t = time.perf_counter()
    res = train(cfg, progress=False)
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    (s,) = [r for r in rows if r.get("event") == "train_summary"]
    return {"workers": workers, "steps": res.steps, "data_wait_fraction": s["data_wait_fraction"],
            "step_s": s["step_time_s"] / max(1, s["timed_steps"]), "wait_ms_per_step": 1e3 * s["data_wait_s"] / max(1, s["timed_steps"]),
            "wall_s": time.perf_counter() - t}


def write_train_inputs(root: Path, args) -> None:
    """Synthetic videos (``--train-frames``) and random features for them in WAN's layout (grid ``--train-grid``)."""
    from vidprobe.data.open import open_dataset
    from vidprobe.data.synthetic import write_synthetic_dataset
    from vidprobe.features.store import key_dirname, prepare_store, store_settings, video_filename, write_feature_file

    write_synthetic_dataset(root / "train_data", args.train_videos, num_frames=args.train_frames, hw=tuple(args.train_hw),
                            seed=0, test_fraction=0.0, progress=False)
    feats = root / "train_feats"
    prepare_store(feats, store_settings("bench", dtype=args.dtype, frame_layout="vae4x"), [(LAYER, TS)])
    fi = wan_index(args.train_frames)
    g = torch.Generator().manual_seed(1)
    for v in open_dataset(root / "train_data").videos(None):
        write_feature_file(feats / key_dirname(LAYER, TS) / video_filename(v),
                           torch.randn(int(fi.max()) + 1, *args.train_grid, args.channels, generator=g), fi, {"video_id": v}, args.dtype)


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--frames", type=int, default=81, help="input frames per video (maps = 1 + (frames-1)//4)")
    ap.add_argument("--height", type=int, default=30)
    ap.add_argument("--width", type=int, default=52)
    ap.add_argument("--channels", type=int, default=1536, help="1536: WAN-1.3B")
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=None, help="worker processes (default: the loader's, min(4, CPUs-1))")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every warm measurement (median)")
    ap.add_argument("--fast-batches", type=int, default=6, help="timed batches per round: vidprobe")
    ap.add_argument("--slow-batches", type=int, default=2, help="timed batches per round: old path")
    ap.add_argument("--whole-batches", type=int, default=1, help="timed batches per round: whole file")
    ap.add_argument("--cold-passes", type=int, default=2)
    ap.add_argument("--train-preset", default="tiny", help="probe preset of the data-wait runs (reference: minutes a step here)")
    ap.add_argument("--train-steps", type=int, default=6)
    ap.add_argument("--train-batch", type=int, default=2)
    ap.add_argument("--train-videos", type=int, default=4)
    ap.add_argument("--train-frames", type=int, default=33)
    ap.add_argument("--train-grid", type=int, nargs=2, default=[8, 13])
    ap.add_argument("--train-hw", type=int, nargs=2, default=[32, 52])
    ap.add_argument("--dir", default=None, help="where to write the store (default: a temp dir on the working disk)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from vidprobe.features.store import FeatureStore, key_dirname, prepare_store, store_settings, video_filename, write_feature_file
    from vidprobe.probe.data import StepBatches, batches, make_loader
    from vidprobe.probe.inputs import to_device
    from vidprobe.probe.train_config import LoaderConfig

    workers = LoaderConfig(workers=args.workers).num_workers()
    threads = torch.get_num_threads()
    T, h, w, C = args.frames, args.height, args.width, args.channels
    fi = wan_index(T)
    N = int(fi.max()) + 1
    tmp = tempfile.TemporaryDirectory(prefix="bench_loader_", dir=args.dir or Path(__file__).resolve().parent)
    root = Path(tmp.name)
    t0 = time.perf_counter()
    prepare_store(root / "feats", store_settings("bench", dtype=args.dtype, input_hw=(h * 16, w * 16), frame_layout="vae4x"), [(LAYER, TS)])
    vids = [f"v{i:03d}" for i in range(args.videos)]
    g = torch.Generator().manual_seed(args.seed)
    for v in vids:
        write_feature_file(root / "feats" / key_dirname(LAYER, TS) / video_filename(v), torch.randn(N, h, w, C, generator=g), fi,
                           {"video_id": v}, args.dtype)
    store = FeatureStore(root / "feats")
    paths = [store.path(v, LAYER, TS) for v in vids]
    file_size = paths[0].stat().st_size
    print(f"# store: {args.videos} videos x {N} maps x {h}x{w}x{C} {args.dtype} = {file_size / 2**20:.1f} MiB per file; "
          f"batches of {args.batch} 4-frame samples; workers = {workers} (of {os.cpu_count()} CPUs); "
          f"written in {time.perf_counter() - t0:.1f} s")
    dss = loaders(store, FixedClips(root, vids, T, (h, w)), (h, w), args.seed)
    spe = max(1, -(-len(vids) // args.batch))

    def keys(start, n_batches):
        return StepBatches(len(vids), args.batch, spe, args.seed, start, start + n_batches)

    # sanity: every loader gives the same fp32 features (as to_device delivers them)
    cpu = torch.device("cpu")
    b = {name: to_device(next(batches(make_loader(ds, keys(0, 1), LoaderConfig(workers=0), cpu))), cpu)["features"]
         for name, ds in dss.items()}
    if not (torch.equal(b["vidprobe"], b["whole file"]) and torch.equal(b["vidprobe"], b["old path"])):
        print("ERROR: the loaders disagree on the features", file=sys.stderr)
        return 1

    # warm: the methods interleaved round by round (a shared machine drifts), one torch thread (as in a worker)
    torch.set_num_threads(1)
    methods = [("vidprobe", w_, args.fast_batches, to_device) for w_ in dict.fromkeys((0, workers))]
    methods += [("old path", 0, args.slow_batches, old_to_device)]
    methods += [("whole file", w_, args.whole_batches, to_device) for w_ in dict.fromkeys((0, workers))]
    runs: dict[str, list[dict]] = {f"{m}, workers={w_}": [] for m, w_, _, _ in methods}
    for r in range(args.rounds):
        for name, wk, nb, prep in methods:
            progress(f"warm round {r + 1}/{args.rounds}: {name}, workers={wk}")
            runs[f"{name}, workers={wk}"].append(rate(dss[name], keys(1 + 100 * r, nb + 1), wk, prep))
    warm = {k: {f: median([x[f] for x in v]) for f in v[0]} for k, v in runs.items()}
    plan = plan_bytes(store, dss["vidprobe"], keys(0, 50))
    ds0 = dss["vidprobe"]
    ds0.store._cache.clear()  # count each file's header and frame index once, as a fresh reader does
    before = ds0.store.bytes_read
    for _ in batches(make_loader(ds0, keys(0, 50), LoaderConfig(workers=0), cpu)):
        pass
    logical = (ds0.store.bytes_read - before) / (50 * args.batch)
    progress("cold passes")
    cold = {name: cold_rate(dss[name], paths, args.cold_passes, prep)
            for name, prep in (("vidprobe", to_device), ("old path", old_to_device), ("whole file", to_device))}
    torch.set_num_threads(threads)

    progress("training inputs")
    t = time.perf_counter()
    write_train_inputs(root, args)
    t_inputs = time.perf_counter() - t
    progress("training runs")
    waits = [train_wait(root, args, wk) for wk in dict.fromkeys((0, workers))]
    tmp.cleanup()

    base_w = warm[f"whole file, workers={workers}"]
    print(f"# warm page cache, 1 torch thread, median of {args.rounds} interleaved rounds: samples/s of the loader + "
          f"to_device on this CPU, of the loader alone (the training process blocked in next()), to_device ms/sample")
    print(f"{'method':<24} {'samples/s':>10} {'x whole':>8} {'loader s/s':>11} {'x whole':>8} {'prep ms':>8}")
    for name, r in warm.items():
        r["x_whole"] = r["samples_per_s"] / base_w["samples_per_s"]
        r["loader_x_whole"] = r["loader_samples_per_s"] / base_w["loader_samples_per_s"]
        print(f"{name:<24} {r['samples_per_s']:>10.1f} {r['x_whole']:>8.2f} {r['loader_samples_per_s']:>11.1f} "
              f"{r['loader_x_whole']:>8.2f} {r['prep_ms_per_sample']:>8.2f}")
    new_w, new0 = warm[f"vidprobe, workers={workers}"], warm["vidprobe, workers=0"]
    old, whole0 = warm["old path, workers=0"], warm["whole file, workers=0"]
    ratios = {"warm_vs_whole": new_w["samples_per_s"] / base_w["samples_per_s"],
              "warm_loader_vs_whole": new_w["loader_samples_per_s"] / base_w["loader_samples_per_s"],
              "warm_vs_whole_workers0": new0["samples_per_s"] / whole0["samples_per_s"],
              "new_vs_old": new_w["samples_per_s"] / old["samples_per_s"],
              "new_loader_vs_old": new_w["loader_samples_per_s"] / old["samples_per_s"],
              "new_vs_old_workers0": new0["samples_per_s"] / old["samples_per_s"],
              "old_vs_whole_workers0": old["samples_per_s"] / whole0["samples_per_s"]}
    cw = cold["whole file"]
    print(f"# cold page cache (every file evicted before each pass of {args.videos} samples; {args.cold_passes} passes; "
          f"no workers; 1 torch thread)")
    print(f"{'method':<24} {'samples/s':>10} {'x whole':>8} {'phys MiB/sample':>16}")

    def fmt(x, f):
        return "n/a" if x is None else format(x, f)

    for name, r in cold.items():
        r["x_whole"] = r["samples_per_s"] / cw["samples_per_s"] if r["samples_per_s"] and cw["samples_per_s"] else None
        print(f"{name:<24} {fmt(r['samples_per_s'], '10.1f'):>10} {fmt(r['x_whole'], '8.2f'):>8} "
              f"{fmt(None if r['physical_bytes'] is None else r['physical_bytes'] / 2**20, '16.2f'):>16}")
    ratios["cold_vs_whole"] = cold["vidprobe"]["x_whole"]
    ratios["cold_new_vs_old"] = (cold["vidprobe"]["samples_per_s"] / cold["old path"]["samples_per_s"]
                                 if cold["old path"]["samples_per_s"] else None)
    ratios["bytes_per_sample_vs_file"] = plan / file_size
    print(f"# bytes per sample (byte-range plan): {plan / 2**20:.3f} MiB of features = {plan / file_size:.4f} of the "
          f"{file_size / 2**20:.2f} MiB file (4/{N} = {4 / N:.4f}); read by the store incl. each file's header and "
          f"frame index once: {logical / 2**20:.3f} MiB")
    print(f"# data wait in train() on this CPU ({threads} threads): preset {args.train_preset}, batch {args.train_batch}, "
          f"{args.train_steps} steps, features {args.train_grid[0]}x{args.train_grid[1]}x{C} {args.dtype}, GT "
          f"{args.train_hw[0]}x{args.train_hw[1]} (synthetic, {args.train_videos} videos of {args.train_frames} frames, "
          f"written in {t_inputs:.1f} s)")
    for r in waits:
        print(f"  workers={r['workers']}: data-wait fraction {r['data_wait_fraction']:.3f} "
              f"({r['wait_ms_per_step']:.1f} ms blocked of {1e3 * r['step_s']:.0f} ms per step; run {r['wall_s']:.1f} s)")
    print(f"# ratios: vidprobe / whole file, warm {ratios['warm_vs_whole']:.2f}x (loader alone "
          f"{ratios['warm_loader_vs_whole']:.2f}x; no workers {ratios['warm_vs_whole_workers0']:.2f}x), cold "
          f"{fmt(ratios['cold_vs_whole'], '.2f')}x; new / old path {ratios['new_vs_old']:.2f}x (loader alone "
          f"{ratios['new_loader_vs_old']:.2f}x; no workers {ratios['new_vs_old_workers0']:.2f}x); old path / whole file "
          f"{ratios['old_vs_whole_workers0']:.2f}x")
    if args.json:
        out = {"config": vars(args), "workers": workers, "maps": N, "file_bytes": file_size, "plan_bytes": plan,
               "logical_bytes": logical, "warm": warm, "warm_rounds": runs, "cold": cold, "train": waits, "ratios": ratios}
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
