"""The one atomic writer: previous file kept on failure, modes follow the umask, every writer uses it."""

import os
import stat

import pytest
import torch

from vidprobe import atomic
from vidprobe.atomic import atomic_path, atomic_write_bytes, current_umask


@pytest.fixture
def umask027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_current_umask_reads_without_changing(umask027):
    assert current_umask() == 0o027
    assert current_umask() == 0o027


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_modes_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        assert _mode(tmp_path / "a.bin") == 0o666 & ~mask
    finally:
        os.umask(old)


def test_writer_that_recreates_the_file_still_gets_umask_mode(tmp_path, umask027):
    """safetensors writes its files 0600; the atomic path fixes the mode before the rename."""
    from safetensors.torch import save_file

    with atomic_path(tmp_path / "t.safetensors") as tmp:
        save_file({"x": torch.zeros(2)}, str(tmp))
    assert _mode(tmp_path / "t.safetensors") == 0o640


def test_store_labels_and_dataset_files_follow_umask(tmp_path, umask027):
    from vidprobe.data.io import atomic_write_json
    from vidprobe.features.store import write_feature_file

    write_feature_file(tmp_path / "f.safetensors", torch.zeros(2, 2, 3, 4), torch.tensor([0, 1]))
    atomic_write_json(tmp_path / "d.json", {"a": 1})
    assert _mode(tmp_path / "f.safetensors") == 0o640
    assert _mode(tmp_path / "d.json") == 0o640


def test_failure_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "a.bin"
    atomic_write_bytes(p, b"old")

    def boom(fh, data):
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic, "write_all", boom)
    with pytest.raises(OSError, match="No space"):
        atomic_write_bytes(p, b"new data")
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_directory_is_fsynced_after_rename(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(atomic, "fsync_dir", lambda d: seen.append(str(d)))
    atomic_write_bytes(tmp_path / "sub" / "a.bin", b"x")
    assert seen == [str(tmp_path / "sub")]
    atomic_write_bytes(tmp_path / "b.bin", b"x", fsync=False)
    assert seen == [str(tmp_path / "sub")]


def test_one_definition_of_each_writer():
    """`atomic_write_bytes` is one function wherever it is imported from (same name, same behaviour)."""
    import vidprobe.data.io as io
    import vidprobe.features as features
    import vidprobe.features.store as store

    assert io.atomic_write_bytes is atomic.atomic_write_bytes
    assert store.atomic_write_bytes is atomic.atomic_write_bytes
    assert features.atomic_write_bytes is atomic.atomic_write_bytes
    assert not hasattr(io, "atomic_path")
