"""Probe step: forward+backward time and peak memory, SDPA vs a naive eager attention, with/without checkpointing.

CPU, at a reduced batch shape (the reference is B=10, S=4, grid 30x52, C=1536, outputs 294x518,
the ``reference`` preset): by default the ``small`` preset (width 512, 4 block pairs, DPT and
camera heads) at B=1, S=4, grid 15x26 (1,580 tokens in a global block), C=384, outputs 70x126.

Variants (each in its own subprocess, so peak memories do not mix):
  sdpa        the probe as shipped (``F.scaled_dot_product_attention``)
  sdpa+ckpt   the same with gradient checkpointing
  eager       baseline: the same architecture with a straightforward attention
              ``softmax(q k^T / sqrt(d)) v`` (Attention.forward monkeypatched in this script only)
  eager+ckpt  the baseline with gradient checkpointing

Peak memory method: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the subprocess before and
after the first forward+backward (model and inputs already built); the delta is the step's extra
peak resident memory (activations, gradients, allocator growth). torch.compile is a GPU option
(on CPU it needs a C++ toolchain and minutes of compile time); ``--compile`` tries it here anyway.
Exit 0 when measured, 1 when it cannot run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("sdpa", "eager", "sdpa+ckpt", "eager+ckpt")  # paired runs adjacent (less drift)


def _naive_attention_forward(self, x, pos=None):
    """vidprobe.nn.vit.Attention.forward with the attention written out (no fused SDPA kernel)."""
    import torch

    B, N, C = x.shape
    qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = self.q_norm(q), self.k_norm(k)
    if self.rope is not None and pos is not None:
        q, k = self.rope(q, pos), self.rope(k, pos)
    scale = self.scale if self.scale is not None else 1.0 / math.sqrt(self.head_dim)
    attn = (q.to(v.dtype) @ k.to(v.dtype).transpose(-2, -1)) * scale
    out = torch.softmax(attn, dim=-1) @ v
    return self.proj(out.transpose(1, 2).reshape(B, N, C))


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def run_variant(variant: str, args) -> dict:
    import torch

    from vidprobe.probe import layers as L
    from vidprobe.probe.config import ProbeConfig
    from vidprobe.probe.model import Probe, count_parameters

    torch.manual_seed(0)
    if variant.startswith("eager"):
        L.Attention.forward = _naive_attention_forward
    cfg = ProbeConfig.preset(args.preset, in_channels=args.channels, out_hw=(args.out_h, args.out_w),
                             grad_checkpointing=variant.endswith("+ckpt"))
    model = Probe(cfg).train()
    feats = torch.randn(args.batch, args.frames, args.grid_h, args.grid_w, args.channels)
    model_fn = torch.compile(model) if args.compile else model

    def step():
        out = model_fn(feats)
        loss = out["points"].mean() + out["depth"].mean() + out["pose_enc"].square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    before = _maxrss_bytes()
    step()
    peak = _maxrss_bytes() - before
    ts = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t)
    return {"variant": variant, "step_s": min(ts), "step_s_median": sorted(ts)[len(ts) // 2],
            "peak_rss_delta_bytes": peak, "params": count_parameters(model)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--grid-h", type=int, default=15)
    ap.add_argument("--grid-w", type=int, default=26)
    ap.add_argument("--channels", type=int, default=384)
    ap.add_argument("--out-h", type=int, default=70)
    ap.add_argument("--out-w", type=int, default=126)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.variant:  # child
        Path(args.out).write_text(json.dumps(run_variant(args.variant, args)))
        return 0
    base = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--json" and not a.endswith(".json")]
    res = {}
    with tempfile.TemporaryDirectory() as td:
        for v in VARIANTS:
            out = Path(td) / f"{v}.json"
            cmd = [sys.executable, os.path.abspath(__file__), *base, "--variant", v, "--out", str(out)]
            r = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if r.returncode != 0 or not out.exists():
                print(f"ERROR: bench_probe variant {v} failed:\n{r.stderr[-2000:]}", file=sys.stderr)
                return 1
            res[v] = json.loads(out.read_text())
    shape = (f"preset {args.preset} ({res['sdpa']['params'] / 1e6:.1f} M params), features B={args.batch} S={args.frames} "
             f"grid {args.grid_h}x{args.grid_w} C={args.channels}, outputs {args.out_h}x{args.out_w}, fp32, CPU"
             f"{', torch.compile' if args.compile else ''}")
    print(f"# probe forward+backward: {shape}")
    print(f"{'variant':<12} {'step s':>8} {'x eager':>8} {'peak MiB':>9}")
    for v, r in res.items():
        ref = res["eager+ckpt" if v.endswith("ckpt") else "eager"]
        r["speedup_vs_eager"] = ref["step_s"] / r["step_s"]
        print(f"{v:<12} {r['step_s']:8.3f} {r['speedup_vs_eager']:8.2f} {r['peak_rss_delta_bytes'] / 2**20:9.1f}")
    print("# peak = ru_maxrss delta over the first step in a fresh subprocess; x eager = eager step time / this step time "
          "(same checkpointing setting)")
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": shape, "config": {k: v for k, v in vars(args).items() if k not in ("variant", "out")}, "results": res}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
