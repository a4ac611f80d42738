"""The probe: a shallow VGGT-like network on frozen features, its heads, losses and training."""

from vidprobe.lazy import lazy_exports

_EXPORTS = {
    "PRESETS": "vidprobe.probe.config",
    "ProbeConfig": "vidprobe.probe.config",
    "ProbeConfigError": "vidprobe.probe.config",
    "LossConfig": "vidprobe.probe.losses",
    "NonFiniteLossError": "vidprobe.probe.losses",
    "prepare_targets": "vidprobe.probe.losses",
    "probe_loss": "vidprobe.probe.losses",
    "Probe": "vidprobe.probe.model",
    "count_parameters": "vidprobe.probe.model",
}

__all__ = [
    "PRESETS",
    "LossConfig",
    "NonFiniteLossError",
    "Probe",
    "ProbeConfig",
    "ProbeConfigError",
    "count_parameters",
    "prepare_targets",
    "probe_loss",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
