"""Feature extraction driver and the FeatureStore (sharded safetensors + manifest)."""

from vidprobe.features.extract import ExtractSummary, extract_dataset, parse_shard, shard_from_env, shard_videos
from vidprobe.features.store import (
    DTYPES,
    FeatureStore,
    FeatureStoreError,
    atomic_write_bytes,
    key_dirname,
    prepare_store,
    read_manifest,
    store_settings,
    tau_of,
    video_filename,
    write_feature_file,
)

__all__ = [
    "DTYPES",
    "ExtractSummary",
    "FeatureStore",
    "FeatureStoreError",
    "atomic_write_bytes",
    "extract_dataset",
    "key_dirname",
    "parse_shard",
    "prepare_store",
    "read_manifest",
    "shard_from_env",
    "shard_videos",
    "store_settings",
    "tau_of",
    "video_filename",
    "write_feature_file",
]
