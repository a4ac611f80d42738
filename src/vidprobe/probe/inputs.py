"""What a run reads and builds, shared by training and evaluation: the feature store and dataset, the probe,
and the batch's trip to the device under the run's precision."""

from __future__ import annotations

import torch

from vidprobe.config import ConfigError
from vidprobe.probe.train_config import TrainConfig

__all__ = ["autocast_ctx", "build_probe", "dataset_hw", "open_inputs", "to_device"]


def open_inputs(cfg: TrainConfig):
    """Feature store, GT dataset and the (layer, timestep) to use."""
    from vidprobe.data.open import open_dataset
    from vidprobe.features.store import FeatureStore

    store = FeatureStore(cfg.features)
    keys = store.keys()
    if not keys:
        raise ConfigError(f"feature store {cfg.features} holds no features", "features")
    layer, timestep = cfg.layer, cfg.timestep
    if layer == -1:
        layers = sorted({k[0] for k in keys})
        if len(layers) != 1:
            raise ConfigError(f"{cfg.features} holds layers {layers}: set 'layer' in the config", "layer")
        layer = layers[0]
    if timestep is None:
        ts = sorted({k[1] for k in keys if k[0] == layer}, key=lambda x: (x is None, x))
        if len(ts) == 1:
            timestep = ts[0]
        elif None not in ts:
            raise ConfigError(f"{cfg.features} holds timesteps {ts} for layer {layer}: set 'timestep'", "timestep")
    if (layer, timestep) not in set(keys):
        raise ConfigError(f"{cfg.features} has no features for layer {layer}, timestep {timestep}; it has "
                          f"{sorted(keys, key=str)}", "layer")
    dataset = open_dataset(cfg.dataset, labels_dir=cfg.labels) if cfg.labels else open_dataset(cfg.dataset)
    return store, dataset, layer, timestep


def build_probe(cfg: TrainConfig, in_channels: int, out_hw: tuple[int, int]):
    """The run's :class:`~vidprobe.probe.model.Probe` and its :class:`~vidprobe.probe.config.ProbeConfig`."""
    from vidprobe.probe.model import Probe

    pcfg = cfg.probe_config(in_channels, out_hw)
    if cfg.grad_checkpointing:
        pcfg.grad_checkpointing = True
    return Probe(pcfg), pcfg


def dataset_hw(dataset, video: str) -> tuple[int, int]:
    """(H, W) of the dataset's images (from the first frame of ``video``)."""
    return tuple(dataset.load(video, [0]).images.shape[-2:])  # type: ignore[return-value]


def autocast_ctx(device: torch.device, precision: str):
    """bf16 autocast for ``bf16`` (or ``auto`` on a GPU), else a disabled autocast (fp32)."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


def to_device(batch: dict, device: torch.device) -> dict:
    """A collated batch with its features and ground-truth tensors on ``device``."""
    out = dict(batch)
    out["features"] = batch["features"].to(device, non_blocking=True)
    out["gt"] = {k: v.to(device, non_blocking=True) for k, v in batch["gt"].items()}
    return out
