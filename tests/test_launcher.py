"""`--launcher local|slurm`: extraction arrays and sweep cells as submitit jobs, requeued after a pre-emption.

The jobs run through submitit's LocalExecutor (processes on this machine, the code path Slurm takes); the
Slurm submission itself is checked against stand-in `srun` / `sbatch` commands that record the batch script.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from typer.testing import CliRunner

pytest.importorskip("submitit")

from test_extract import KEYS, LAYERS, TIMESTEPS, TinyBackbone, TinyDataset, ids, markers  # noqa: E402

from vidprobe.cli import app  # noqa: E402
from vidprobe.data.synthetic import write_synthetic_dataset  # noqa: E402
from vidprobe.features import FeatureStore, extract_dataset  # noqa: E402
from vidprobe.features.store import key_dirname, video_filename  # noqa: E402
from vidprobe.pipeline.launcher import ExtractTask, submit_extract  # noqa: E402
from vidprobe.pipeline.launcher_config import LauncherConfig  # noqa: E402
from vidprobe.results import ResultsDB  # noqa: E402

HERE = Path(__file__).resolve().parent
HW = ["--height", "32", "--width", "56"]


@pytest.fixture(autouse=True)
def job_env(monkeypatch):
    """Jobs inherit this environment: one thread each, and this directory importable (the test backbones)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("launchdata") / "data", 5, num_frames=25, hw=(32, 56),
                                   progress=False, test_fraction=0.4)


def store_files(root: Path) -> dict[str, tuple[dict, dict[str, bytes]]]:
    """Every feature file of a store: relative path -> (metadata, tensor name -> raw bytes).

    Not the file bytes: safetensors writes its metadata in a per-process order.
    """
    out = {}
    for p in sorted(root.rglob("*.safetensors")):
        with safe_open(p, "pt") as f:
            out[p.relative_to(root).as_posix()] = (
                f.metadata(), {k: f.get_tensor(k).contiguous().view(torch.uint8).numpy().tobytes() for k in f.keys()})
    return out


def same_store(a: Path, b: Path) -> None:
    fa, fb = store_files(a), store_files(b)
    assert fa and sorted(fa) == sorted(fb)
    assert [k for k in fa if fa[k] != fb[k]] == []  # same tensor bytes, same metadata
    sa, sb = FeatureStore(a), FeatureStore(b)
    assert sa.keys() == sb.keys() and sa.settings == sb.settings
    assert [p for p in a.rglob("*.tmp")] == []


# ---------------------------------------------------------------------------------------------- extraction


def test_a_two_task_array_writes_the_single_process_store(data, tmp_path):
    ref = tmp_path / "ref"
    extract_dataset("pixels", str(data), ref, [1], [None], backbone_kwargs={"height": 32, "width": 56}, progress=False)
    out = tmp_path / "arr"
    r = CliRunner().invoke(app, ["extract", "-b", "pixels", "-d", str(data), "-o", str(out), *HW, "-q",
                                 "--launcher", "local", "--array", "2", "--wait"])
    assert r.exit_code == 0, r.output
    assert r.output.count("job ") >= 4 and "shard 0/2" in r.output and "shard 1/2" in r.output
    assert "_log.out" in r.output and str(out / ".jobs") in r.output  # where the logs are
    assert "3 extracted" in r.output and "2 extracted" in r.output  # 5 videos: shard 0 has 3, shard 1 has 2
    same_store(ref, out)


class GatedBackbone(TinyBackbone):
    """After its first video a process waits for the gate file: the test pre-empts it there, mid-run.

    Writes one marker per model pass that runs to its end (``<video>.<pid>.<random>``).
    """

    def __init__(self, gate: str, marker_dir: str, waiting_dir: str):
        super().__init__()
        self.gate, self.mk, self.waiting, self.n = gate, marker_dir, waiting_dir, 0

    def extract(self, video, layers, timesteps=(None,), clip=None):
        if self.n >= 1 and not os.path.exists(self.gate):
            Path(self.waiting, str(os.getpid())).touch()
            while not os.path.exists(self.gate):
                time.sleep(0.02)
        self.n += 1
        fs = super().extract(video, layers, timesteps, clip)
        Path(self.mk, f"{video_filename(clip.meta['sequence'])}.{os.getpid()}.{uuid.uuid4().hex[:6]}").touch()
        return fs


def _wait_for(cond, what: str, timeout: float = 120.0):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_b_a_preempted_task_is_requeued_and_finishes_without_repeating_work(tmp_path):
    videos = ids(6)
    ref = tmp_path / "ref"
    extract_dataset(TinyBackbone(), TinyDataset(videos), ref, LAYERS, TIMESTEPS, progress=False)
    out, mk, waiting, gate = tmp_path / "store", tmp_path / "mk", tmp_path / "waiting", tmp_path / "gate"
    mk.mkdir(), waiting.mkdir()
    task = ExtractTask(GatedBackbone(str(gate), str(mk), str(waiting)), TinyDataset(videos), str(out), LAYERS, TIMESTEPS)
    sub = submit_extract(task, 1, LauncherConfig(backend="local", time="10"))
    files = [out / key_dirname(layer, t) for layer, t in KEYS]

    def complete() -> set[str]:
        return {v for v in videos if all((d / video_filename(v)).exists() for d in files)}

    # the task finished one video and waits in the next: pre-empt it (Slurm's USR2, as before a time limit)
    (pid,) = _wait_for(lambda: [int(p.name) for p in waiting.iterdir()], "the task to reach the gate")
    os.kill(pid, signal.SIGUSR2)
    _wait_for(lambda: not _alive(pid), "the pre-empted task to exit")
    before = complete()
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.safetensors")}
    gate.touch()
    (o,) = sub.wait()
    assert o.ok, o.error
    assert "(requeued 1x)" in Path(o.log).read_text()  # it ran again, from its checkpoint (submitit requeued it)
    assert len(before) == 1 and len(stamps) == len(KEYS)  # stopped mid-run: one video done, the rest not
    # no lost work: the store is the single-process one; no repeated work: one model pass per video, and no file
    # written before the pre-emption was written again
    same_store(ref, out)
    assert markers(mk) == {v: 1 for v in videos}
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in stamps} == stamps
    assert o.result.already_present == sorted(before) and sorted(o.result.done) == sorted(set(videos) - before)


# ---------------------------------------------------------------------------------------------- sweep


def _sweep_cfg(data, out: Path, **launcher) -> dict:
    return {
        "dataset": str(data), "out": str(out),
        "grid": {"backbones": [{"name": "pixels", "kwargs": {"height": 32, "width": 56}}], "presets": ["tiny"],
                 "seeds": [1, 2]},
        "train": {"epochs": 100, "max_steps": 2, "batch_size": 2, "out_hw": [16, 28], "device": "cpu",
                  "sampler": {"num_frames": 4, "min_gap": 5, "max_frame": 25, "snap": 4}},
        **({"launcher": launcher} if launcher else {}),
    }


def test_c_sweep_cells_run_as_jobs_and_a_second_submit_does_nothing(data, tmp_path):
    out = tmp_path / "sw"
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(_sweep_cfg(data, out, time="30")))
    r = CliRunner().invoke(app, ["sweep", str(p), "--launcher", "local", "--wait"])
    assert r.exit_code == 0, r.output
    assert "2 to run" in r.output and "pixels_L1_Tnone_tiny_s1" in r.output and "_log.out" in r.output
    with ResultsDB(out / "results.db") as db:
        runs = db.runs(status="done", kind="probe")
    assert sorted(x["seed"] for x in runs) == [1, 2] and all(x["config"]["eval"]["step"] == 2 for x in runs)
    jobs = sorted(d.name for d in (out / "jobs").iterdir())
    r = CliRunner().invoke(app, ["sweep", str(p), "--launcher", "local", "--wait"])
    assert r.exit_code == 0, r.output
    assert "nothing to submit" in r.output and "2 already in the DB" in r.output
    assert sorted(d.name for d in (out / "jobs").iterdir()) == jobs  # no job was submitted


# ---------------------------------------------------------------------------------------------- settings


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """`srun` and `sbatch` stand-ins: sbatch keeps each batch script and answers with a job id."""
    bin_, kept = tmp_path / "bin", tmp_path / "sbatch_scripts"
    bin_.mkdir(), kept.mkdir()
    (bin_ / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {kept}/$$.sh\necho \"Submitted batch job 4242\"\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    return lambda: [f.read_text() for f in sorted(kept.iterdir())]


def test_d_flags_override_the_launcher_section(data, tmp_path, fake_slurm):
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(_sweep_cfg(data, tmp_path / "sw", backend="slurm", partition="a", time="2:00:00",
                                           gpus=1, sbatch={"constraint": "a100"}, max_parallel=1)))
    r = CliRunner().invoke(app, ["sweep", str(p), "--partition", "b", "--gpus", "2", "--sbatch", "exclude=node7"])
    assert r.exit_code == 0, r.output
    assert "job 4242_0" in r.output and "job 4242_1" in r.output and "to slurm" in r.output
    (script,) = fake_slurm()  # one array of two cells, one at a time
    for line in ("--partition=b", "--gpus-per-node=2", "--time=120", "--constraint=a100", "--exclude=node7",
                 "--array=0-1%1", "--signal=USR2@90"):
        assert f"#SBATCH {line}\n" in script, (line, script)
    assert "--partition=a" not in script
    # extraction: flags only; task i of the array is shard i/N
    r = CliRunner().invoke(app, ["extract", "-b", "pixels", "-d", str(data), "-o", str(tmp_path / "f"), *HW,
                                 "--launcher", "slurm", "--array", "3", "--time", "1-00:00:00", "--mem", "8G"])
    assert r.exit_code == 0, r.output
    assert all(f"job 4242_{i}: shard {i}/3" in r.output for i in range(3))
    script = fake_slurm()[-1]
    assert "#SBATCH --array=0-2%3\n" in script and "#SBATCH --time=1440\n" in script and "#SBATCH --mem=8G\n" in script


@pytest.mark.parametrize("section, args, key", [
    ({"gpus": -1}, [], "launcher.gpus"),
    ({"tiime": 30}, [], "launcher.tiime"),
    ({"sbatch": {"partition": "x"}}, [], "launcher.partition"),
    ({}, ["--time", "soon"], "launcher.time (from --time)"),
    ({}, ["--launcher", "pbs"], "launcher.backend"),
])
def test_d_a_bad_launcher_setting_names_its_key(data, tmp_path, section, args, key):
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(_sweep_cfg(data, tmp_path / "sw", **section)))
    r = CliRunner().invoke(app, ["sweep", str(p), *args])
    assert r.exit_code == 2 and key in " ".join(r.output.split()), r.output
    assert not (tmp_path / "sw").exists()  # nothing ran


def test_d_extract_launcher_flags_are_checked(data, tmp_path):
    base = ["extract", "-b", "pixels", "-d", str(data), "-o", str(tmp_path / "f"), *HW]
    for extra, msg in [(["--array", "2"], "--array needs --launcher"),
                       (["--launcher", "local", "--shard", "0/2"], "task i of --array N"),
                       (["--launcher", "local", "--gpus", "2"], "one process on one GPU"),
                       (["--launcher", "local", "--sbatch", "=x"], "expected KEY=VALUE")]:
        r = CliRunner().invoke(app, base + extra)
        assert r.exit_code == 2 and msg in " ".join(r.output.split()), (extra, r.output)
    assert not (tmp_path / "f" / "manifest.json").exists()
