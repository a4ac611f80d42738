"""The probe's DPT heads are :class:`vidprobe.nn.dpt.DPTHead` (re-exported here: ``tests/test_reference_mode.py``)."""

from vidprobe.nn.dpt import DPTHead, FusionBlock, ResidualConvUnit, activate

__all__ = ["DPTHead", "FusionBlock", "ResidualConvUnit", "activate"]
