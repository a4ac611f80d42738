"""The whole study on the built-in synthetic data (the command: `vidprobe demo` = `make demo`).

No weights, no downloads, CPU: render synthetic orbits and walk-throughs,
extract features from the controls and from tiny RANDOMLY INITIALISED
instances of every real architecture family, train and evaluate a probe per
backbone, and write the report. Every step resumes: a rerun skips what is
already done.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from vidprobe.metrics.registry import BENCHMARK_METRICS, METRICS

NOTICE = (
    "No model weights were loaded: every backbone here except the controls is a tiny, randomly initialised "
    "instance of the real architecture, on synthetic scenes at a tiny resolution. These numbers test the "
    "pipeline end to end and show the gap between the oracle, pixel and random-feature controls; they say "
    "nothing about how much 3D the real, trained models encode (without weights every architecture row is itself a "
    "random-feature control: dinov2-small and random-dinov2 coincide by construction). Run `vidprobe sweep configs/paper/...` with "
    "real weights for that."
)


@dataclass
class DemoPlan:
    videos: int = 20
    frames: int = 33
    hw: tuple[int, int] = (64, 112)
    out_hw: tuple[int, int] = (32, 56)
    steps: int = 100  # ~0.25 s a step on one busy core: 12 backbones stay within ~8 minutes
    batch_size: int = 4
    lr: float = 3e-3
    # name -> backbone kwargs (all tiny and random: no weights exist here)
    backbones: dict[str, dict] = field(default_factory=dict)


def default_plan(quick: bool = False) -> DemoPlan:
    h, w = 64, 112
    tiny = {"tiny": True, "height": h, "width": w}
    backbones = {
        "oracle": {"height": h, "width": w},
        "pixels": {"height": h, "width": w},
        "random-dinov2": dict(tiny),  # control: the DINOv2 adapter with seeded random weights
        "dinov2-small": dict(tiny),
        "vjepa-vitl16": dict(tiny),
        "videomae-base": dict(tiny),
        "vjepa2-vitl-fpc64-256": {"tiny": True, "height": h, "width": h},  # its RoPE grid is square
        "wan2.1-t2v-1.3b": dict(tiny),
        "cogvideox-2b": dict(tiny),
        "opensora2": dict(tiny),
        "fast3r": dict(tiny),
        "vggt-1b": {"tiny": True, "height": 56, "width": 98},  # patch 14
    }
    if quick:
        keep = ("oracle", "pixels", "dinov2-small")
        return DemoPlan(videos=6, frames=25, steps=6, batch_size=2, backbones={k: backbones[k] for k in keep})
    return DemoPlan(backbones=backbones)


def stage_weights(plan: DemoPlan) -> dict[str, float]:
    """Expected seconds of each stage on one busy core (rendering, then features / training / evaluation per
    backbone, then the report): the shares behind the ETA of the overall progress line."""
    w = {"data": 0.01 * plan.videos * plan.frames}
    for name in plan.backbones:
        w[f"{name}: features"] = 0.5 * plan.videos
        w[f"{name}: training"] = 2.0 + 0.25 * plan.steps
        w[f"{name}: evaluation"] = 3.0 + 0.1 * plan.videos
    w["report"] = 5.0 + 1.5 * len(plan.backbones)
    return w


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


class StageClock:
    """The overall progress of a run of stages: ``overall k/n, elapsed, ETA``, as plain text (fine without a TTY).

    The ETA scales the expected seconds left (:func:`stage_weights`) by how long the stages run so far took against
    what they were expected to take, so it adapts to the machine; a stage found already done (a resumed run) is
    left out of that ratio. Before any stage has finished, the expected seconds themselves are the estimate.
    """

    def __init__(self, weights: dict[str, float], clock=time.monotonic):
        self.weights, self.clock = dict(weights), clock
        self.t0 = clock()
        self.order = list(self.weights)
        self.current: str | None = None
        self.started = self.t0
        self.spent = self.expected = 0.0  # over the measured stages finished
        self.finished: set[str] = set()

    def start(self, stage: str) -> str:
        """Finish the current stage, start ``stage``; the progress text to print with it."""
        self.finish()
        self.current, self.started = stage, self.clock()
        return self.text()

    def finish(self, skipped: bool = False) -> None:
        """End the current stage; ``skipped``: it found its work already done (left out of the ETA's ratio)."""
        if self.current is None:
            return
        if not skipped:
            self.spent += self.clock() - self.started
            self.expected += self.weights.get(self.current, 0.0)
        self.finished.add(self.current)
        self.current = None

    def skip_rest(self, prefix: str) -> None:
        """End the current stage and leave out every stage not started yet whose name starts with ``prefix``
        (a backbone that failed has no training or evaluation left)."""
        self.finish()
        self.finished |= {s for s in self.order if s.startswith(prefix)}

    def text(self) -> str:
        now = self.clock()
        k = len(self.finished) + (self.current is not None)
        rate = self.spent / self.expected if self.expected > 0 else 1.0  # seconds taken per second expected
        left = rate * sum(w for s, w in self.weights.items() if s not in self.finished)
        if self.current is not None:
            left -= now - self.started  # the current stage has run this long already
        return f"overall {k}/{len(self.order)}, {_clock(now - self.t0)} elapsed, ETA {_clock(max(0.0, left))}"


def _complete(dataset_json: Path) -> bool:
    """A finished rendering is there already (the data stage then only checks it)."""
    try:
        return bool(json.loads(dataset_json.read_text()).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False


def run_demo(out: Path, plan: DemoPlan, progress: bool = True, echo=print) -> dict:
    """Run the study; returns a summary dict (also written to ``out/summary.json``)."""
    from vidprobe.atomic import atomic_write_text
    from vidprobe.backbones.base import registry
    from vidprobe.data.synthetic import write_synthetic_dataset
    from vidprobe.features.extract import extract_dataset
    from vidprobe.pipeline.evaluate import evaluate_run
    from vidprobe.probe.train import TrainConfig, find_checkpoint, train
    from vidprobe.results import ResultsDB

    t_start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    echo(f"[demo] {NOTICE}\n")
    data = out / "data"
    clock = StageClock(stage_weights(plan))
    echo(f"[demo] 1/4 synthetic benchmark: {plan.videos} videos x {plan.frames} frames at {plan.hw[0]}x{plan.hw[1]} "
         f"-> {data} | {clock.start('data')}")
    rendered = _complete(data / "dataset.json")
    write_synthetic_dataset(data, plan.videos, num_frames=plan.frames, hw=plan.hw, seed=0, test_fraction=0.25, progress=progress)
    clock.finish(skipped=bool(rendered))

    reg = registry()
    db_path = out / "results.db"
    summary: dict = {"notice": NOTICE, "backbones": {}, "failed": {}}
    max_frame = plan.frames
    for i, (name, kwargs) in enumerate(plan.backbones.items(), 1):
        spec = reg[name][0]
        layer = -1 if spec.default_layer == -1 else 1
        ts = spec.default_timestep
        tag = name.replace("/", "_")
        feats = out / "features" / tag
        run_dir = out / "runs" / tag
        t_bb = time.time()
        echo(f"[demo] 2/4 [{i}/{len(plan.backbones)}] {name}: features (layer {layer}, timestep {ts}) | "
             f"{clock.start(f'{name}: features')}")
        try:
            s = extract_dataset(name, data, feats, [layer], [ts], backbone_kwargs=kwargs, progress=progress)
            clock.finish(skipped=not s.done)  # nothing extracted: the store was complete
            if s.skipped:
                echo(f"[demo]   {len(s.skipped)} videos skipped: {s.skipped}")
            cfg = TrainConfig.from_dict(
                {
                    "features": str(feats),
                    "dataset": str(data),
                    "layer": layer,
                    "timestep": ts,
                    "name": tag,
                    "out": str(run_dir),
                    "probe": {"preset": "tiny"},
                    "sampler": {"num_frames": 4, "min_gap": 5, "max_frame": max_frame, "snap": 4},
                    "optim": {"lr": plan.lr, "warmup_frac": 0.1},
                    "epochs": 10_000,
                    "max_steps": plan.steps,
                    "batch_size": plan.batch_size,
                    "out_hw": list(plan.out_hw),
                    "seed": 42,
                    "device": "cpu",
                    "checkpoint_every": max(1, plan.steps // 2),
                    "checkpoint_epochs": 0,
                }
            )
            last = find_checkpoint(run_dir, "last")
            done = last is not None and json.loads((last / "state.json").read_text())["step"] >= plan.steps
            line = clock.start(f"{name}: training")
            if not done:
                echo(f"[demo] 3/4 [{i}/{len(plan.backbones)}] {name}: training a tiny probe for {plan.steps} steps | {line}")
                train(cfg, resume=last is not None, progress=progress)
            clock.finish(skipped=done)
            with ResultsDB(db_path) as db:
                already = db.find_run(kind="probe", name=tag, status="done")
            clock.start(f"{name}: evaluation")
            if already is None:
                res = evaluate_run(run_dir, which="last", db_path=db_path, save_clips=2, progress=progress, n_resamples=500)
                metrics = res.metrics
            else:
                metrics = json.loads((run_dir / "eval_last" / "metrics.json").read_text()).get("metrics", {})
                clock.finish(skipped=True)
            summary["backbones"][name] = {k: metrics.get(k) for k in BENCHMARK_METRICS}
            summary.setdefault("seconds_per_backbone", {})[name] = round(time.time() - t_bb, 1)
        except Exception as e:  # noqa: BLE001 - one broken backbone must not end the study
            summary["failed"][name] = f"{type(e).__name__}: {e}"
            clock.skip_rest(f"{name}: ")
            echo(f"[demo]   {name} FAILED: {type(e).__name__}: {e}")

    echo(f"[demo] 4/4 report | {clock.start('report')}")
    report_paths = write_demo_report(db_path, out / "report", echo=echo)
    summary["report"] = {k: str(v) for k, v in report_paths.items()}
    summary["seconds"] = round(time.time() - t_start, 1)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    echo("")
    echo(format_summary(summary))
    echo(f"\n[demo] done in {summary['seconds']:.0f} s. Report: {report_paths.get('html', report_paths.get('md'))}")
    echo(f"[demo] {NOTICE}")
    return summary


def write_demo_report(db_path: Path, out_dir: Path, echo=print) -> dict:
    from vidprobe.report.html import write_report

    return write_report(db_path, out_dir, notice=NOTICE, clips_per_run=1,
                        title="vidprobe demo: synthetic scenes, random-weight architectures and controls")


def format_summary(summary: dict) -> str:
    """The benchmark columns per backbone, at the published table's scale (:mod:`vidprobe.metrics.registry`)."""
    specs = [METRICS[m] for m in BENCHMARK_METRICS]
    rows = [("backbone", *[s.column(scaled=True) for s in specs])]
    for name, m in summary["backbones"].items():
        rows.append((name, *["-" if m.get(s.name) is None else format(s.scale(m[s.name]), s.fmt) for s in specs]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for name, err in summary["failed"].items():
        lines.append(f"FAILED {name}: {err}")
    return "\n".join(lines)
