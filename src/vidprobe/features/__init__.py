"""Feature extraction driver and the FeatureStore (sharded safetensors + manifest)."""

from vidprobe.lazy import lazy_exports

_EXPORTS = {
    "ExtractSummary": "vidprobe.features.extract",
    "compress_store": "vidprobe.features.compress",
    "parse_codec": "vidprobe.features.codec",
    "extract_dataset": "vidprobe.features.extract",
    "parse_shard": "vidprobe.features.extract",
    "shard_from_env": "vidprobe.features.extract",
    "shard_videos": "vidprobe.features.extract",
    "DTYPES": "vidprobe.features.store",
    "FeatureStore": "vidprobe.features.store",
    "FeatureStoreError": "vidprobe.features.store",
    "atomic_write_bytes": "vidprobe.features.store",
    "key_dirname": "vidprobe.features.store",
    "prepare_store": "vidprobe.features.store",
    "read_manifest": "vidprobe.features.store",
    "store_settings": "vidprobe.features.store",
    "tau_of": "vidprobe.features.store",
    "video_filename": "vidprobe.features.store",
    "write_feature_file": "vidprobe.features.store",
}

__all__ = [
    "DTYPES",
    "ExtractSummary",
    "FeatureStore",
    "FeatureStoreError",
    "atomic_write_bytes",
    "compress_store",
    "extract_dataset",
    "key_dirname",
    "parse_codec",
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


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
