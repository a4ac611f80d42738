"""Loading helpers the families' ``make`` functions share (see :mod:`vidprobe.backbones.builder`).

* :func:`load_hf_model` -- a transformers model: a seeded random init at the family's full (or tiny) config, or
  ``from_pretrained`` with the revision, ``config_overrides`` applied either way;
* :func:`load_checkpoint_model` -- an own implementation (Fast3R, VGGT): a seeded init, then (unless random) a
  strict load of the checkpoint file of a hub id / local dir / file;
* :func:`freeze` -- eval mode, no gradients.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from vidprobe.backbones.common import load_or_random, resolve_device, seeded


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` in eval mode with gradients off (every backbone is frozen)."""
    module.eval()
    module.requires_grad_(False)
    return module


def load_hf_model(ctx: Any, cls: Any, full_config: Callable[[], Any], tiny: dict[str, Any],
                  overrides: dict[str, Any] | None = None) -> torch.nn.Module:
    """A transformers model for the build context ``ctx`` (:class:`vidprobe.backbones.builder.BuildContext`).

    Random weights (``tiny`` or ``random_init``): ``full_config()`` -- the hub config written out in the adapter,
    so no download is needed -- with the ``tiny`` fields set for a tiny model. Pretrained: the hub's config,
    unless fields are to be replaced. ``ctx.options.config_overrides`` and then ``overrides`` (fields the
    adapter derives, e.g. an input size) are set on the config. Seeded init / ``from_pretrained(model_id,
    revision)``, moved to the context's device and dtype, frozen (:func:`load_or_random`).
    """
    config = None
    if ctx.random:
        config = full_config()
        if ctx.tiny:
            for k, v in tiny.items():
                setattr(config, k, v)
    fields = dict(ctx.options.config_overrides or {}) | dict(overrides or {})
    if fields:
        if config is None:
            config = cls.config_class.from_pretrained(ctx.model_id, revision=ctx.options.revision)
        for k, v in fields.items():
            setattr(config, k, v)
    return load_or_random(cls, config, ctx.model_id, ctx.options.revision, ctx.random, dtype=ctx.dtype,
                          device=ctx.device, seed=ctx.seed)


def load_checkpoint_model(net: Callable[[], torch.nn.Module], model_id: str | None, revision: str | None,
                          random: bool, seed: int, device: str | torch.device | None, dropped: Iterable[str],
                          who: str) -> torch.nn.Module:
    """An own implementation: ``net()`` built under ``seed``; unless ``random``, the checkpoint of ``model_id``
    (hub id / local dir / file, :func:`vidprobe.backbones.vit3d.resolve_checkpoint`) loaded strictly with the keys
    under ``dropped`` removed. Moved to ``device`` (weights stay in fp32) and frozen."""
    from vidprobe.backbones.vit3d import load_into, load_state_dict_file, resolve_checkpoint

    with seeded(seed):
        model = net()
    if not random:
        if not model_id:
            raise ValueError(f"{who}: no model_id (hub id or local path) to load")
        path = resolve_checkpoint(model_id, revision)
        load_into(model, load_state_dict_file(path), tuple(dropped), where=str(path))
    return freeze(model.to(resolve_device(device)))


__all__ = ["freeze", "load_hf_model", "load_checkpoint_model"]
