"""The published numbers (Huang et al., CVPR 2026, Table 1; Point Err x10), for reference columns."""

from __future__ import annotations

from vidprobe.metrics.registry import BENCHMARK_METRICS

#: the metrics of each published tuple, in order, each at its table scale (Point Err x10, Depth Err, AUC@5, AUC@30)
PUBLISHED_METRICS: tuple[str, ...] = BENCHMARK_METRICS

# model -> dataset -> one value per PUBLISHED_METRICS entry
PUBLISHED: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "DINOv2": {"co3d": (0.559, 0.209, 0.051, 0.508), "dl3dv": (2.814, 0.534, 0.013, 0.245)},
    "V-JEPA": {"co3d": (0.439, 0.214, 0.076, 0.619), "dl3dv": (1.576, 0.613, 0.076, 0.558)},
    "CogVideoX": {"co3d": (0.485, 0.231, 0.051, 0.569), "dl3dv": (1.748, 0.608, 0.061, 0.486)},
    "Aether": {"co3d": (0.501, 0.249, 0.054, 0.571), "dl3dv": (1.566, 0.574, 0.067, 0.527)},
    "Open-Sora2.0": {"co3d": (0.391, 0.196, 0.096, 0.643), "dl3dv": (1.306, 0.445, 0.115, 0.607)},
    "WAN2.1-14B": {"co3d": (0.284, 0.151, 0.200, 0.736), "dl3dv": (1.051, 0.323, 0.136, 0.660)},
    "Fast3R": {"co3d": (0.262, 0.145, 0.272, 0.769), "dl3dv": (1.379, 0.514, 0.134, 0.637)},
}

# our registered backbone -> the published row it reproduces
BACKBONE_TO_PUBLISHED = {
    "dinov2-large": "DINOv2",
    "vjepa-vith16-384": "V-JEPA",
    "cogvideox-5b-i2v": "CogVideoX",
    "aether": "Aether",
    "opensora2": "Open-Sora2.0",
    "wan2.1-t2v-14b": "WAN2.1-14B",
    "fast3r": "Fast3R",
}


def dataset_kind(dataset: str | None) -> str | None:
    """'co3d' / 'dl3dv' from a dataset path or name (None when it is neither, e.g. synthetic)."""
    if not dataset:
        return None
    d = str(dataset).lower()
    if "co3d" in d:
        return "co3d"
    if "dl3dv" in d:
        return "dl3dv"
    return None


def published_row(backbone: str | None, dataset: str | None) -> tuple[float, float, float, float] | None:
    """The published values of :data:`PUBLISHED_METRICS` (Point Err x10, Depth Err, AUC@5, AUC@30) for a run, or None."""
    model = BACKBONE_TO_PUBLISHED.get(backbone or "")
    kind = dataset_kind(dataset)
    if model is None or kind is None:
        return None
    return PUBLISHED[model][kind]
