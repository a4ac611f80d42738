"""Read several blocks' outputs in ONE forward pass and stop after the deepest one.

Usage::

    with BlockTap(model.blocks, layers=[10, 20], take=lambda out: out[0]) as tap:
        tap.run(lambda: model(x))          # stops right after block 20
    feats = tap.outputs                    # {10: tensor, 20: tensor}

``layers`` are 1-based block counts ("block 20" = the output of the 20th
block, ``blocks[19]``); layer 0 would be the block input and is not tapped
here. The forward is aborted by an exception raised from the hook of the
deepest requested block, so no later block runs.

Inside :func:`tap_submodule` (``vidprobe extract --tap PATH``) each layer reads
the output of a submodule of its block instead (``blocks[19].attn1``), through
the same hooks, so every adapter that reads its layers here supports taps with
no code of its own; the adapter turns the tapped tokens into maps exactly as
it turns a block's.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn


class _StopForward(Exception):
    pass


class TapError(ValueError):
    """A ``--tap`` that cannot be read: no such submodule in a block, or a backbone that does not read its
    layers through block hooks."""


#: the submodule (a dotted path inside each block) whose output every :class:`BlockTap` reads instead of the
#: block's own, and how many blocks it was read from (set by :func:`tap_submodule`; None: the blocks' outputs)
_SUBMODULE: ContextVar[tuple[str, list[int]] | None] = ContextVar("vidprobe_tap", default=None)


@contextlib.contextmanager
def tap_submodule(path: str | None) -> Iterator[list[int]]:
    """``with tap_submodule("attn1") as used:`` -- layer ``L`` reads ``blocks[L-1].attn1``'s output, not the block's.

    ``used`` collects the layers read through a tap, so a caller can tell a backbone that never hooks its blocks
    (the tap would be silently ignored) from one that did. ``None`` is a no-op.
    """
    used: list[int] = []
    if not path:
        yield used
        return
    token = _SUBMODULE.set((path, used))
    try:
        yield used
    finally:
        _SUBMODULE.reset(token)


def tapped_module(block: nn.Module, path: str, layer: int) -> nn.Module:
    """``block.get_submodule(path)``, or a :class:`TapError` naming the block's submodules (and the closest)."""
    try:
        return block.get_submodule(path)
    except AttributeError:
        import difflib

        names = [n for n, _ in block.named_modules() if n]
        close = difflib.get_close_matches(path, names, n=3, cutoff=0.5)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise TapError(f"--tap {path!r}: block {layer} ({type(block).__name__}) has no submodule {path!r}{hint}; "
                       f"its submodules: {', '.join(names[:40])}{' ...' if len(names) > 40 else ''}") from None


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
        tap = _SUBMODULE.get()
        for layer in self.layers:
            block = self.blocks[layer - 1]
            if tap is not None:
                block = tapped_module(block, tap[0], layer)
                tap[1].append(layer)

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
