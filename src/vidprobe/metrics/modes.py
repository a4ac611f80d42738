"""Metric modes: every difference between ``clean`` and ``reference`` metrics, named, in one place.

``compat="clean"`` is vidprobe's default for new studies; ``compat="reference"``
reproduces the numbers of the study's release (zxhuang1698/VidFM3D: its
``vidfm3d/utils/metrics.py``, ``vidfm3d/utils/loss.py`` and
``vidfm3d/utils/eval_utils.py`` as ``VideoProbeLitModule.validation_step`` uses
them; ``tests/test_parity_metrics.py`` checks reference mode against numbers
made by running that code). A mode is a :class:`MetricSettings`; each field
is one named difference, and :func:`settings_table` lists them (the
reproduction page renders it, next to the training settings of
:data:`vidprobe.probe.config.MODE_SETTINGS`). Functions that take ``compat`` accept the mode
name or a :class:`MetricSettings` (to change one setting alone).

Failed clips
------------
A clip *fails* a metric family when the prediction that family reads
(points, depth, or camera extrinsics) has any non-finite value (NaN, +-Inf)
anywhere in the clip: any pixel, valid or not, any frame. A diverged probe
must never look better than a poor one, so in ``clean`` mode a failed clip
gets the worst value each metric can take, and it stays in every mean:

* errors (``point_err``, ``point_err_unweighted``, ``depth_err``,
  ``abs_rel``, ``rmse``, ``acc``, ``comp``, ``chamfer``): ``+inf``; the
  split mean of an error is then ``+inf`` too (no finite mean error can be
  claimed for a probe that gave no finite prediction on some clip);
* fractions (``delta_1_25``): ``0``;
* camera: every pair of the clip has rotation and translation error
  ``+inf``, i.e. counts as a failure in ``auc_*``, ``rra_*``, ``rta_*``.

The counts ``failed_clips`` (clips that failed any family) and
``failed_points`` / ``failed_depth`` / ``failed_camera`` are always part of
the aggregate metrics (and so of ``metrics.json`` and the results database).
A clip that *cannot be scored* because its ground truth has no valid pixel is
a different thing (a data problem, not a probe failure): its value is NaN,
it is left out of the mean and counted in ``skipped_<metric>``.

``reference`` mode keeps the release's own handling, which can flatter a
diverged probe (that is what its numbers are): per-pixel Depth Err terms
that are NaN or Inf become 0; Point Err becomes NaN (a NaN in the Sim(3) fit
or the weighted sum) and, as the release's batch mean (hence its epoch mean), so does its split
mean; a camera pair fails where the release's pair would be NaN or take its
1e6-radian default. The ``failed_*`` counts are reported in both modes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

__all__ = ["COMPAT_MODES", "MetricSettings", "CLEAN", "REFERENCE", "resolve_settings", "settings_table"]

COMPAT_MODES = ("clean", "reference")

_CHOICES: dict[str, tuple] = {
    "camera_pairs": ("gauge_invariant", "release"),
    "rotation_angle": ("geodesic", "release_quaternion"),
    "camera_auc": ("pooled_1deg", "release_31bins"),
    "translation_direction": ("degenerate_threshold", "release_eps"),
    "camera_nonfinite": ("fail_clip", "release_pairs"),
    "pixel_set": ("valid", "all"),
    "nonfinite_predictions": ("fail_clip", "release"),
    "fit_threshold_precision": ("float64", "float32"),
}

_DOC: dict[str, str] = {
    "camera_pairs": "relative pose of frames i < j: P_i P_j^-1 (gauge invariant) or inv(P_i) P_j (release; "
                    "meaningful only because both sides are anchored at frame 0)",
    "rotation_angle": "rotation error: geodesic angle from the trace (roma), or the release's angle between "
                      "quaternions (largest-denominator conversion, not renormalised; differs from the geodesic "
                      "angle by ~1e-3 degree on slightly non-orthonormal float32 rotations)",
    "camera_auc": "AUC@k: 1-degree bins over [0, k] on the split's pooled pairs (VGGT), or the release's 31 equal "
                  "bins over [0, 30] per batch",
    "camera_batch_size": "clips per batch for the release's per-batch camera mean (None: pooled over the split)",
    "translation_direction": "translation directions: norms below 1e-9 are degenerate (both: 0 deg, one: 90 deg), "
                             "or the release's t / (|t| + 1e-15) with no threshold",
    "camera_nonfinite": "non-finite predicted cameras: the whole clip fails, or pair by pair where the release's "
                        "4x4 product turns NaN",
    "pixel_set": "pixels of Depth Err's denominator and of Point Err's top-25% confidence threshold: the valid "
                 "ones, or every pixel (release; invalid pixels enter with confidence 0)",
    "depth_term_clamp": "per-pixel Depth Err terms |d - d_gt| and c |d - d_gt| clamped at this value (release: 100)",
    "point_weight_eps": "added to sum(c) in Point Err's confidence-weighted mean (release: 1e-6)",
    "nonfinite_predictions": "non-finite point / depth predictions: the clip fails with the worst value, or the "
                             "release's handling (Depth Err terms -> 0, Point Err -> NaN)",
    "fit_threshold_precision": "precision of the top-25% confidence percentile and comparison (release: float32 "
                               "numpy.percentile)",
}


@dataclass(frozen=True)
class MetricSettings:
    """One metric mode; each field is a named difference between ``clean`` and ``reference``."""

    mode: str
    camera_pairs: str
    rotation_angle: str
    camera_auc: str
    camera_batch_size: int | None
    translation_direction: str
    camera_nonfinite: str
    pixel_set: str
    depth_term_clamp: float | None
    point_weight_eps: float
    nonfinite_predictions: str
    fit_threshold_precision: str

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"MetricSettings.{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.camera_batch_size is not None and self.camera_batch_size < 1:
            raise ValueError(f"MetricSettings.camera_batch_size must be >= 1 or None, got {self.camera_batch_size}")
        if self.depth_term_clamp is not None and not self.depth_term_clamp > 0:
            raise ValueError(f"MetricSettings.depth_term_clamp must be > 0 or None, got {self.depth_term_clamp}")
        if self.point_weight_eps < 0:
            raise ValueError(f"MetricSettings.point_weight_eps must be >= 0, got {self.point_weight_eps}")

    def with_(self, **changes) -> MetricSettings:
        """A copy with some settings changed (its ``mode`` becomes ``"custom"`` unless given)."""
        changes.setdefault("mode", "custom")
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


CLEAN = MetricSettings(
    mode="clean",
    camera_pairs="gauge_invariant",
    rotation_angle="geodesic",
    camera_auc="pooled_1deg",
    camera_batch_size=None,
    translation_direction="degenerate_threshold",
    camera_nonfinite="fail_clip",
    pixel_set="valid",
    depth_term_clamp=None,
    point_weight_eps=0.0,
    nonfinite_predictions="fail_clip",
    fit_threshold_precision="float64",
)

REFERENCE = MetricSettings(
    mode="reference",
    camera_pairs="release",
    rotation_angle="release_quaternion",
    camera_auc="release_31bins",
    camera_batch_size=10,
    translation_direction="release_eps",
    camera_nonfinite="release_pairs",
    pixel_set="all",
    depth_term_clamp=100.0,
    point_weight_eps=1e-6,
    nonfinite_predictions="release",
    fit_threshold_precision="float32",
)

_MODES = {"clean": CLEAN, "reference": REFERENCE}


def resolve_settings(compat: str | MetricSettings) -> MetricSettings:
    """``"clean"`` / ``"reference"`` (or a :class:`MetricSettings`, returned as is)."""
    if isinstance(compat, MetricSettings):
        return compat
    if compat not in _MODES:
        raise ValueError(f"metrics: compat must be one of {COMPAT_MODES}, got {compat!r}")
    return _MODES[compat]


def settings_table() -> list[dict]:
    """Rows ``{setting, clean, reference, doc}`` (``setting`` = ``metrics.<field>``), one per named difference.

    The same row format as :func:`vidprobe.probe.config.settings_table` (training settings), for the
    reproduction page.
    """
    return [{"setting": f"metrics.{f.name}", "clean": getattr(CLEAN, f.name), "reference": getattr(REFERENCE, f.name),
             "doc": _DOC[f.name]} for f in fields(MetricSettings) if f.name != "mode"]
