"""GPU check: extraction throughput, probe step time, peak memory against the planner's model, loader data wait.

Run by ``benchmarks/gpu_check.sh`` on a machine with a CUDA GPU (CI never runs it); writes
``benchmarks/GPU_RESULTS.md`` after every section, so a run cut short keeps what it measured. No downloads: every
model has random weights (DINOv2-base through its ``random_init`` build; WAN2.1-1.3B built at full size from
:mod:`vidprobe.backbones.fullsize` and wrapped in its adapter).

Sections, each bounded by the time left of ``--budget-s`` and skipped (with the reason) when it does not fit:

1. extraction, bf16: videos/s and frames/s, ``torch.cuda.max_memory_allocated`` against
   :func:`vidprobe.pipeline.plan_meta.trace_extraction` (parameters + traced activations);
2. probe training step (reference probe, bf16 autocast, AdamW, the real loss): eager vs ``torch.compile``, with
   and without gradient checkpointing: ms/step and peak memory against :func:`vidprobe.pipeline.plan.train_memory`;
3. a short real training run through ``vidprobe.probe.train`` on synthetic data: the loader's data-wait fraction.

``--cpu-smoke`` runs every section with tiny models on the CPU in well under a minute (the CPU allocator's peak,
from the profiler, stands in for ``max_memory_allocated``), to show the script works before a GPU is lent.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from vidprobe.atomic import atomic_write_text  # noqa: E402
from vidprobe.pipeline.plan import human  # noqa: E402


class Report:
    """The results page, rewritten (atomically) whenever a section changes."""

    def __init__(self, path: Path, header: list[str]):
        self.path, self.header, self.sections = path, header, {}

    def section(self, title: str, lines: list[str]) -> None:
        self.sections[title] = list(lines)
        self.write()

    def write(self) -> None:
        body = [line for t, ls in self.sections.items() for line in ("", f"## {t}", "", *ls)]
        atomic_write_text(self.path, "\n".join(self.header + body) + "\n")


class Clock:
    def __init__(self, budget_s: float):
        self.t0, self.budget = time.monotonic(), budget_s

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure_peak(dev: torch.device, fn):
    """``(fn(), peak bytes, bytes allocated before)``: CUDA's ``max_memory_allocated``; on the CPU the allocator's
    profiler peak above what was allocated before (``base`` unknown there: 0)."""
    if dev.type == "cuda":
        _sync(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        out = fn()
        _sync(dev)
        return out, torch.cuda.max_memory_allocated(dev), base
    from vidprobe.pipeline.plan_memory import measured_cpu_peak

    out, peak = measured_cpu_peak(fn)
    return out, peak, 0


def _err(est: float, meas: float) -> str:
    return f"{100 * (est / meas - 1):+.1f} %" if meas else "-"


# ------------------------------------------------------------------------------------------ 1. extraction
def wan_random(dev: torch.device, dtype: torch.dtype, hw: tuple[int, int]):
    """WAN2.1-1.3B at full size with random weights on ``dev`` (the VAE in fp32, as the adapter runs it)."""
    import diffusers

    from vidprobe.backbones import fullsize as fs
    from vidprobe.backbones import wan
    from vidprobe.backbones.base import registry

    spec = registry()["wan2.1-t2v-1.3b"][0]
    with torch.device(dev):
        tr = diffusers.WanTransformer3DModel(**fs.fullsize(spec.name, "transformer")).to(dtype)
        vae = diffusers.AutoencoderKLWan(**fs.fullsize(spec.name, "vae"))
    return wan.WanBackbone(spec, tr, vae, wan.make_scheduler(tiny=True), torch.zeros(1, *fs.WAN21_TEXT), hw, dev,
                           dtype, vae_dtype=torch.float32, resize="bilinear")


def extraction_cases(smoke: bool):
    """(name, build kwargs for the planner, frames, native frame size, layers, timesteps, builder)."""
    from vidprobe.backbones.base import get_backbone

    if smoke:
        return [
            ("dinov2-small", {"tiny": True, "height": 28, "width": 56}, 8, (28, 56), [-1], [None],
             lambda dev, kw: get_backbone("dinov2-small", device=dev, **kw)),
            ("wan2.1-t2v-1.3b", {"tiny": True, "height": 32, "width": 48}, 9, (32, 48), [2], [749],
             lambda dev, kw: get_backbone("wan2.1-t2v-1.3b", device=dev, **kw)),
        ]
    return [
        ("dinov2-base", {"dtype": "bf16"}, 32, (540, 960), [-1], [None],
         lambda dev, kw: get_backbone("dinov2-base", random_init=True, device=dev, **kw)),
        ("wan2.1-t2v-1.3b", {"dtype": "bf16", "height": 480, "width": 832}, 81, (540, 960), [21], [749],
         lambda dev, kw: wan_random(dev, torch.bfloat16, (480, 832))),
    ]


def check_extraction(dev, smoke: bool, clock: Clock, report: Report) -> None:
    from vidprobe.pipeline.plan_meta import trace_extraction

    rows = ["| model | frames | videos/s | frames/s | params (model) | est. peak | measured peak | error | "
            "est. activations | measured | error |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, kw, T, hw, layers, ts, build in extraction_cases(smoke):
        if clock.left() < 60 and not smoke:
            rows.append(f"| {name} | skipped: {clock.left():.0f} s left |")
            continue
        try:
            est = trace_extraction(name, kw, T, layers, ts, native_hw=hw, device=dev.type)
            bb = build(dev, kw)
            video = torch.rand(T, 3, *hw, generator=torch.Generator().manual_seed(0))
            bb.extract(video, layers, ts)  # warm-up (cuDNN algorithms, caches)
            _, peak, base = measure_peak(dev, lambda: bb.extract(video, layers, ts))
            if dev.type == "cpu":  # the profiler's peak is above the (resident) parameters
                base = est.param_bytes
                peak += base
            n = 1 if smoke else 3
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(n):
                bb.extract(video, layers, ts)
            _sync(dev)
            dt = (time.perf_counter() - t0) / n
            act_est = max(est.encode_peak, est.forward_peak)
            rows.append(f"| {name} {est.dtype} | {T} | {1 / dt:.2f} | {T / dt:.1f} | {human(est.param_bytes)} "
                        f"({human(base)} resident) | {human(est.peak())} | {human(peak)} | {_err(est.peak(), peak)} | "
                        f"{human(act_est)} | {human(peak - base)} | {_err(act_est, peak - base)} |")
            del bb
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001 - a section fails alone, its reason recorded
            rows.append(f"| {name} | failed: {type(e).__name__}: {e} |")
            traceback.print_exc()
        report.section("Extraction (bf16 on GPU; the planner's memory model vs measured)", rows)


# ------------------------------------------------------------------------------------------ 2. probe steps
def probe_setup(dev, smoke: bool, ck: bool):
    from vidprobe.probe.train_config import TrainConfig

    if smoke:
        B, S, h, w, C, out, preset = 2, 2, 4, 7, 16, (14, 28), {"preset": "tiny", "depth": 1, "camera_depth": 1}
    else:
        B, S, h, w, C, out, preset = 4, 4, 30, 52, 1536, (294, 518), {"preset": "reference"}
    tc = TrainConfig.from_dict({"features": "-", "dataset": "-", "batch_size": B, "grad_checkpointing": ck,
                                "sampler": {"num_frames": S}, "probe": preset, "out_hw": list(out),
                                "compat": "reference"})
    return tc, (B, S, h, w, C, out)


def probe_step_fn(dev, tc, shape, compiled: bool):
    """A training step of the probe as the loop runs it (bf16 autocast on CUDA around the forward)."""
    from vidprobe.pipeline.plan_memory import train_step
    from vidprobe.probe.inputs import autocast_ctx
    from vidprobe.probe.losses import probe_loss
    from vidprobe.probe.model import Probe
    from vidprobe.probe.schedule import build_optimizer

    B, S, h, w, C, (H, W) = shape
    torch.manual_seed(0)
    pcfg = tc.probe_config(C, (H, W))
    pcfg.grad_checkpointing = tc.grad_checkpointing
    probe = Probe(pcfg).to(dev).train()
    opt = build_optimizer(probe, tc.optim)
    fwd = torch.compile(probe) if compiled else probe
    lcfg = tc.loss_config()

    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.probe = probe

        def forward(self, x):
            with autocast_ctx(dev, tc.precision):
                return fwd(x)

    model = Step()
    K = torch.tensor([[200.0, 0, W / 2], [0, 200, H / 2], [0, 0, 1]], device=dev)

    def batch():
        gt = {"points": torch.rand(B, S, H, W, 3, device=dev) + torch.tensor([0, 0, 1.0], device=dev),
              "depth": torch.rand(B, S, H, W, device=dev) + 1, "valid": torch.ones(B, S, H, W, dtype=torch.bool, device=dev),
              "confidence": torch.rand(B, S, H, W, device=dev),
              "extrinsics": torch.eye(4, device=dev)[:3].expand(B, S, 3, 4).contiguous(),
              "intrinsics": K.expand(B, S, 3, 3).contiguous(), "images": torch.rand(B, S, 3, H, W, device=dev)}
        return torch.rand(B, S, h, w, C, device=dev, dtype=torch.float16).float(), gt

    return lambda: train_step(model, opt, batch, lambda pred, gt: probe_loss(pred, gt, (H, W), lcfg)[0],
                              grad_clip=float(tc.optim.grad_clip or 0.0)), probe, opt


def check_probe(dev, smoke: bool, clock: Clock, report: Report) -> None:
    from vidprobe.pipeline.plan import train_memory
    from vidprobe.pipeline.plan_memory import state_bytes

    rows = ["| probe step | ms/step | measured peak | est. peak | error | est. step activations | measured | error |",
            "|---|---|---|---|---|---|---|---|"]
    for compiled in (False, True):
        for ck in (False, True):
            label = f"{'compile' if compiled else 'eager'}, checkpointing {'on' if ck else 'off'}"
            need = 30 if not compiled else 150
            if not smoke and clock.left() < need:
                rows.append(f"| {label} | skipped: {clock.left():.0f} s left |")
                continue
            if smoke and compiled:
                rows.append(f"| {label} | skipped on the CPU smoke run |")
                continue
            try:
                tc, shape = probe_setup(dev, smoke, ck)
                step, probe, opt = probe_step_fn(dev, tc, shape, compiled)
                for _ in range(1 if smoke else 3):
                    step()  # warm-up: AdamW state, compilation, cuDNN algorithms
                resident = sum(state_bytes(probe, opt))
                _, peak, base = measure_peak(dev, step)
                if dev.type == "cpu":
                    peak, base = peak + resident, resident
                n = 2 if smoke else 10
                _sync(dev)
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    step()
                    _sync(dev)
                    times.append(time.perf_counter() - t0)
                est = train_memory(tc, shape[1:5], shape[5], dev.type, bf16=dev.type == "cuda")
                rows.append(f"| {label} | {1000 * statistics.median(times):.1f} | {human(peak)} | {human(est.total)} | "
                            f"{_err(est.total, peak)} | {human(est.activations)} | {human(peak - base)} | "
                            f"{_err(est.activations, peak - base)} |")
                del step, probe, opt
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            except Exception as e:  # noqa: BLE001
                rows.append(f"| {label} | failed: {type(e).__name__}: {e} |")
                traceback.print_exc()
            _probe_report(report, dev, smoke, rows)
    _probe_report(report, dev, smoke, rows)


def _probe_report(report: Report, dev, smoke: bool, rows: list[str]) -> None:
    report.section("Probe training step (bf16 autocast on GPU, AdamW, the real loss)",
                   [f"batch, frames, token rows, columns, channels, output size: {probe_setup(dev, smoke, False)[1]}",
                    "", *rows])


# ------------------------------------------------------------------------------------------ 3. data wait
def check_data_wait(dev, smoke: bool, clock: Clock, report: Report) -> None:
    if not smoke and clock.left() < 60:
        report.section("Loader data wait", [f"skipped: {clock.left():.0f} s left"])
        return
    from vidprobe.data.synthetic import write_synthetic_dataset
    from vidprobe.features.extract import extract_dataset
    from vidprobe.probe.train import TrainConfig, train

    videos, frames, hw = (4, 9, (32, 56)) if smoke else (8, 33, (96, 168))
    lines = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            data = write_synthetic_dataset(root / "data", videos, num_frames=frames, hw=hw, progress=False,
                                           test_fraction=0.25)
            kw = {"tiny": True, "height": 28, "width": 56} if smoke else {"random_init": True, "height": 224,
                                                                         "width": 392}
            extract_dataset("dinov2-small", data, root / "feats", [-1], [None], backbone_kwargs={**kw, "device": str(dev)},
                            progress=False)
            tc = TrainConfig.from_dict({
                "features": str(root / "feats"), "dataset": str(data), "out": str(root / "run"), "epochs": 1000,
                "max_steps": 4 if smoke else 60, "batch_size": 2 if smoke else 4, "device": str(dev),
                "out_hw": [16, 28] if smoke else [96, 168], "probe": {"preset": "tiny" if smoke else "small"},
                "sampler": {"num_frames": 2 if smoke else 4, "min_gap": 1, "max_frame": frames, "snap": 1}})
            t0 = time.perf_counter()
            res = train(tc, progress=False)
            dt = time.perf_counter() - t0
            frac = getattr(res, "data_wait_fraction", None)
            lines += [f"{res.steps} steps in {dt:.1f} s ({videos} videos x {frames} frames, DINOv2-small features "
                      f"at {kw['height']}x{kw['width']}, loader workers: default)",
                      f"data-wait fraction: {'not recorded' if frac is None else f'{100 * frac:.1f} %'}"]
    except Exception as e:  # noqa: BLE001
        lines.append(f"failed: {type(e).__name__}: {e}")
        traceback.print_exc()
    report.section("Loader data wait (a short `vidprobe train` run on synthetic data)", lines)


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny models on the CPU: check the script runs")
    ap.add_argument("--out", type=Path, default=None, help="results page (default benchmarks/GPU_RESULTS.md; "
                    "with --cpu-smoke a temporary file)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting sections after this many seconds")
    args = ap.parse_args(argv)
    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --cpu-smoke to test the script on the CPU)", file=sys.stderr)
        return 2
    dev = torch.device("cpu" if smoke else "cuda")
    if smoke:
        torch.set_num_threads(1)
    out = args.out or (Path(tempfile.gettempdir()) / "GPU_RESULTS.cpu-smoke.md" if smoke else ROOT / "benchmarks" /
                       "GPU_RESULTS.md")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu"
    report = Report(out, ["# GPU check (benchmarks/gpu_check.py)", "",
                          f"{time.strftime('%Y-%m-%d %H:%M')}; {name}; torch {torch.__version__}"
                          f"{'; CUDA ' + str(torch.version.cuda) if dev.type == 'cuda' else ''}"
                          f"{'; CPU SMOKE RUN (tiny models; not GPU numbers)' if smoke else ''}", "",
                          "Errors are the planner's estimate against the measurement (`vidprobe plan`, "
                          "src/vidprobe/pipeline/plan_memory.py)."])
    report.write()
    clock = Clock(args.budget_s)
    for section in (check_extraction, check_probe, check_data_wait):
        section(dev, smoke, clock, report)
    report.section("Run", [f"{time.monotonic() - clock.t0:.0f} s in all"])
    print(f"gpu_check: wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
