"""The probe: a shallow VGGT-like network on frozen features, its heads, losses and training."""

from vidprobe.probe.config import PRESETS, ProbeConfig, ProbeConfigError
from vidprobe.probe.losses import LossConfig, NonFiniteLossError, prepare_targets, probe_loss
from vidprobe.probe.model import Probe, count_parameters

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
