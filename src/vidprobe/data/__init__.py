"""Clips and dataset readers (synthetic/native, CO3Dv2, DL3DV); all cameras OpenCV."""

from vidprobe.data.base import DatasetError, ScanReport, VideoDataset, split_videos
from vidprobe.data.clip import Clip, ClipError

__all__ = ["Clip", "ClipError", "DatasetError", "ScanReport", "VideoDataset", "split_videos"]
