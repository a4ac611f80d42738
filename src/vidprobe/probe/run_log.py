"""The log of a training run: ``log.jsonl`` + ``log.csv`` (one row per step or event), TensorBoard / W&B
when asked; written on rank 0 only. On resume the rows after the checkpoint are dropped (they are redone)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from vidprobe.atomic import atomic_write_text
from vidprobe.probe.train_config import TrainConfig

__all__ = ["RunLogger", "truncate_logs"]


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
