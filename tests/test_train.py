"""Trainer: exact resume (in-process and after SIGKILL), DDP on gloo, logs, checkpoints, config checks, schedule."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidprobe.probe.train import (
    ConfigError,
    find_checkpoint,
    load_config,
    lr_lambda,
    train,
)

SAMPLER = {"num_frames": 4, "min_gap": 3, "max_frame": 25, "snap": 4}


def make_inputs(root: Path) -> tuple[Path, Path]:
    """6 tiny synthetic videos (4 train, 2 test) and their oracle features (2x3 grid)."""
    from vidprobe.data.synthetic import write_synthetic_dataset
    from vidprobe.features.extract import extract_dataset

    data, feats = root / "data", root / "feats"
    write_synthetic_dataset(data, 6, num_frames=25, hw=(28, 49), seed=0, test_fraction=0.34, progress=False)
    extract_dataset("oracle", data, feats, layers=[1], backbone_kwargs={"height": 28, "width": 49}, progress=False)
    return data, feats


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("train_inputs"))


def base_cfg(inputs, out: Path, **kw) -> dict:
    data, feats = inputs
    d = {"features": str(feats), "dataset": str(data), "out": str(out), "probe": {"preset": "tiny"}, "epochs": 2,
         "batch_size": 1, "checkpoint_every": 3, "sampler": dict(SAMPLER), "seed": 3}
    d.update(kw)
    return d


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ck = find_checkpoint(run_dir, "last")
    assert ck is not None, f"no last checkpoint in {run_dir}"
    return load_file(str(ck / "model.safetensors"))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[:3]}"


def loss_rows(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def reference_run(inputs, tmp_path_factory):
    """One uninterrupted run (8 steps: 4 per epoch, checkpoints at 3, 4, 6, 8)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    res = train(load_config(None, base=base_cfg(inputs, out)), progress=False)
    assert res.steps == 8
    return out


def test_resume_is_bit_identical(inputs, reference_run, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, base=base_cfg(inputs, out))
    part = train(cfg, progress=False, stop_after_steps=5)  # "crash" after step 5; last checkpoint: step 4
    assert part.steps == 5
    assert json.loads((out / "checkpoints" / "last.json").read_text())["step"] == 4
    assert [s for s, _ in loss_rows(out)] == [1, 2, 3, 4, 5]
    with pytest.raises(ConfigError, match="--resume"):
        train(cfg, progress=False)  # refuses to overwrite a run silently
    res = train(cfg, resume=True, progress=False)
    assert res.steps == 8
    assert_same_weights(final_weights(out), final_weights(reference_run))
    # the log rows after the checkpoint were dropped and redone: same rows, same values
    assert loss_rows(out) == loss_rows(reference_run)
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r.get("loss")] == list(range(1, 9))


KILL_SCRIPT = """
import json, os, signal, sys
from vidprobe.probe import train as T
orig = T.RunLogger.log
def log(self, row):
    orig(self, row)
    if row.get("step") == int(sys.argv[2]) and "loss" in row:
        os.kill(os.getpid(), signal.SIGKILL)
T.RunLogger.log = log
T.train(T.load_config(None, base=json.loads(sys.argv[1])), progress=False)
"""


def test_sigkill_mid_epoch_then_resume(inputs, reference_run, tmp_path):
    out = tmp_path / "run"
    base = base_cfg(inputs, out)
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    p = subprocess.run([sys.executable, str(script), json.dumps(base), "7"], capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert json.loads((out / "checkpoints" / "last.json").read_text())["step"] == 6
    assert max(s for s, _ in loss_rows(out)) == 7  # step 7 (mid-epoch 2) was logged, never checkpointed
    res = train(load_config(None, base=base), resume=True, progress=False)
    assert res.steps == 8
    assert_same_weights(final_weights(out), final_weights(reference_run))
    assert loss_rows(out) == loss_rows(reference_run)


DDP_SCRIPT = """
import json, os, sys
from safetensors.torch import save_file
from vidprobe.probe.train import load_config, train
res = train(load_config(None, base=json.loads(sys.argv[1])), progress=False)
sd = {k: v.detach().contiguous() for k, v in res.model.state_dict().items()}
save_file(sd, os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.safetensors"))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("compat", ["clean", "reference"])
def test_ddp_two_processes_match_single_process(inputs, tmp_path, compat):
    out = tmp_path / "ddp"
    optim = {"lr": 1e-3, "warmup_frac": 0.0}  # large steps so a wrong global batch shows
    base = base_cfg(inputs, out, epochs=2, batch_size=1, checkpoint_every=0, optim=optim, compat=compat)
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(script), json.dumps(base), str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=150)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("DDP processes hung")
    assert all(p.returncode == 0 for p in procs), "\n".join(x[-2000:] for x in logs)
    r0, r1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert_same_weights(r0, r1)  # the ranks stayed in sync
    assert_same_weights(r0, final_weights(out))  # rank 0 wrote the checkpoint
    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == 2 and info["steps_per_epoch"] == 2 and info["compat"] == compat
    # one process with the same global batch (2 clips per step) gives the same weights up to float noise...
    single = tmp_path / "single"
    train(load_config(None, base=base_cfg(inputs, single, epochs=2, batch_size=2, checkpoint_every=0, optim=optim,
                                          compat=compat)), progress=False)
    s = final_weights(single)
    # ...while a different global batch (1 clip per step) lands far away. Adam's first steps are
    # sign-like, so single weights with near-zero gradients may differ by ~lr: compare global norms.
    other = tmp_path / "other"
    train(load_config(None, base=base_cfg(inputs, other, epochs=1, batch_size=1, checkpoint_every=0, optim=optim,
                                          compat=compat)), progress=False)
    o = final_weights(other)

    def dist(a, b):
        return math.sqrt(sum(float((a[k] - b[k]).double().pow(2).sum()) for k in a))

    diff, far = dist(s, r0), dist(s, o)
    print(f"DDP vs single-process |dw| {diff:.3e}; other global batch {far:.3e}")
    assert diff < 0.1 * far, f"DDP and single-process weights differ by {diff} (another trajectory: {far})"


def test_logs_checkpoints_and_no_pickle(inputs, reference_run):
    rows = [json.loads(x) for x in (reference_run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 8
    for r in steps:
        assert {"step", "epoch", "loss", "lr", "grad_norm", "loss_points", "loss_depth", "loss_camera"} <= set(r)
        assert math.isfinite(r["loss"])
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [8]
    with open(reference_run / "log.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    # last and best pointers, pruned to keep_checkpoints (2) + best
    ck = reference_run / "checkpoints"
    assert json.loads((ck / "last.json").read_text())["step"] == 8
    best = json.loads((ck / "best.json").read_text())
    assert best["step"] == 8 and math.isfinite(best["eval_loss"])
    assert sorted(p.name for p in ck.glob("step_*")) == ["step_0000006", "step_0000008"]
    # nothing pickled anywhere: weights/optimizer/RNG in safetensors, the rest text
    allowed = {".safetensors", ".json", ".yaml", ".jsonl", ".csv", ".lock"}
    for p in reference_run.rglob("*"):
        if p.is_file():
            assert p.suffix in allowed, p
            head = p.read_bytes()[:2]
            assert not head.startswith(b"\x80"), f"{p} looks like a pickle"
    names = {p.name for p in (ck / "step_0000008").iterdir()}
    assert names == {"model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"}
    opt = load_file(str(ck / "step_0000008" / "optimizer.safetensors"))
    assert any(k.endswith("exp_avg") for k in opt)


def test_unknown_config_fields_are_refused(inputs, tmp_path):
    with pytest.raises(ConfigError, match="bogus"):
        load_config(None, base=base_cfg(inputs, tmp_path / "r", bogus=1))
    with pytest.raises(ConfigError, match="lrr"):
        load_config(None, base=base_cfg(inputs, tmp_path / "r", optim={"lrr": 1e-3}))
    with pytest.raises(ConfigError, match="frames"):
        load_config(None, base=base_cfg(inputs, tmp_path / "r"), overrides=["sampler.frames=3"])
    with pytest.raises(ConfigError, match="pointz_weight"):  # the loss section is typed: refused at load
        train(load_config(None, base=base_cfg(inputs, tmp_path / "r", loss={"pointz_weight": 1.0})), progress=False)
    yml = tmp_path / "c.yaml"
    yml.write_text("features: [unclosed\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(yml)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    cfg = load_config(None, base=base_cfg(inputs, tmp_path / "r"), overrides=["optim.lr=3e-4", "epochs=5"])
    assert cfg.optim.lr == 3e-4 and cfg.epochs == 5


def _poison(path: Path) -> None:
    """Write an fp16 NaN over the first element of the 'features' tensor of a safetensors file, in place."""
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    start = 8 + n + header["features"]["data_offsets"][0]
    assert header["features"]["dtype"] == "F16"
    raw[start : start + 2] = (0x7E00).to_bytes(2, "little")
    path.write_bytes(bytes(raw))


def test_nan_in_features_is_reported(inputs, tmp_path):
    data, feats = inputs
    bad = tmp_path / "feats"
    shutil.copytree(feats, bad)
    files = sorted(bad.rglob("*.safetensors"))
    assert files
    for f in files:
        _poison(f)
    cfg = load_config(None, base=base_cfg((data, bad), tmp_path / "run"))
    with pytest.raises(Exception, match="NaN") as ei:
        train(cfg, progress=False)
    assert type(ei.value).__name__ in ("FeatureStoreError", "NonFiniteLossError")
    assert str(bad) in str(ei.value)


def test_lr_schedule_warmup_then_cosine(reference_run):
    f = lr_lambda(100, 0.1, 1e-3, 1e-5)
    assert f(0) == pytest.approx(0.1) and f(4) == pytest.approx(0.5) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    vals = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(vals))  # cosine decay is monotone
    assert f(55) == pytest.approx((1e-5 + 0.5 * (1e-3 - 1e-5)) / 1e-3)  # half way: midpoint
    assert f(100) == pytest.approx(1e-5 / 1e-3)  # ends at min_lr
    # the run's logged learning rates follow it and end at min_lr
    cfg = load_config(reference_run / "config.yaml")
    lrs = [r["lr"] for r in (json.loads(x) for x in (reference_run / "log.jsonl").read_text().splitlines()) if "lr" in r]
    g = lr_lambda(8, cfg.optim.warmup_frac, cfg.optim.lr, cfg.optim.min_lr)
    assert lrs == pytest.approx([cfg.optim.lr * g(s) for s in range(1, 9)])
    assert lrs[-1] == pytest.approx(cfg.optim.min_lr)


def test_reference_mode_run(inputs, tmp_path, monkeypatch):
    """No clipping, the last partial batch dropped, the release's warm-up from 0; the run records it all."""
    clipped = []
    real_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, max_norm, *a, **k: clipped.append(max_norm)
                        or real_clip(params, max_norm, *a, **k))
    runs = {}
    for compat in ("clean", "reference"):
        out = tmp_path / compat
        cfg = load_config(None, base=base_cfg(inputs, out, epochs=1, batch_size=3), overrides=[f"compat={compat}"])
        clipped.clear()
        res = train(cfg, progress=False)
        rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"loss"' in x]
        runs[compat] = (res, json.loads((out / "run.json").read_text()), rows, list(clipped), load_config(out / "config.yaml"))
    res, info, rows, clips, saved = runs["reference"]
    assert info["steps_per_epoch"] == 1 and res.steps == 1  # 4 videos, batches of 3: the partial one dropped
    assert clips == [] and rows[0]["grad_norm"] > 0  # not clipped; the norm is still logged
    assert info["warmup_steps"] == 10 and rows[0]["lr"] == pytest.approx(1e-4 / 9)  # step 1 of 0, base/9, ...
    assert info["loss"]["clamp"] == 100.0 and info["probe"]["dpt_skip_relu"] and info["probe"]["num_heads"] == 16
    assert saved.compat == "reference" and saved.optim.decay_all and saved.sampler.method == "gaps_then_floor"
    res, info, rows, clips, saved = runs["clean"]
    assert info["steps_per_epoch"] == 2 and clips == [1.0, 1.0] and saved.compat == "clean"
    assert info["loss"]["clamp"] is None and not info["probe"]["dpt_skip_relu"] and info["probe"]["num_heads"] == 4


def test_train_cli(inputs, tmp_path):
    from typer.testing import CliRunner

    from vidprobe.cli import _load, app

    _load()
    cfg = tmp_path / "c.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(base_cfg(inputs, tmp_path / "run", epochs=1)))
    r = CliRunner().invoke(app, ["train", str(cfg), "--no-progress", "--set", "max_steps=2"])
    assert r.exit_code == 0, r.output
    assert "best checkpoint" in r.output and "last checkpoint" in r.output
    assert json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())["step"] == 2
    r = CliRunner().invoke(app, ["train", str(cfg), "--no-progress", "--set", "max_steps=1", "--set", "compat=reference",
                                 "--set", f"out={tmp_path / 'ref'}"])
    assert r.exit_code == 0, r.output
    assert yaml.safe_load((tmp_path / "ref" / "config.yaml").read_text())["compat"] == "reference"
    r = CliRunner().invoke(app, ["train", str(cfg), "--no-progress", "--set", "compat=paper"])
    assert r.exit_code == 2 and "compat" in r.output
    r = CliRunner().invoke(app, ["train", str(cfg), "--no-progress", "--set", "bogus=1"])
    assert r.exit_code == 2 and "bogus" in r.output
    r = CliRunner().invoke(app, ["train", str(tmp_path / "nope.yaml")])
    assert r.exit_code == 2 and "not found" in r.output
