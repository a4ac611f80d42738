"""Extraction driver and `vidprobe extract`: resume, sharding, locks, kills, broken videos."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import types
import uuid
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.data.base import DatasetError, VideoDataset
from vidprobe.data.clip import Clip
from vidprobe.features import FeatureStore, FeatureStoreError, extract_dataset, parse_shard, shard_videos
from vidprobe.features.store import key_dirname, video_filename

HERE = Path(__file__).resolve().parent
LAYERS, TIMESTEPS = [1, 3], [249, 749]
KEYS = [(layer, t) for layer in LAYERS for t in TIMESTEPS]

SPEC = BackboneSpec(
    name="tiny-test", family="test", model_id="test/tiny", num_layers=4, default_layer=3,
    input_hw=(8, 12), num_frames=None, frame_layout="vae4x", default_timestep=749,
)


class TinyBackbone:
    """Deterministic stand-in: 4x temporal compression like WAN, features from pooled pixels.

    Counts calls; with ``marker_dir`` writes one file per extract call (works across processes).
    """

    spec = SPEC

    def __init__(self, delay: float = 0.0, marker_dir: str | None = None, fail: bool = False, **kwargs):
        self.delay, self.marker_dir, self.fail, self.kwargs = delay, marker_dir, fail, kwargs
        self.calls: list[str] = []

    def extract(self, video, layers, timesteps=(None,), clip=None):
        vid = clip.meta["sequence"]
        self.calls.append(vid)
        if self.marker_dir:
            Path(self.marker_dir, f"{video_filename(vid)}.{os.getpid()}.{uuid.uuid4().hex[:8]}").touch()
        if self.fail:
            raise RuntimeError("model exploded")
        if self.delay:
            time.sleep(self.delay)
        T = video.shape[0]
        t = torch.arange(T)
        fi = torch.where(t == 0, 0, (t - 1) // 4 + 1)
        n = int(fi.max()) + 1
        pooled = torch.nn.functional.adaptive_avg_pool2d(video, (2, 3))  # [T,3,2,3]
        maps = {}
        for layer in layers:
            for ts in timesteps:
                per = torch.stack([pooled[fi == k].mean(0) for k in range(n)])  # [n,3,2,3]
                m = per.permute(0, 2, 3, 1).repeat(1, 1, 1, 2) * (layer + 1) + (ts or 0) / 1000.0
                if vid.startswith("nan"):
                    m[-1, 0, 0, 0] = float("nan")
                maps[(layer, ts)] = m
        return FeatureSet(maps=maps, frame_index=fi)


class TinyDataset(VideoDataset):
    """In-memory videos with valid trivial geometry; ids listed in ``broken`` fail to load."""

    name = "tiny"

    def __init__(self, ids, frames: int = 9, broken=()):
        super().__init__("/nowhere")
        self.ids, self.frames, self.broken = list(ids), frames, set(broken)

    def videos(self, split=None):
        return list(reversed(self.ids))  # the driver must not depend on the dataset's order

    def num_frames(self, video_id):
        return self.frames

    def load(self, video_id, frames=None):
        if video_id in self.broken:
            raise DatasetError(f"/nowhere/{video_id}/rgb.mp4: field 'frames': cannot decode")
        fr = list(range(self.frames)) if frames is None else list(frames)
        T, H, W = len(fr), 8, 12
        g = torch.Generator().manual_seed(sum(map(ord, video_id)))
        imgs = torch.rand(self.frames, 3, H, W, generator=g)[fr]
        K = torch.tensor([[10.0, 0, W / 2], [0, 10.0, H / 2], [0, 0, 1]]).expand(T, 3, 3).clone()
        E = torch.cat([torch.eye(3), torch.zeros(3, 1)], 1).expand(T, 3, 4).clone()
        return Clip(images=imgs, depth=torch.ones(T, H, W), valid=torch.ones(T, H, W, dtype=torch.bool), intrinsics=K,
                    extrinsics=E, frame_ids=torch.tensor(fr), meta={"sequence": video_id, "dataset": "tiny"})


def ids(n):
    return [f"cat{i % 3}/seq{i:02d}" for i in range(n)]


def run(bb, ds, out, **kw):
    kw.setdefault("progress", False)
    return extract_dataset(bb, ds, out, LAYERS, TIMESTEPS, **kw)


def markers(d: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in d.iterdir():
        vid = p.name.split(".")[0].replace("__", "/")
        out[vid] = out.get(vid, 0) + 1
    return out


def complete_videos(out: Path, videos) -> set[str]:
    s = FeatureStore(out)
    return {v for v in videos if all(s.is_valid(v, *k, full=True) for k in KEYS)}


# ---------------------------------------------------------------- in-process driver


def test_extract_writes_every_key_with_one_call_per_video(tmp_path):
    bb, ds = TinyBackbone(), TinyDataset(ids(5))
    summ = run(bb, ds, tmp_path)
    assert sorted(summ.done) == sorted(ids(5)) and summ.done == sorted(summ.done)
    assert not summ.skipped and not summ.already_present and summ.total == 5
    assert sorted(bb.calls) == sorted(ids(5))  # ONE extract call per video for 2 layers x 2 timesteps
    for k in KEYS:
        assert sorted(p.name for p in (tmp_path / key_dirname(*k)).iterdir()) == sorted(video_filename(v) for v in ids(5))
    assert summ.bytes_written == sum(p.stat().st_size for k in KEYS for p in (tmp_path / key_dirname(*k)).iterdir())
    s = FeatureStore(tmp_path)
    assert s.keys() == KEYS
    m = s.manifest
    assert m["settings"]["backbone"] == "tiny-test" and m["settings"]["model_id"] == "test/tiny"
    assert m["settings"]["dtype"] == "fp16" and m["settings"]["frame_layout"] == "vae4x"
    assert {k["timestep"]: k["tau"] for k in m["keys"]} == {249: 0.751, 749: 0.251}
    # what is stored is what the backbone gave, in fp16, with its frame index
    vid = "cat1/seq04"
    ref = TinyBackbone().extract(ds.load(vid).images, LAYERS, TIMESTEPS, clip=ds.load(vid))
    for k in KEYS:
        assert torch.equal(s.frame_index(vid, *k), ref.frame_index)
        got = s.read(vid, *k, [0, 3, 8])
        assert torch.equal(got, ref.maps[k].half()[ref.frame_index[[0, 3, 8]]].float())
    hdr = s.header(vid, 3, 749)
    assert hdr.metadata["video_id"] == vid and hdr.metadata["layer"] == "3" and hdr.metadata["timestep"] == "749"
    assert hdr.metadata["source"] == "tiny:/nowhere"


def test_resume_does_no_work_and_redoes_only_what_is_missing(tmp_path):
    ds = TinyDataset(ids(4))
    run(TinyBackbone(), ds, tmp_path)
    bb = TinyBackbone()
    summ = run(bb, ds, tmp_path)
    assert bb.calls == [] and summ.done == [] and sorted(summ.already_present) == sorted(ids(4))
    assert summ.bytes_written == 0
    # a lost file and a corrupt file: only those videos run again, and only their bad keys are rewritten
    (tmp_path / key_dirname(1, 249) / video_filename("cat0/seq00")).unlink()
    p = tmp_path / key_dirname(3, 749) / video_filename("cat2/seq02")
    p.write_bytes(p.read_bytes()[:50])
    keep = tmp_path / key_dirname(3, 749) / video_filename("cat0/seq00")
    mtime = keep.stat().st_mtime_ns
    bb = TinyBackbone()
    summ = run(bb, ds, tmp_path)
    assert sorted(bb.calls) == ["cat0/seq00", "cat2/seq02"] and sorted(summ.done) == sorted(bb.calls)
    assert keep.stat().st_mtime_ns == mtime
    assert complete_videos(tmp_path, ids(4)) == set(ids(4))


def test_resume_does_not_build_the_model(tmp_path, monkeypatch):
    from vidprobe.backbones import base

    built = []

    def factory(**kw):
        built.append(kw)
        return TinyBackbone(**kw)

    monkeypatch.setitem(base._REGISTRY, SPEC.name, (SPEC, factory))
    ds = TinyDataset(ids(3))
    run(SPEC.name, ds, tmp_path, backbone_kwargs={"tiny": True})
    assert built == [{"tiny": True}]
    run(SPEC.name, ds, tmp_path, backbone_kwargs={"tiny": True})
    assert len(built) == 1


def test_broken_videos_are_skipped_and_counted(tmp_path):
    vids = ids(4) + ["nan/seq", "gone/seq"]
    bb = TinyBackbone()
    summ = run(bb, TinyDataset(vids, broken={"gone/seq"}), tmp_path)
    assert sorted(summ.done) == sorted(ids(4))
    assert set(summ.skipped) == {"nan/seq", "gone/seq"}
    assert "load error" in summ.skipped["gone/seq"] and "cannot decode" in summ.skipped["gone/seq"]
    assert "NaN" in summ.skipped["nan/seq"]
    assert "2 skipped" in summ.format() and "gone/seq" in summ.format()
    assert not any("nan" in v for v in FeatureStore(tmp_path).videos(1, 249))


def test_a_model_failing_on_every_video_aborts(tmp_path):
    with pytest.raises(RuntimeError, match="first 3 videos all failed.*model exploded"):
        run(TinyBackbone(fail=True), TinyDataset(ids(6)), tmp_path)


def test_other_settings_refused(tmp_path):
    ds = TinyDataset(ids(2))
    run(TinyBackbone(), ds, tmp_path)
    with pytest.raises(FeatureStoreError, match=r"dtype: store has \"fp16\", this run has \"bf16\""):
        run(TinyBackbone(), ds, tmp_path, dtype="bf16")
    with pytest.raises(FeatureStoreError, match="num_frames"):
        run(TinyBackbone(), ds, tmp_path, num_frames=5)
    # adding keys with the same settings is fine
    extract_dataset(TinyBackbone(), ds, tmp_path, [2], [None], progress=False)
    assert (2, None) in FeatureStore(tmp_path).keys()


def test_sharding_partitions_the_videos(tmp_path, monkeypatch):
    vids = ids(10)
    parts = [shard_videos(vids, (i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(vids) and sum(map(len, parts)) == 10
    done = []
    for i in range(3):
        monkeypatch.setenv("RANK", str(i))
        monkeypatch.setenv("WORLD_SIZE", "3")
        s = run(TinyBackbone(), TinyDataset(vids), tmp_path)  # shard taken from the environment
        assert s.shard == (i, 3) and s.done == parts[i]
        done += s.done
    assert sorted(done) == sorted(vids)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert run(TinyBackbone(), TinyDataset(vids), tmp_path, shard=(1, 2), max_videos=4).total == 2
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_locked_video_is_skipped(tmp_path):
    ds = TinyDataset(ids(3))
    run(TinyBackbone(), TinyDataset(ids(1)), tmp_path)  # creates the store and the lock dir
    lock = FileLock(str(tmp_path / ".locks" / (video_filename("cat1/seq01") + ".lock")), timeout=0)
    lock.acquire()
    try:
        bb = TinyBackbone()
        s = run(bb, ds, tmp_path)
    finally:
        lock.release()
    assert s.skipped == {"cat1/seq01": "locked by another process"}
    assert "cat1/seq01" not in bb.calls and s.done == ["cat2/seq02"] and s.already_present == ["cat0/seq00"]


# ---------------------------------------------------------------- other processes

WORKER = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {here!r})
    from test_extract import TinyBackbone, TinyDataset, ids, LAYERS, TIMESTEPS
    from vidprobe.features import extract_dataset
    s = extract_dataset(TinyBackbone(delay={delay}, marker_dir={markers!r}), TinyDataset(ids({n})), {out!r},
                        LAYERS, TIMESTEPS, progress=False, shard={shard})
    json.dump({{"done": s.done, "skipped": s.skipped, "present": s.already_present}}, open({result!r}, "w"))
    """
)


def spawn(tmp_path, out, n, delay, markers, shard=None, tag="w"):
    result = tmp_path / f"{tag}.json"
    script = tmp_path / f"{tag}.py"
    script.write_text(WORKER.format(here=str(HERE), delay=delay, markers=str(markers), n=n, out=str(out), shard=shard, result=str(result)))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, result


def test_two_processes_on_the_same_shard_do_not_duplicate_work(tmp_path):
    out, mk = tmp_path / "store", tmp_path / "markers"
    mk.mkdir()
    n = 12
    procs = [spawn(tmp_path, out, n, 0.05, mk, tag=f"w{i}") for i in range(2)]
    results = []
    for proc, res in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]
        results.append(json.loads(res.read_text()))
    counts = markers(mk)
    assert counts == {v: 1 for v in ids(n)}  # every video extracted exactly once, by one of the two
    a, b = results
    assert not set(a["done"]) & set(b["done"]) and set(a["done"]) | set(b["done"]) == set(ids(n))
    for r in results:
        assert set(r["skipped"].values()) <= {"locked by another process"}
        assert set(r["done"]) | set(r["skipped"]) | set(r["present"]) == set(ids(n))
    assert complete_videos(out, ids(n)) == set(ids(n))


def test_killed_extraction_resumes_without_partial_files_or_rework(tmp_path):
    out = tmp_path / "store"
    n = 16  # each run is killed within 0.25 s of its first call (<= ~5 videos at 0.05 s each)
    rng = random.Random(1234)
    first_calls: dict[str, int] = {}
    for round_ in range(2):
        mk = tmp_path / f"markers{round_}"
        mk.mkdir()
        complete_before = complete_videos(out, ids(n)) if (out / "manifest.json").exists() else set()
        proc, _ = spawn(tmp_path, out, n, 0.05, mk, tag=f"k{round_}")
        deadline = time.time() + 60
        while not any(mk.iterdir()) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        calls = markers(mk)
        # nothing that was complete before this run was extracted again
        assert not set(calls) & complete_before, (round_, calls, complete_before)
        # every file present is whole (temp files aside), and the manifest is intact
        s = FeatureStore(out)
        assert s.keys() == KEYS
        for k in KEYS:
            for v in s.videos(*k):
                s.check(v, *k, full=True)
        for v, c in calls.items():
            first_calls[v] = first_calls.get(v, 0) + c
    complete_before = complete_videos(out, ids(n))
    assert len(complete_before) < n, "the kills came too late to test anything"
    bb = TinyBackbone()
    summ = run(bb, TinyDataset(ids(n)), out)
    assert sorted(bb.calls) == sorted(set(ids(n)) - complete_before)  # the rest, once each
    assert sorted(summ.already_present) == sorted(complete_before) and not summ.skipped
    assert complete_videos(out, ids(n)) == set(ids(n))
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


# ---------------------------------------------------------------- the command


@pytest.fixture
def cli_env(monkeypatch):
    from vidprobe.backbones import base

    made = []

    def factory(tiny: bool = False, device: str | None = None, model_id: str | None = None):
        made.append({"tiny": tiny, "device": device, "model_id": model_id})
        return TinyBackbone()

    monkeypatch.setitem(base._REGISTRY, SPEC.name, (SPEC, factory))
    opened = []
    fake = types.ModuleType("vidprobe.data.open")

    def open_dataset(path):
        opened.append(str(path))
        return TinyDataset(ids(4), broken={"cat0/seq03"})

    fake.open_dataset = open_dataset
    monkeypatch.setitem(sys.modules, "vidprobe.data.open", fake)
    from typer.testing import CliRunner

    from vidprobe import cli

    cli._load()
    return CliRunner(), cli.app, made, opened


def test_cli_extract(tmp_path, cli_env):
    runner, app, made, opened = cli_env
    out = tmp_path / "feats"
    args = ["extract", "--backbone", SPEC.name, "--dataset", str(tmp_path / "ds"), "--out", str(out),
            "--layers", "1,3", "--timesteps", "249,749", "--tiny", "--device", "cpu", "--quiet"]
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output  # a broken video was skipped: non-zero unless --allow-skips
    assert r.output.strip().splitlines()[-1].startswith("1 videos skipped (1 x load error: DatasetError)")
    assert opened == [str(tmp_path / "ds")] and made == [{"tiny": True, "device": "cpu", "model_id": None}]
    assert "3 extracted" in r.output and "1 skipped" in r.output and "cat0/seq03: load error" in r.output
    args.append("--allow-skips")
    s = FeatureStore(out)
    assert s.keys() == KEYS and len(s.videos(3, 749)) == 3
    assert s.settings["backbone_kwargs"] == {"tiny": True}  # device is not a feature-changing setting
    r = runner.invoke(app, args + ["--max-videos", "3"])  # sorted: seq00, seq03 (broken), seq01
    assert r.exit_code == 0 and "2 already present" in r.output and len(made) == 1
    # defaults: the backbone's reference layer and timestep
    r = runner.invoke(app, ["extract", "-b", SPEC.name, "-d", "x", "-o", str(tmp_path / "f2"), "--tiny", "-q",
                            "--allow-skips"])
    assert r.exit_code == 0, r.output
    assert FeatureStore(tmp_path / "f2").keys() == [(3, 749)]


def test_cli_extract_errors(tmp_path, cli_env):
    runner, app, made, _ = cli_env
    base = ["extract", "-b", SPEC.name, "-d", "x", "-o", str(tmp_path / "f"), "-q"]
    for extra, msg in [
        (["--shard", "3/2"], "need 0 <= i < n"),
        (["--dtype", "int8"], "unsupported storage dtype"),
        (["--height", "64"], "give both --height and --width"),
        (["--height", "64", "--width", "96"], "does not take --height, --width"),
        (["--layers", "a,b"], "expected comma-separated integers"),
    ]:
        r = runner.invoke(app, base + extra)
        assert r.exit_code != 0 and msg in r.output, (extra, r.output)
    r = runner.invoke(app, ["extract", "-b", "no-such-model", "-d", "x", "-o", str(tmp_path / "g")])
    assert r.exit_code != 0 and "unknown backbone" in r.output
    assert made == []
    assert runner.invoke(app, base + ["--tiny", "--allow-skips"]).exit_code == 0
    r = runner.invoke(app, base + ["--tiny", "--dtype", "fp32"])
    assert r.exit_code == 2 and "dtype" in r.output and "Use another --out directory" in r.output


def test_cli_backbone_args_reach_the_builder_and_the_manifest(tmp_path, monkeypatch):
    """`--backbone-arg KEY=VALUE` passes any builder option (YAML-typed) and refuses unknown ones by name."""
    from vidprobe.backbones import base

    made = []

    def factory(tiny: bool = False, resize: str = "bilinear", checkpoint_key: str = "target_encoder", frames: int = 1):
        made.append({"tiny": tiny, "resize": resize, "checkpoint_key": checkpoint_key, "frames": frames})
        return TinyBackbone()

    monkeypatch.setitem(base._REGISTRY, SPEC.name, (SPEC, factory))
    fake = types.ModuleType("vidprobe.data.open")
    fake.open_dataset = lambda path: TinyDataset(ids(2))
    monkeypatch.setitem(sys.modules, "vidprobe.data.open", fake)
    from typer.testing import CliRunner

    from vidprobe import cli

    cli._load()
    runner = CliRunner()
    out = tmp_path / "f"
    r = runner.invoke(cli.app, ["extract", "-b", SPEC.name, "-d", "x", "-o", str(out), "--tiny", "-q",
                                "-a", "resize=pil-lanczos", "--backbone-arg", "checkpoint-key=encoder", "-a", "frames=3"])
    assert r.exit_code == 0, r.output
    assert made == [{"tiny": True, "resize": "pil-lanczos", "checkpoint_key": "encoder", "frames": 3}]
    assert FeatureStore(out).settings["backbone_kwargs"] == {"tiny": True, "resize": "pil-lanczos",
                                                              "checkpoint_key": "encoder", "frames": 3}
    for extra, msg in [(["-a", "colour=red"], "does not take colour"), (["-a", "novalue"], "expected KEY=VALUE"),
                       (["--tiny", "-a", "tiny=true"], "given twice")]:
        r = runner.invoke(cli.app, ["extract", "-b", SPEC.name, "-d", "x", "-o", str(tmp_path / "g"), "-q", *extra])
        assert r.exit_code != 0 and msg in r.output, (extra, r.output)
