"""The launcher settings (:class:`LauncherConfig`): where and how `extract` / `sweep` jobs are submitted.

A sweep config's ``launcher:`` section is one of these (loaded through :func:`vidprobe.config.load` with the rest
of the sweep config: an unknown key or a bad value fails naming ``launcher.<key>``); the ``--launcher``,
``--partition``, ``--gpus``, ... flags of `vidprobe extract` and `vidprobe sweep` override it key by key
(:func:`resolve_launcher`). Nothing here touches what a job computes: no sweep hash includes it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vidprobe.config import ConfigError, choices, load, to_plain

__all__ = ["BACKENDS", "FLAGS", "LauncherConfig", "resolve_launcher", "slurm_minutes"]

#: none: run in this process (no submitit); local: submitit's LocalExecutor (processes on this machine); slurm.
BACKENDS = ("none", "local", "slurm")
#: the command-line flag of each field (messages name the flag when the value came from it)
FLAGS = {"backend": "--launcher", "partition": "--partition", "gpus": "--gpus", "cpus": "--cpus", "time": "--time",
         "account": "--account", "qos": "--qos", "mem": "--mem", "sbatch": "--sbatch", "max_parallel": "--max-parallel",
         "log_dir": "--log-dir"}
#: sbatch options submitit sets itself, or that a typed field sets (the field is named in the refusal)
_OWNED = {"array": "", "output": "", "error": "", "signal": "", "open-mode": "", "wckey": "", "job-name": "",
          "partition": "partition", "time": "time", "account": "account", "qos": "qos", "mem": "mem",
          "gpus-per-node": "gpus", "cpus-per-task": "cpus", "nodes": "", "ntasks-per-node": ""}


@dataclass
class LauncherConfig:
    """``launcher:``: the backend and the resources of every job (one node, one task per job)."""

    backend: str = field(default="none", metadata=choices(BACKENDS))
    partition: str | None = None
    gpus: int = 0  # per job; > 1: a sweep cell trains under torchrun with one process per GPU
    cpus: int | None = None  # per job (torch threads too)
    time: str = "4:00:00"  # per job: minutes or [D-]H:MM:SS; a job past it is checkpointed and requeued
    account: str | None = None
    qos: str | None = None
    mem: str | None = None  # e.g. 64G
    sbatch: dict[str, Any] = field(default_factory=dict)  # extra sbatch options, e.g. {constraint: a100}
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load ...)
    max_parallel: int | None = None  # array tasks running at once (sbatch --array=...%N)
    max_timeouts: int = 3  # requeues after hitting the time limit (pre-emptions are not counted)
    log_dir: str | None = None  # default: the store's .jobs/ (extract) or OUT/jobs/ (sweep)

    @property
    def minutes(self) -> int:
        return slurm_minutes(self.time)

    def validate(self, given: set[str] = frozenset(), path: str = "launcher") -> LauncherConfig:
        """Check values across the schema's types; errors name ``launcher.<key>`` (and the flag in ``given``)."""

        def bad(key: str, msg: str) -> ConfigError:
            flag = f" (from {FLAGS[key]})" if key in given else ""
            return ConfigError(f"{path}.{key}{flag}: {msg}", f"{path}.{key}")

        for key, low in (("gpus", 0), ("cpus", 1), ("max_parallel", 1), ("max_timeouts", 0)):
            v = getattr(self, key)
            if v is not None and v < low:
                raise bad(key, f"must be >= {low}, got {v}")
        try:
            slurm_minutes(self.time)
        except ValueError as e:
            raise bad("time", str(e)) from None
        if self.mem is not None and not re.fullmatch(r"\d+(\.\d+)?[KMGT]?B?", self.mem.strip(), re.I):
            raise bad("mem", f"expected a size such as 64G or 500M, got {self.mem!r}")
        for k in self.sbatch:
            name = str(k).replace("_", "-")
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", name):
                raise bad("sbatch", f"{k!r} is not an sbatch option name")
            if name in _OWNED:
                owner = _OWNED[name]
                raise bad("sbatch", f"{k!r} is set " + (f"by {path}.{owner} ({FLAGS[owner]})" if owner else "by the launcher"))
        return self


def slurm_minutes(text: str) -> int:
    """Slurm's time formats (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``) in whole minutes, rounded up."""
    s = str(text).strip()
    days, _, rest = s.rpartition("-") if "-" in s else ("", "", s)
    parts = rest.split(":")
    if not all(p.isdigit() for p in parts) or len(parts) > 3 or ("-" in s and not days.isdigit()):
        raise ValueError(f"expected minutes or [D-]H:MM:SS, got {text!r}")
    n = [int(p) for p in parts]
    if days:  # D-H, D-H:M, D-H:M:S
        h, m, sec = (n + [0, 0])[:3]
        total = int(days) * 1440 + h * 60 + m + sec / 60
    else:  # M, M:S, H:M:S
        total = {1: lambda: n[0], 2: lambda: n[0] + n[1] / 60, 3: lambda: n[0] * 60 + n[1] + n[2] / 60}[len(n)]()
    if total <= 0:
        raise ValueError(f"must be more than zero, got {text!r}")
    return math.ceil(total)


def resolve_launcher(section: Mapping | LauncherConfig | None, flags: Mapping[str, Any] | None = None,
                     where: str = "") -> LauncherConfig:
    """The config's ``launcher:`` section with the given flags on top (None = not given; ``sbatch`` merges)."""
    base = to_plain(section) if isinstance(section, LauncherConfig) else dict(section or {})
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    if "sbatch" in given:
        given["sbatch"] = {**dict(base.get("sbatch") or {}), **given["sbatch"]}
    try:
        return load(LauncherConfig, {**base, **given}, path="launcher").validate(set(given))
    except ConfigError as e:
        key = e.path.partition(".")[2].split(".")[0].split("[")[0]
        prefix = FLAGS.get(key, key) if key in given and "(from --" not in str(e) else where
        raise ConfigError(f"{prefix}: {e}" if prefix else str(e), e.path) from None
