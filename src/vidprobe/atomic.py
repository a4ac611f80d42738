"""Atomic file writes, the one mechanism every writer in vidprobe uses.

A temp file is written in the target's directory and renamed over the target,
so a crash, a full disk or an exception mid-write leaves the previous file
intact and no partial file under the final name. The final file gets ordinary
permissions, ``0666`` less the process umask (so a lab can share a feature
store), even when the writer recreated the temp file itself (``safetensors``
writes its files as ``0600``). With ``fsync`` the data and then the directory
entry are flushed to disk.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

_CHUNK = 64 << 20


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (``/proc/self/status``)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry (after a rename) to disk; a no-op where the OS refuses."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = False, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temp path next to ``path``; when the block succeeds it atomically replaces ``path``.

    On error the temp file is removed and ``path`` is left untouched. With
    ``keep_suffix`` the temp name ends in ``.tmp<suffix>`` so libraries that pick
    a format from the name (PIL) still work; otherwise it ends in ``.tmp``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp{path.suffix}" if keep_suffix else ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)


def write_all(fh, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to an open binary file in 64 MiB chunks."""
    view = memoryview(data)
    for i in range(0, len(view), _CHUNK):
        fh.write(view[i : i + _CHUNK])


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview, fsync: bool = True,
                       keep_suffix: bool = False) -> int:
    """Write ``data`` to ``path`` atomically; returns the number of bytes written."""
    with atomic_path(path, fsync=fsync, keep_suffix=keep_suffix) as tmp:
        with open(tmp, "wb") as fh:
            write_all(fh, data)
    return len(data)


def atomic_write_text(path: str | Path, text: str, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode(), fsync=fsync)


__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "current_umask", "fsync_dir", "write_all"]
