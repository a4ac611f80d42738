"""The log of a training run: ``log.jsonl`` + ``log.csv`` (one row per step or event), TensorBoard / W&B
when asked; written on rank 0 only. On resume the rows after the checkpoint are dropped (they are redone).
:class:`DataWait` measures how much of each step waited on the loader (the run's ``train_summary`` row)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from vidprobe.atomic import atomic_write_text
from vidprobe.probe.train_config import TrainConfig

__all__ = ["DataWait", "RunLogger", "truncate_logs"]


class RunLogger:
    """JSONL + CSV always; TensorBoard / W&B when asked; only on rank 0."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, enabled: bool):
        self.enabled = enabled
        self.run_dir = run_dir
        self.tb = None
        self.wb = None
        self._csv_fields: list[str] | None = None
        if not enabled:
            return
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # pragma: no cover - depends on the extra
                raise ImportError("tensorboard logging needs: pip install 'vidprobe[log]'") from e
            self.tb = SummaryWriter(str(run_dir / "tb"))
        if cfg.wandb:
            try:
                import wandb
            except ImportError as e:  # pragma: no cover
                raise ImportError("W&B logging needs: pip install wandb") from e
            self.wb = wandb.init(project="vidprobe", name=cfg.name, config=cfg.to_dict())

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        csv_path = self.run_dir / "log.csv"
        if self._csv_fields is None:
            self._csv_fields = list(row.keys())
            if csv_path.exists() and csv_path.stat().st_size:
                with open(csv_path) as f:
                    header = next(csv.reader(f), None)
                if header:
                    self._csv_fields = header
        new_file = not csv_path.exists() or csv_path.stat().st_size == 0
        with open(csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._csv_fields, extrasaction="ignore")
            if new_file:
                w.writeheader()
            w.writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, row.get("step", 0))
        if self.wb is not None:
            self.wb.log(row, step=row.get("step"))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()


class DataWait:
    """Time blocked waiting for the next batch against the whole step time, summed over the steps of a run.

    A step is timed from asking the loader for its batch to the loss read back (which waits for the device),
    so ``fraction`` = wait / step time is the share of training the loader held up. The first step is kept
    apart (``first_wait_s``): it also starts the workers and fills the prefetch queue.
    """

    def __init__(self) -> None:
        self.steps = 0
        self.wait_s = 0.0
        self.step_s = 0.0
        self.first_wait_s: float | None = None

    def add(self, wait_s: float, step_s: float) -> None:
        if self.first_wait_s is None:
            self.first_wait_s = wait_s
            return
        self.steps += 1
        self.wait_s += wait_s
        self.step_s += step_s

    @property
    def fraction(self) -> float | None:
        """Time blocked on data / step time over the steps after the first (None before the second step)."""
        return min(1.0, self.wait_s / self.step_s) if self.step_s > 0 else None

    def percent(self) -> str:
        f = self.fraction
        return "-" if f is None else f"{100 * f:.0f}%"

    def summary(self, step: int) -> dict:
        """The run's ``train_summary`` log row."""
        return {"step": step, "event": "train_summary", "timed_steps": self.steps, "data_wait_s": round(self.wait_s, 6),
                "step_time_s": round(self.step_s, 6), "data_wait_fraction": self.fraction,
                "first_step_wait_s": self.first_wait_s}


def truncate_logs(run_dir: Path, step: int) -> None:
    """On resume, drop log rows written after the checkpoint (they will be redone)."""
    jl = run_dir / "log.jsonl"
    if jl.exists():
        rows = [ln for ln in jl.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
        atomic_write_text(jl, "".join(r + "\n" for r in rows))
    cp = run_dir / "log.csv"
    if cp.exists():
        with open(cp) as f:
            rd = list(csv.reader(f))
        if rd:
            head, body = rd[0], rd[1:]
            si = head.index("step") if "step" in head else None
            keep = [r for r in body if si is None or int(float(r[si])) <= step]
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(head)
            w.writerows(keep)
            atomic_write_text(cp, buf.getvalue())
