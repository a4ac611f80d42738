"""Read several blocks' outputs in ONE forward pass and stop after the deepest one.

Usage::

    with BlockTap(model.blocks, layers=[10, 20], take=lambda out: out[0]) as tap:
        tap.run(lambda: model(x))          # stops right after block 20
    feats = tap.outputs                    # {10: tensor, 20: tensor}

``layers`` are 1-based block counts ("block 20" = the output of the 20th
block, ``blocks[19]``); layer 0 would be the block input and is not tapped
here. The forward is aborted by an exception raised from the hook of the
deepest requested block, so no later block runs.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn


class _StopForward(Exception):
    pass


class BlockTap:
    def __init__(
        self,
        blocks: Sequence[nn.Module],
        layers: Sequence[int],
        take: Callable[[Any], torch.Tensor] | None = None,
        stop_early: bool = True,
    ):
        if not layers:
            raise ValueError("BlockTap: no layers requested")
        n = len(blocks)
        for layer in layers:
            if not 1 <= layer <= n:
                raise ValueError(f"layer {layer} out of range: this model has blocks 1..{n}")
        self.blocks = blocks
        self.layers = sorted(set(int(x) for x in layers))
        self.take = take or (lambda out: out[0] if isinstance(out, (tuple, list)) else out)
        self.stop_early = stop_early
        self.outputs: dict[int, torch.Tensor] = {}
        self.stopped_early = False
        self._handles: list[Any] = []

    def __enter__(self) -> "BlockTap":
        deepest = self.layers[-1]
        for layer in self.layers:
            block = self.blocks[layer - 1]

            def hook(_mod, _inp, out, layer=layer):
                self.outputs[layer] = self.take(out).detach()
                if self.stop_early and layer == deepest:
                    raise _StopForward()

            self._handles.append(block.register_forward_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def run(self, fn: Callable[[], Any]) -> Any:
        """Call ``fn`` (the model's forward); returns its output or ``None`` when stopped early."""
        try:
            return fn()
        except _StopForward:
            self.stopped_early = True
            return None
        finally:
            missing = [layer for layer in self.layers if layer not in self.outputs]
            if missing and not self.stopped_early:
                pass  # an exception is propagating or the model skipped blocks; caller checks
