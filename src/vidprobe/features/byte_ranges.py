"""Byte-range reads: fetch exactly the bytes a sample needs from an open file, no more.

A feature file's ``features [N,h,w,C]`` tensor is ``N`` maps stored back to
back; map ``i`` spans bytes ``[start + i * per_map, start + (i + 1) * per_map)``.
A read asks for a sorted list of distinct map ids, merges consecutive ids
into half-open runs (:func:`map_runs`) and fills a pre-allocated tensor
``[len(ids),h,w,C]`` run by run:

* ``pread``: ``os.preadv`` of each run's byte range straight into the tensor
  (the caller sets ``POSIX_FADV_RANDOM`` so the kernel does not read ahead);
* ``mmap``: ``safetensors.safe_open(...).get_slice`` of each run.

Both yield the bytes of each run as it lands, so a caller's byte counter is
exact. Every short read raises :class:`FeatureStoreError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import torch

from vidprobe.features.layout import FeatureStoreError

__all__ = ["map_runs", "read_into", "read_exact", "pread_runs", "mmap_runs"]

_pread = os.preadv  # indirection so tests can count every byte the reader asks the OS for


def map_runs(sorted_ids: list[int]) -> list[tuple[int, int]]:
    """[0,1,2,5,6,9] -> [(0,3),(5,7),(9,10)] (half-open runs of consecutive ids)."""
    runs: list[tuple[int, int]] = []
    for i in sorted_ids:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def read_into(fd: int, buf: memoryview, offset: int, path: Path, what: str) -> int:
    """Fill ``buf`` with the bytes at ``offset`` of ``fd`` (looping over short reads); raises on end of file."""
    got = 0
    while got < len(buf):
        k = _pread(fd, [buf[got:]], offset + got)
        if k == 0:
            raise FeatureStoreError(f"{path}: file truncated while reading {what} (got {got} of {len(buf)} bytes)")
        got += k
    return got


def read_exact(fd: int, n: int, offset: int, path: Path, what: str) -> bytes:
    """The ``n`` bytes at ``offset`` of ``fd``."""
    out = bytearray(n)
    read_into(fd, memoryview(out), offset, path, what)
    return bytes(out)


def pread_runs(fd: int, path: Path, start: int, per_map: int, runs: list[tuple[int, int]], buf: torch.Tensor) -> Iterator[int]:
    """Read the maps of ``runs`` (tensor data at byte ``start``, ``per_map`` bytes each) into ``buf``, in order.

    ``buf`` is contiguous ``[sum of run lengths, h, w, C]``; yields the bytes read per run.
    """
    flat = memoryview(buf.view(torch.uint8).numpy()).cast("B") if buf.numel() else memoryview(b"")
    pos = 0
    for a, b in runs:
        nb = (b - a) * per_map
        read_into(fd, flat[pos : pos + nb], start + a * per_map, path, f"maps {a}..{b - 1}")
        pos += nb
        yield nb


def mmap_runs(path: Path, name: str, per_map: int, runs: list[tuple[int, int]], buf: torch.Tensor) -> Iterator[int]:
    """As :func:`pread_runs`, through ``safetensors.safe_open(path).get_slice(name)``; yields the bytes per run."""
    pos = 0
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as st:
            sl = st.get_slice(name)
            for a, b in runs:
                buf[pos : pos + b - a] = sl[a:b]
                pos += b - a
                yield (b - a) * per_map
    except Exception as e:  # safetensors raises its own error type
        raise FeatureStoreError(f"{path}: unreadable safetensors file ({e})") from None
