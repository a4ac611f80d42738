"""Camera head (VGGT's ``heads/camera_head.py`` layout): iterative pose refinement on per-frame camera tokens.

Parameter names are VGGT-1B's (``token_norm``, ``trunk.i.*``, ``trunk_norm``,
``empty_pose_tokens [1, 1, 9]``, ``embed_pose``, ``poseLN_modulation.1``,
``pose_branch.fc1/fc2``), which the study's release probe shares.

Input: the camera token of every frame from the LAST block output
(``[B, S, D]``). Steps:

1. LayerNorm the tokens.
2. For ``k = 0 .. iters-1``: embed the current pose estimate (the learned
   "empty pose" at ``k = 0``, afterwards the previous raw estimate, detached,
   also as the base the new delta is added to) with a Linear ``9 -> D``; SiLU
   + Linear ``D -> 3D`` gives shift, scale and gate of an adaptive LayerNorm:
   ``x = tokens + gate * (LN(tokens) * (1 + scale) + shift)``; the trunk
   (``depth`` transformer blocks attending across the frames of a sample, no
   RoPE) processes ``x``; LayerNorm + MLP (``D -> D/2 -> 9``) predicts a delta
   added to the raw estimate.
3. Each step's estimate is activated and returned (the list has ``iters``
   entries, the last is the final prediction).

Pose encoding (9): translation (3, linear), quaternion xyzw (4, linear, not
normalised here), field of view ``(fov_h, fov_w)`` in radians (2, ReLU so it
is never negative) -- :func:`vidprobe.geometry.encode_pose`'s convention.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidprobe.nn.vit import Block, Mlp

POSE_DIM = 9


def activate_pose(raw: torch.Tensor) -> torch.Tensor:
    """``[..., 9]``: translation and quaternion linear, the two fields of view through ReLU."""
    return torch.cat([raw[..., :7], torch.relu(raw[..., 7:])], dim=-1)


class CameraHead(nn.Module):
    """``tokens [B, S, dim]`` -> ``iters`` pose encodings ``[B, S, 9]`` (module docstring).

    ``init_values``: LayerScale init of the trunk blocks; ``grad_checkpointing``
    (attribute): recompute each trunk block in the backward pass while training.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        depth: int = 4,
        mlp_ratio: float = 4.0,
        init_values: float = 0.01,
        qk_norm: bool = False,
        iters: int = 4,
    ):
        super().__init__()
        self.iters = iters
        self.token_norm = nn.LayerNorm(dim)
        self.trunk = nn.ModuleList(
            [Block(dim, num_heads, mlp_ratio, qk_norm=qk_norm, init_values=init_values) for _ in range(depth)]
        )
        self.trunk_norm = nn.LayerNorm(dim)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_DIM))
        self.embed_pose = nn.Linear(POSE_DIM, dim)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.adaln_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim, dim // 2, POSE_DIM)
        self.grad_checkpointing = False

    def forward(self, tokens: torch.Tensor, iters: int | None = None) -> list[torch.Tensor]:
        iters = self.iters if iters is None else iters
        B, S, D = tokens.shape
        tokens = self.token_norm(tokens)
        raw = None
        preds = []
        for _ in range(iters):
            if raw is None:
                cond = self.embed_pose(self.empty_pose_tokens.expand(B, S, POSE_DIM))
            else:
                raw = raw.detach()  # each step learns only its own delta
                cond = self.embed_pose(raw)
            shift, scale, gate = self.poseLN_modulation(cond).chunk(3, dim=-1)
            x = tokens + gate * (self.adaln_norm(tokens) * (1 + scale) + shift)
            for blk in self.trunk:
                if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                    x = checkpoint(blk, x, use_reentrant=False)
                else:
                    x = blk(x)
            delta = self.pose_branch(self.trunk_norm(x))
            raw = delta if raw is None else raw + delta
            preds.append(activate_pose(raw))
        return preds
