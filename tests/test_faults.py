"""Fault injection not covered elsewhere: a full disk under every writer, and two corrupt inputs.

Where the other fault cases of the reliability list are tested:

* extraction SIGKILLed and resumed, no partial file, no rework: test_extract.py::test_killed_extraction_resumes_without_partial_files_or_rework
* two extraction processes (same shard / other shards / a locked video): test_extract.py::test_two_processes_on_the_same_shard_do_not_duplicate_work,
  ::test_sharding_partitions_the_videos, ::test_locked_video_is_skipped; lost or corrupt files redone: ::test_resume_does_no_work_and_redoes_only_what_is_missing
* training SIGKILLed mid-epoch and resumed to identical weights: test_train.py::test_sigkill_mid_epoch_then_resume
* truncated / empty safetensors, NaN/Inf features, frame index past the end: test_feature_store.py::test_corrupt_files_raise_naming_the_file;
  labels files: test_labels.py::test_file_level_errors; NaN in training: test_train.py::test_nan_in_features_is_reported
* non-orthonormal rotation in labels (writer): test_labels.py::test_writer_validates_and_keeps_old_file_on_error (reader: here)
* CO3D annotation with a missing or bad field: test_co3d.py::test_bad_annotation_names_file_and_field
* DL3DV unknown camera model: test_dl3dv.py::test_bad_transforms_name_file_and_field, ::test_colmap_unknown_or_fisheye_model
* image that fails to decode (scans skip and count): test_co3d.py::test_truncated_image_and_depth, test_dl3dv.py::test_bad_json_missing_and_escaping_images
* a write that fails half-way (patched writer): test_feature_store.py::test_failed_write_keeps_previous_file, test_results_db.py::test_writes_are_atomic

The full disk is real: either a small tmpfs filled to the last byte (``ENOSPC``; needs root
to mount, skipped otherwise) or ``RLIMIT_FSIZE`` lowered in this process (``EFBIG`` on any
write past 64 KiB; works for every user). In both, the previous good file must survive byte for
byte, no temp file may be left under a final name, and a write after space returns succeeds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

FSIZE_LIMIT = 64 << 10  # bytes; above pytest's capture files, below every write that must fail


class Disk:
    def __init__(self, mode: str, root: Path):
        self.mode, self.root = mode, root

    @contextlib.contextmanager
    def full(self):
        if self.mode == "tmpfs":
            filler = self.root / "filler.bin"
            with open(filler, "wb", buffering=0) as fh:
                for chunk in (1 << 20, 1 << 12, 1 << 9, 1):
                    block = b"\0" * chunk
                    while True:
                        try:
                            fh.write(block)
                        except OSError as e:
                            assert e.errno == errno.ENOSPC, e
                            break
            try:
                yield
            finally:
                filler.unlink()
        else:
            old_lim = resource.getrlimit(resource.RLIMIT_FSIZE)
            old_sig = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, old_lim[1]))
            try:
                yield
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, old_lim)
                signal.signal(signal.SIGXFSZ, old_sig)


@pytest.fixture(params=["tmpfs", "fsize"])
def disk(request, tmp_path):
    if request.param == "fsize":
        yield Disk("fsize", tmp_path)
        return
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (the fsize variant covers this case)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield Disk("tmpfs", mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def no_temp_files(d: Path) -> list[Path]:
    return [p for p in d.rglob("*") if ".tmp" in p.name and p.name != "filler.bin"]


# ------------------------------------------------------------------ full disk, per writer


def test_full_disk_feature_store(disk):
    from vidprobe.features.store import write_feature_file

    path = disk.root / "L001" / "v.safetensors"
    fi = torch.tensor([0, 1, 1, 2])
    good = torch.randn(3, 4, 5, 8)
    write_feature_file(path, good, fi, {"video_id": "v"}, "fp16")
    before = path.read_bytes()
    with disk.full(), pytest.raises(OSError) as e:
        write_feature_file(path, torch.randn(3, 32, 32, 32), fi, {"video_id": "v"}, "fp16")
    assert e.value.errno in (errno.ENOSPC, errno.EFBIG)
    assert path.read_bytes() == before
    assert torch.equal(load_file(str(path))["features"], good.half())
    assert not no_temp_files(disk.root)
    write_feature_file(path, torch.randn(3, 32, 32, 32), fi, {"video_id": "v"}, "fp16")  # space is back: works
    assert load_file(str(path))["features"].shape == (3, 32, 32, 32)


def test_full_disk_labels(disk):
    from vidprobe.data.labels import LabelsFile, write_labels_from_clip
    from vidprobe.data.synthetic import generate_clip

    path = disk.root / "labels" / "v.safetensors"
    write_labels_from_clip(path, generate_clip("orbit", 1, num_frames=3, hw=(6, 10)))
    before = path.read_bytes()
    bigger = generate_clip("orbit", 2, num_frames=6, hw=(24, 40))
    with disk.full(), pytest.raises((OSError, SafetensorError), match="No space|too large"):
        write_labels_from_clip(path, bigger)
    assert path.read_bytes() == before
    assert LabelsFile(path).num_frames == 3
    assert not no_temp_files(disk.root)
    write_labels_from_clip(path, bigger)
    assert LabelsFile(path).num_frames == 6


def test_full_disk_checkpoint(disk):
    from vidprobe.probe.train import TrainConfig, find_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Linear(256, 256)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 256)).sum().backward()
    opt.step()
    run = disk.root / "run"
    cfg = TrainConfig()
    save_checkpoint(run, model, opt, None, 1, 0, cfg, keep=2)
    good = {k: v.clone() for k, v in model.state_dict().items()}
    ck1 = find_checkpoint(run, "last")
    files_before = {p.name: p.read_bytes() for p in ck1.iterdir()}
    with torch.no_grad():
        model.weight.add_(1.0)
    with disk.full(), pytest.raises((OSError, SafetensorError), match="No space|too large"):
        save_checkpoint(run, model, opt, None, 2, 0, cfg, keep=2)
    last = find_checkpoint(run, "last")
    assert last == ck1, f"last checkpoint moved to {last} after a failed save"
    assert {p.name: p.read_bytes() for p in ck1.iterdir()} == files_before
    loaded = load_file(str(ck1 / "model.safetensors"))
    assert all(torch.equal(loaded[k], good[k]) for k in good)
    assert not (run / "checkpoints" / "step_0000002").exists()
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]  # no leftover temp dir
    save_checkpoint(run, model, opt, None, 2, 0, cfg, keep=2)  # space is back: works, and cleans its temp dir
    assert find_checkpoint(run, "last").name == "step_0000002"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_full_disk_results_db(disk):
    import sqlite3

    from vidprobe.results.db import ResultsDB, ResultsDBError

    path = disk.root / "results.sqlite"
    with ResultsDB(path) as db:
        rid = db.add_run("train", name="good", backbone="pixels", layer=1, seed=0, versions={})
        db.add_metrics(rid, {"auc_30": 0.5, "point_err": 1.25})
    many = [(f"clip{i:05d}", {f"m{j}": float(i * j) for j in range(8)}) for i in range(4000)]
    with disk.full(), pytest.raises((OSError, sqlite3.Error, ResultsDBError)), ResultsDB(path) as db:
        db.add_clip_metrics(rid, many)
        db.add_run("train", name="lost", versions={})
    with ResultsDB(path) as db:
        assert db.get_metrics(rid) == {"auc_30": 0.5, "point_err": 1.25}
        assert [r["name"] for r in db.runs()] == ["good"]
        assert db.clip_metrics(rid, "m1") == {}  # the failed transaction left nothing half-written
        assert db._con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.add_clip_metrics(rid, many[:10])  # space is back: works
        assert len(db.clip_metrics(rid, "m1")) == 10


# ------------------------------------------------------------------ corrupt inputs not tested elsewhere


def test_labels_reader_refuses_non_orthonormal_rotation(tmp_path):
    """A labels file written by another tool (not our validating writer) with a scaled rotation."""
    from vidprobe.data.labels import LabelsError, LabelsFile, write_labels_from_clip
    from vidprobe.data.synthetic import generate_clip

    good = write_labels_from_clip(tmp_path / "good.safetensors", generate_clip("orbit", 3, num_frames=4, hw=(6, 10)))
    with safe_open(str(good), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(good))
    tensors["extrinsics"][2, :, :3] *= 1.5  # frame 2: not a rotation any more
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    lf = LabelsFile(bad)
    assert lf.read([0, 1])["extrinsics"].shape == (2, 3, 4)  # frames that are fine still read
    with pytest.raises(LabelsError, match=r"bad\.safetensors.*'extrinsics'.*frame 2") as e:
        lf.read([0, 2])
    assert "rotation" in str(e.value)


def test_probe_channel_mismatch_names_expected_and_actual():
    from vidprobe.probe.config import ProbeConfig
    from vidprobe.probe.model import Probe

    model = Probe(ProbeConfig.preset("tiny", in_channels=64, out_hw=(14, 14))).eval()
    with torch.no_grad(), pytest.raises(ValueError) as e:
        model(torch.randn(1, 2, 3, 4, 32))
    msg = str(e.value)
    assert "32" in msg and "64" in msg and "channels" in msg
