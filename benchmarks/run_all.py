"""Run every benchmark (CPU, tiny models) and write benchmarks/RESULTS.md atomically.

Each bench script runs in its own subprocess (``python benchmarks/bench_X.py ... --json F``); its
printed figures go into RESULTS.md verbatim, with the machine, the date and a summary. Ratios
are measured inside one run of each script (these machines are noisy: compare ratios, not
absolute times across machines). Exit status: 0 when every benchmark ran, 1 otherwise (the
figures of the ones that ran are still written).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

BENCHES: list[tuple[str, str, list[str]]] = [
    ("extract", "1. Sweep extraction (one hooked, early-stopped pass vs one full run per setting)", []),
    ("store", "2. Training input (feature store vs whole-file loading)", ["--channels", "1536", "--videos", "3", "--samples", "200"]),
    ("probe", "3. Probe step (forward+backward, SDPA vs eager attention, checkpointing)", []),
    ("metrics", "4. Evaluation (metric time per 1000 clips)", []),
    ("storage", "5. Storage (bytes per dtype; fp16 vs fp32 features -> probe metrics)", []),
    ("codecs", "6. Feature codecs (bytes ratio per codec; probe metric changes vs seed noise, oracle control)", []),
    ("startup", "7. Start-up (`vidprobe --help`, `version`, an argument error; target < 1 s)", []),
    ("loader", "8. Training loader (stored dtype to the device, workers; vs whole-file loading, warm and cold; data wait)", []),
]


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}, GPU: {gpu}")


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summary(res: dict[str, dict | None]) -> list[str]:
    out = []
    e = res.get("extract")
    if e:
        d, n = e["diffusion"], e["encoder"]
        out.append(f"| sweep extraction, WAN tiny, L={d['L']} x K={d['K']} | {d['ratio']:.1f}x faster | ideal {d['ideal_denoiser_only']:.2f}x (denoiser only), {d['ideal_with_vae']:.1f}x (with the measured VAE cost) |")
        out.append(f"| encoder, DINOv2 tiny, L={n['L']} layers in one pass | {n['ratio']:.2f}x faster | ideal {n['ideal']:.2f}x |")
    s = res.get("store")
    if s:
        r = s["results"]
        out.append(f"| bytes read per 4-frame sample (WAN shape, C={s['config']['channels']}) | {r['store/pread']['bytes_ratio']:.4f} of whole-file | target <= 4/{s['maps']} = {4 / s['maps']:.4f} |")
        out.append(f"| samples/s, store vs whole file (warm cache) | {r['store/pread']['samples_per_s']:.0f} vs {r['whole file']['samples_per_s']:.1f} ({r['store/pread']['speedup']:.0f}x) | |")
    p = res.get("probe")
    if p:
        r = p["results"]
        out.append(f"| probe step SDPA vs eager attention | {r['sdpa']['speedup_vs_eager']:.2f}x (ckpt: {r['sdpa+ckpt']['speedup_vs_eager']:.2f}x) | {p['shape']} |")
        out.append(f"| probe step peak memory, checkpointing off/on | {r['sdpa']['peak_rss_delta_bytes'] / 2**20:.0f} / {r['sdpa+ckpt']['peak_rss_delta_bytes'] / 2**20:.0f} MiB | ru_maxrss delta, fresh subprocess |")
        if s:
            sps = r["sdpa"]["step_s"]
            batch = p["config"]["batch"]
            out.append(f"| input vs probe | store {s['results']['store/pread']['samples_per_s']:.0f} samples/s vs probe {batch / sps:.2f} samples/s | input is {'not ' if s['results']['store/pread']['samples_per_s'] > 10 * batch / sps else ''}the bottleneck |")
    m = res.get("metrics")
    if m:
        out.append(f"| metric computation | {m['s_per_1000_clips']:.0f} s per 1000 clips | S={m['config']['frames']} at {m['config']['height']}x{m['config']['width']}, from {m['clips']} clips |")
    st = res.get("storage")
    if st:
        b = st["bytes"]
        out.append(f"| storage per video per (layer, timestep), WAN-1.3B | fp16 {b['fp16'] / 2**20:.1f} MiB, bf16 {b['bf16'] / 2**20:.1f} MiB, fp32 {b['fp32'] / 2**20:.1f} MiB | 21x30x52x1536 |")
        if st.get("within_noise"):
            ok = all(st["within_noise"].values())
            out.append(f"| fp16 vs fp32 features -> probe metrics | {'agree within noise' if ok else 'DIFFER beyond noise'} ({sum(st['within_noise'].values())}/{len(st['within_noise'])} metrics) | synthetic oracle features, tiny probe, same seed |")
    c = res.get("codecs")
    if c:
        cells = [f"{spec} {doc['ratio']:.2f}x {len(doc['outside_noise'])}/{len(doc['metrics'])}"
                 for spec, doc in c["codecs"].items()]
        seeds = next(iter(c["codecs"].values()))["seeds"]
        out.append(f"| feature codecs: bytes ratio, metrics outside seed noise | {', '.join(cells)} | synthetic oracle "
                   f"control, tiny probe, seeds {seeds}; pca:1 is the destructive control (must be flagged) |")
        met = c.get("target_met_by") or []
        out.append(f"| codec target: >= 4x fewer bytes, every metric within seed noise | "
                   f"{'met by ' + ', '.join(met) if met else 'NOT met'} | issue 14 |")
    su = res.get("startup")
    if su:
        r = su["results"]
        cli = " / ".join(f"{v['median_s']:.2f}" for k, v in r.items() if k.startswith("vidprobe"))
        torch_s = next((v["median_s"] for k, v in r.items() if "import torch" in k), float("nan"))
        out.append(f"| start-up: `vidprobe --help` / `version` / argument error | {cli} s (median) | target < "
                   f"{su['target_s']:.0f} s; `import torch` alone {torch_s:.1f} s |")
    lo = res.get("loader")
    if lo:
        q, wk = lo["ratios"], lo["workers"]
        out.append(f"| training loader vs whole-file loading, samples/s (WAN shape, C={lo['config']['channels']}) | warm "
                   f"{q['warm_vs_whole']:.1f}x on a CPU device ({q['warm_loader_vs_whole']:.0f}x in time the training process "
                   f"waits), cold {q['cold_vs_whole'] or float('nan'):.1f}x | {wk} worker(s); bytes read "
                   f"{q['bytes_per_sample_vs_file']:.4f} of the file (4/{lo['maps']}) |")
        out.append(f"| training loader, new vs old per-sample fp32 path | {q['new_vs_old']:.2f}x on a CPU device, "
                   f"{q['new_loader_vs_old']:.1f}x what the training process waits | conversion + check moved to the device |")
        tw = lo["train"][-1]
        out.append(f"| data-wait fraction, short CPU run (preset {lo['config']['train_preset']}) | "
                   f"{100 * tw['data_wait_fraction']:.1f}% | {tw['workers']} worker(s); target < 5% on a GPU |")
    return out


def main(argv: list[str] | None = None) -> int:
    started = _dt.datetime.now(_dt.UTC)
    load0 = os.getloadavg()
    res: dict[str, dict | None] = {}
    sections, failed = [], []
    with tempfile.TemporaryDirectory() as td:
        for name, title, extra in BENCHES:
            js = Path(td) / f"{name}.json"
            cmd = [sys.executable, str(HERE / f"bench_{name}.py"), *extra, "--json", str(js)]
            print(f"== {title}", flush=True)
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
            dt = time.perf_counter() - t
            print(r.stdout, end="", flush=True)
            if r.returncode != 0 or not js.exists():
                failed.append(name)
                print(r.stderr[-3000:], file=sys.stderr)
                res[name] = None
                body = f"FAILED (exit {r.returncode}):\n\n```\n{r.stderr[-3000:]}\n```"
            else:
                res[name] = json.loads(js.read_text())
                body = f"```\n{r.stdout.rstrip()}\n```"
            cmdline = " ".join(["python", f"benchmarks/bench_{name}.py", *extra])
            sections.append(f"## {title}\n\n`{cmdline}` ({dt:.0f} s)\n\n{body}\n")
    lines = [
        "# Benchmarks",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}",
        (f"- Load average (1 min) at start / end: {load0[0]:.1f} / {os.getloadavg()[0]:.1f} (other jobs on a shared machine "
         "add noise; paired measurements run back to back)"),
        ("- CPU only, tiny random models of the real library classes; **ratios within one run** (every ratio compares "
         "two measurements taken in the same script run on the same machine; absolute times are not comparable across machines)."),
        "- Regenerate with `make bench` (`python benchmarks/run_all.py`); each script's docstring states its method.",
        "",
        "## Summary",
        "",
        "| what | measured | reference point |",
        "|---|---|---|",
        *summary(res),
        "",
        *sections,
    ]
    if failed:
        lines.insert(2, f"**Failed to run: {', '.join(failed)}**\n")
    atomic_write_text(HERE / "RESULTS.md", "\n".join(lines))
    print(f"wrote {HERE / 'RESULTS.md'}" + (f"; FAILED: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
