"""Clips and dataset readers (synthetic/native, CO3Dv2, DL3DV); all cameras OpenCV."""

from vidprobe.lazy import lazy_exports

_EXPORTS = {
    "DatasetError": "vidprobe.data.base",
    "ScanReport": "vidprobe.data.base",
    "VideoDataset": "vidprobe.data.base",
    "split_videos": "vidprobe.data.base",
    "Clip": "vidprobe.data.clip",
    "ClipError": "vidprobe.data.clip",
}

__all__ = ["Clip", "ClipError", "DatasetError", "ScanReport", "VideoDataset", "split_videos"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
