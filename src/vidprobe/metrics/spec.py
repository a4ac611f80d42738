"""How one metric is shown: :class:`MetricSpec` (label, table scale, direction, format).

Each computing module declares the specs of the keys it produces next to the code that computes them
(``METRIC_SPECS`` in :mod:`vidprobe.metrics.points`, :mod:`~vidprobe.metrics.depth`,
:mod:`~vidprobe.metrics.camera`, :mod:`~vidprobe.metrics.correspondence`); :mod:`vidprobe.metrics.registry`
gathers them into the one registry every table and figure reads.
"""

from __future__ import annotations

from dataclasses import dataclass

ERROR, ACCURACY, COUNT = True, False, None  # MetricSpec.lower_is_better

@dataclass(frozen=True)
class MetricSpec:
    """How one metric is shown.

    ``name``: its key in metrics.json and the results DB. ``label``: the display name at scale 1.
    ``table_scale``: the factor of the published table (10 for Point Err; 1 for the rest).
    ``lower_is_better``: ``True`` for errors, ``False`` for accuracies, ``None`` for counts.
    ``unit``: e.g. ``"px"`` (empty: unitless). ``fmt``: the format of a value in the report tables.
    ``family``: ``points``, ``depth``, ``camera``, ``chamfer``, ``counts`` or ``consistency``.
    ``radar``: one of the axes of the report's radar chart.
    """

    name: str
    label: str
    family: str
    lower_is_better: bool | None
    table_scale: float = 1.0
    unit: str = ""
    fmt: str = ".3f"
    radar: bool = False

    @property
    def scaled_in_tables(self) -> bool:
        return self.table_scale != 1.0

    def _suffix(self, scaled: bool) -> str:
        if not self.scaled_in_tables:
            return ""
        return f" x{self.table_scale:g}" if scaled else " (raw)"

    def column(self, scaled: bool = True) -> str:
        """Display header: ``"Point Err x10"`` (scaled) / ``"Point Err (raw)"``; ``"Depth Err"`` either way."""
        return self.label + self._suffix(scaled)

    def key_column(self, scaled: bool = False) -> str:
        """Header by name for plain-text tables: ``"point_err (raw)"`` / ``"point_err x10"``; ``"depth_err"``."""
        return self.name + self._suffix(scaled)

    def scale(self, value: float | None, scaled: bool = True) -> float | None:
        """``value`` at the table scale (``scaled``) or raw; ``None`` stays ``None``."""
        if value is None:
            return None
        return value * self.table_scale if scaled else value

    @property
    def direction(self) -> str:
        """``"lower is better"``, ``"higher is better"`` or ``""`` (a count)."""
        if self.lower_is_better is None:
            return ""
        return "lower is better" if self.lower_is_better else "higher is better"


__all__ = ["ACCURACY", "COUNT", "ERROR", "MetricSpec"]
