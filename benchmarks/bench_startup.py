"""Start-up time of the command line: `vidprobe --help`, `vidprobe version` and an argument error (target < 1 s).

Each command runs ``--runs`` times in a fresh subprocess (the installed ``vidprobe`` script next to this Python, or
``python -m vidprobe.cli`` without one); the figure is the median wall time from spawn to exit, with the fastest run
beside it. ``python -c pass`` (the interpreter alone) and ``python -c "import torch"`` (what the lazy imports keep
out of these commands: tests/test_lazy.py) are measured the same way as yardsticks. One warm-up run of each first
(the page cache, .pyc files). Exit 0 when measured, 1 when a command fails or exits with an unexpected status.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 1.0


def vidprobe_cmd() -> list[str]:
    script = Path(sys.executable).parent / "vidprobe"
    return [str(script)] if script.is_file() and os.access(script, os.X_OK) else [sys.executable, "-m", "vidprobe.cli"]


def cases() -> list[tuple[str, list[str], int]]:
    """(label, argv, expected exit status)."""
    vp = vidprobe_cmd()
    return [
        ("vidprobe --help", [*vp, "--help"], 0),
        ("vidprobe version", [*vp, "version"], 0),
        ("vidprobe extract --no-such-flag (argument error)", [*vp, "extract", "--no-such-flag"], 2),
        ("python -c pass (interpreter only)", [sys.executable, "-c", "pass"], 0),
        ('python -c "import torch" (kept out)', [sys.executable, "-c", "import torch"], 0),
    ]


def wall_times(argv: list[str], expect: int, runs: int) -> list[float]:
    env = dict(os.environ, COLUMNS="100")
    out = []
    for i in range(runs + 1):
        t = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        dt = time.perf_counter() - t
        if r.returncode != expect:
            raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}, expected {expect}: {r.stderr[-500:]}")
        if i:  # the first run warms the caches
            out.append(dt)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="timed runs per command (after one warm-up run)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    res = {}
    try:
        for label, cmd, expect in cases():
            ts = wall_times(cmd, expect, max(1, args.runs))
            res[label] = {"median_s": statistics.median(ts), "min_s": min(ts), "runs": len(ts)}
    except (OSError, RuntimeError) as ex:
        print(f"ERROR: bench_startup could not run: {type(ex).__name__}: {ex}", file=sys.stderr)
        return 1
    cli = [k for k in res if k.startswith("vidprobe")]
    worst = max(res[k]["median_s"] for k in cli)
    print(f"# start-up: wall time of a fresh subprocess, median of {args.runs} runs after one warm-up "
          f"({' '.join(vidprobe_cmd())}); load average {os.getloadavg()[0]:.1f}")
    for k, v in res.items():
        print(f"  {k:<50} median {v['median_s']:.3f} s   fastest {v['min_s']:.3f} s")
    print(f"  => slowest vidprobe command {worst:.2f} s: {'meets' if worst < TARGET_S else 'MISSES'} the target "
          f"of {TARGET_S:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": vars(args), "target_s": TARGET_S, "results": res,
                                               "worst_cli_median_s": worst}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
