"""Atomic file writes: write a temp file in the target's directory, then rename over it.

A crash, a full disk or an exception mid-write leaves the previous file intact
and no partial file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _read_umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = False, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it atomically replaces ``path``.

    The temp file gets ordinary permissions (0666 less the umask, not
    mkstemp's 0600); on error it is removed and ``path`` is left untouched.
    With ``fsync`` the data is flushed to disk before the rename. With
    ``keep_suffix`` the temp name ends in ``.tmp<suffix>`` so libraries that
    pick a format from the name (PIL) still work; otherwise it ends in ``.tmp``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}" if keep_suffix else ".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        yield Path(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode(), fsync=fsync)
