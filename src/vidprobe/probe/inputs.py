"""What a run reads and builds, shared by training and evaluation: the feature store and dataset, the probe,
and the batch's trip to the device under the run's precision (where features become fp32 and are checked)."""

from __future__ import annotations

import torch

from vidprobe.config import ConfigError
from vidprobe.probe.train_config import TrainConfig

__all__ = ["autocast_ctx", "build_probe", "check_finite", "dataset_hw", "open_inputs", "to_device"]


def open_inputs(cfg: TrainConfig):
    """Feature store, GT dataset and the (layer, timestep) to use."""
    from vidprobe.data.open import open_dataset
    from vidprobe.features.store import FeatureStore

    store = FeatureStore(cfg.features)
    keys = store.keys()
    if not keys:
        raise ConfigError(f"feature store {cfg.features} holds no features", "features")
    # the messages say what to choose, not where: each caller names its own setting ('layer' or --layer) by e.path
    layer, timestep = cfg.layer, cfg.timestep
    layers = sorted({k[0] for k in keys})
    if layer is None:  # the store's only layer (which may be -1, the final output)
        if len(layers) != 1:
            raise ConfigError(f"{cfg.features} holds layers {layers}: choose one", "layer")
        layer = layers[0]
    if layer not in layers:
        raise ConfigError(f"{cfg.features} has no layer {layer}; it holds layers {layers}", "layer")
    if timestep is None:
        ts = sorted({k[1] for k in keys if k[0] == layer}, key=lambda x: (x is None, x))
        if len(ts) == 1:
            timestep = ts[0]
        elif None not in ts:
            raise ConfigError(f"{cfg.features} holds timesteps {ts} for layer {layer}: choose one", "timestep")
    if (layer, timestep) not in set(keys):
        raise ConfigError(f"{cfg.features} has no features for layer {layer}, timestep {timestep}; it has "
                          f"{sorted(keys, key=str)}", "timestep")
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
    """A collated batch with its features and ground-truth tensors on ``device``; features as fp32, checked.

    The features travel in the store's dtype (half the bytes of fp32; ``non_blocking`` from pinned memory) and
    are converted and checked for NaN/Inf there, batched: a bad map raises the store's own
    :class:`~vidprobe.features.layout.FeatureStoreError` (``<file>: NaN/Inf in tensor 'features' at map(s) [..]``).
    """
    out = dict(batch)
    out["features"] = check_finite(batch["features"].to(device, non_blocking=True).float(), batch)
    out["gt"] = {k: v.to(device, non_blocking=True) for k, v in batch["gt"].items()}
    return out


def check_finite(features: torch.Tensor, batch: dict) -> torch.Tensor:
    """``features`` [B,S,...] of ``batch``, or the store's error naming the first sample's file with a NaN/Inf.

    One float32 sum of the batch (any NaN/Inf propagates; one device sync) decides; only when it is not finite
    (or overflowed) are the culprit frames looked for, so an overflow alone raises nothing.
    """
    if not features.numel() or bool(torch.isfinite(features.sum(dtype=torch.float32))):
        return features
    bad = (~torch.isfinite(features)).flatten(2).any(-1).cpu()  # [B, S]
    for b in range(bad.shape[0]):
        if bad[b].any():
            from vidprobe.features.layout import FeatureStoreError

            frames = bad[b].nonzero().flatten().tolist()
            maps = batch.get("maps")
            where = sorted({int(maps[b][s]) for s in frames}) if maps else frames
            src = batch["sources"][b] if batch.get("sources") else batch["videos"][b]
            what = "map(s)" if maps else "sampled frame(s)"
            raise FeatureStoreError(f"{src}: NaN/Inf in tensor 'features' at {what} {where}")
    return features
