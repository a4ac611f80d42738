"""The optimiser (AdamW) and its learning-rate schedule (warm-up, then cosine), and steps per epoch."""

from __future__ import annotations

import math

import torch

from vidprobe.config import ConfigError
from vidprobe.probe.train_config import OptimConfig

__all__ = ["build_optimizer", "lr_lambda", "lr_schedule", "steps_in_epoch", "warmup_steps"]


def lr_lambda(total_steps: int, warmup_frac: float, base_lr: float, min_lr: float):
    """Linear warm-up over ``warmup_frac`` of the steps, then cosine from ``base_lr`` to ``min_lr``."""
    return _linear_cosine(total_steps, max(1, round(total_steps * warmup_frac)), base_lr, min_lr)


def warmup_steps(total_steps: int, optim: OptimConfig, epochs: int) -> int:
    """W: ``int(warmup_epochs * total / epochs)`` (the release's scaling) or ``round(frac * total)``; at least 1.

    (A full reference run has W = 10 x steps per epoch; W = 0 is possible only for a run capped by
    ``max_steps``, and the release's scheduler would then keep the lr ~0 for the whole run.)
    """
    if optim.warmup_epochs is not None:
        return max(1, int(optim.warmup_epochs * total_steps / epochs))
    return max(1, round(total_steps * optim.warmup_frac))


def lr_schedule(total_steps: int, optim: OptimConfig, epochs: int):
    """The lr factor of step ``s`` (``LambdaLR``), by ``optim.warmup_rule``:

    * ``linear``: ``(s + 1) / W`` for ``s < W``, then cosine from the base lr at step W to ``min_lr`` at the
      last step (:func:`lr_lambda`);
    * ``from_zero``: pl_bolts' ``LinearWarmupCosineAnnealingLR`` stepped once per step (the release):
      lr 0 at step 0, ``+ base / (W - 1)`` per step, the base lr at steps W-1 and W, then its chained
      cosine update down to ``min_lr`` at step ``total`` (W from :func:`warmup_steps`).
    """
    warm = warmup_steps(total_steps, optim, epochs)
    if optim.warmup_rule == "linear":
        return _linear_cosine(total_steps, warm, optim.lr, optim.min_lr)
    base, low = optim.lr, optim.min_lr
    lrs, lr = [], 0.0
    for step in range(total_steps + 1):
        if step == 0:
            lr = 0.0
        elif step < warm:
            lr = lr + base / (warm - 1)
        elif step == warm:
            lr = base
        else:
            span = total_steps - warm
            lr = (1 + math.cos(math.pi * (step - warm) / span)) / (1 + math.cos(math.pi * (step - warm - 1) / span)) * (
                lr - low
            ) + low
        lrs.append(lr / base)

    def f(step: int) -> float:
        return lrs[min(step, total_steps)]

    return f


def _linear_cosine(total_steps: int, warm: int, base_lr: float, min_lr: float):
    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        prog = min(1.0, (step - warm) / max(1, total_steps - warm))
        lr = min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * prog))
        return lr / base_lr

    return f


def build_optimizer(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on every parameter (``decay_all``) or not on norms, biases and tokens."""
    if optim.decay_all:
        groups = [{"params": list(model.parameters()), "weight_decay": optim.weight_decay}]
    else:
        decay, no_decay = [], []
        for n_, p in model.named_parameters():
            (no_decay if p.ndim < 2 or "token" in n_ or "norm" in n_ else decay).append(p)
        groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas)


def steps_in_epoch(videos: int, global_batch: int, drop_last: bool) -> int:
    """``ceil(videos / global batch)`` (the last batch wraps around to full), or ``floor`` with ``drop_last``."""
    if not drop_last:
        return max(1, math.ceil(videos / global_batch))
    if videos < global_batch:
        raise ConfigError(
            f"drop_last: {videos} training videos do not fill one global batch of {global_batch} "
            "(batch_size x processes); lower batch_size or set drop_last: false", "drop_last"
        )
    return videos // global_batch
