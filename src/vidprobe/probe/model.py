"""The probe: alternating frame/global attention over frozen features, DPT and camera heads.

``Probe(config)(features [B, S, h, w, C])`` returns a dict with, for the
active heads only:

- ``points [B, S, H, W, 3]`` and ``points_conf [B, S, H, W]`` (point head),
- ``depth [B, S, H, W]`` and ``depth_conf [B, S, H, W]`` (depth head),
- ``pose_enc [B, S, 9]`` (final refinement step) and ``pose_enc_list``
  (one ``[B, S, 9]`` per step; camera head).

Token layout per frame: ``[camera, register x R, patches (row-major)]``.
Frame 0 of every sample (the reference frame) uses its own learned camera
and register tokens; frames 1..S-1 share a second set. Each of the
``depth`` layers runs a frame-attention block (tokens of one frame) and
then a global-attention block (all tokens of all frames of a sample); the
layer's output is ``frame_out || global_out`` (``2 * width`` channels),
and every layer's output is kept for the heads. 2D RoPE (see
:mod:`vidprobe.probe.layers`) uses the same patch positions in every frame
(no temporal position); special tokens are at position 0 (unrotated).

Heads run in float32 with autocast disabled (the trunk may run under bf16
autocast). With ``grad_checkpointing`` every block and each dense head is
recomputed in the backward pass (``torch.utils.checkpoint``,
``use_reentrant=False``).
"""

from __future__ import annotations

import re
from contextlib import nullcontext

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vidprobe.probe.camera import CameraHead
from vidprobe.probe.config import ProbeConfig
from vidprobe.probe.dpt import DPTHead
from vidprobe.probe.layers import Block, RoPE2D, grid_positions


class Probe(nn.Module):
    def __init__(self, config: ProbeConfig):
        super().__init__()
        if not isinstance(config, ProbeConfig):
            raise TypeError(f"Probe: expected a ProbeConfig, got {type(config).__name__}")
        self.config = c = config
        self.num_special = 1 + c.num_registers
        self.input_norm = nn.LayerNorm(c.in_channels)
        self.input_proj = nn.Linear(c.in_channels, c.width)
        # index 0: the reference (first) frame; index 1: every other frame
        self.camera_token = nn.Parameter(torch.empty(2, 1, c.width))
        self.register_tokens = nn.Parameter(torch.empty(2, c.num_registers, c.width))
        nn.init.trunc_normal_(self.camera_token, std=c.token_init_std)
        nn.init.trunc_normal_(self.register_tokens, std=c.token_init_std)
        self.frame_blocks = nn.ModuleList(
            [Block(c.width, c.num_heads, c.mlp_ratio, c.qk_norm, c.layerscale) for _ in range(c.depth)]
        )
        self.global_blocks = nn.ModuleList(
            [Block(c.width, c.num_heads, c.mlp_ratio, c.qk_norm, c.layerscale) for _ in range(c.depth)]
        )
        self.rope = RoPE2D(c.head_dim, c.rope_base) if c.rope else None
        dpt_kw = dict(
            features=c.dpt_features,
            out_channels=c.dpt_out_channels,
            last_hidden=c.dpt_last_hidden,
            conf_activation="expp1",
            pos_embed=c.dpt_pos_embed,
            skip_relu=c.dpt_skip_relu,
        )
        self.point_head = (
            DPTHead(c.token_dim, output_dim=4, activation="inv_log", **dpt_kw) if "points" in c.active_heads else None
        )
        self.depth_head = DPTHead(c.token_dim, output_dim=2, activation="exp", **dpt_kw) if "depth" in c.active_heads else None
        self.camera_head = (
            CameraHead(
                c.token_dim,
                c.camera_heads,
                depth=c.camera_depth,
                mlp_ratio=c.mlp_ratio,
                layerscale=c.layerscale,
                qk_norm=c.camera_qk_norm,
                iters=c.camera_iters,
            )
            if "camera" in c.active_heads
            else None
        )
        self.set_grad_checkpointing(c.grad_checkpointing)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.config.grad_checkpointing = bool(enabled)
        if self.camera_head is not None:
            self.camera_head.grad_checkpointing = bool(enabled)

    def _ckpt(self) -> bool:
        return self.config.grad_checkpointing and self.training and torch.is_grad_enabled()

    def special_tokens(self, batch: int, frames: int) -> torch.Tensor:
        """``[B, S, 1 + R, width]``: reference set for frame 0, shared set for the rest."""
        special = torch.cat([self.camera_token, self.register_tokens], dim=1)  # [2, 1+R, width]
        idx = torch.ones(frames, dtype=torch.long, device=special.device)
        idx[0] = 0
        return special[idx].unsqueeze(0).expand(batch, -1, -1, -1)

    def aggregate(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Run the trunk; returns every layer's output ``[B, S, 1+R+h*w, 2*width]``."""
        c = self.config
        if features.dim() != 5:
            raise ValueError(f"Probe: features must be [B, S, h, w, C], got shape {tuple(features.shape)}")
        B, S, h, w, C = features.shape
        if C != c.in_channels:
            raise ValueError(f"Probe: features have {C} channels, config.in_channels is {c.in_channels}")
        x = self.input_proj(self.input_norm(features)).reshape(B, S, h * w, c.width)
        # special tokens stay fp32 under autocast (the concatenation promotes): the residual stream is fp32
        tokens = torch.cat([self.special_tokens(B, S), x], dim=2)
        P = tokens.shape[2]
        rope_f = rope_g = None
        if self.rope is not None:
            cos, sin = self.rope.tables(grid_positions(h, w, self.num_special, device=features.device))
            rope_f = (cos, sin)
            rope_g = (cos.repeat(S, 1), sin.repeat(S, 1))
        outputs = []
        ck = self._ckpt()
        for fblk, gblk in zip(self.frame_blocks, self.global_blocks):
            t = tokens.reshape(B * S, P, c.width)
            t = checkpoint(fblk, t, rope_f, use_reentrant=False) if ck else fblk(t, rope_f)
            f_out = t.reshape(B, S, P, c.width)
            t = t.reshape(B, S * P, c.width)
            t = checkpoint(gblk, t, rope_g, use_reentrant=False) if ck else gblk(t, rope_g)
            g_out = t.reshape(B, S, P, c.width)
            outputs.append(torch.cat([f_out, g_out], dim=-1))
            tokens = g_out
        return outputs

    def forward(self, features: torch.Tensor, out_hw: tuple[int, int] | None = None) -> dict:
        c = self.config
        outputs = self.aggregate(features)  # validates the shape
        B, S, h, w, _ = features.shape
        H, W = tuple(out_hw) if out_hw is not None else c.out_hw
        res: dict = {}
        ck = self._ckpt()
        dev = features.device.type
        no_autocast = torch.autocast(device_type=dev, enabled=False) if dev in ("cpu", "cuda", "xpu", "mps") else nullcontext()
        with no_autocast:
            outs = [o.float() for o in outputs]
            if self.point_head is not None or self.depth_head is not None:
                dense = [outs[i][:, :, self.num_special :].reshape(B * S, h * w, c.token_dim) for i in c.dpt_layer_indices]
            if self.point_head is not None:
                if ck:
                    pts, conf = checkpoint(self.point_head, dense, (h, w), (H, W), use_reentrant=False)
                else:
                    pts, conf = self.point_head(dense, (h, w), (H, W))
                res["points"] = pts.reshape(B, S, 3, H, W).permute(0, 1, 3, 4, 2)
                res["points_conf"] = conf.reshape(B, S, H, W)
            if self.depth_head is not None:
                if ck:
                    dep, conf = checkpoint(self.depth_head, dense, (h, w), (H, W), use_reentrant=False)
                else:
                    dep, conf = self.depth_head(dense, (h, w), (H, W))
                res["depth"] = dep.reshape(B, S, H, W)
                res["depth_conf"] = conf.reshape(B, S, H, W)
            if self.camera_head is not None:
                poses = self.camera_head(outs[-1][:, :, 0])
                res["pose_enc"] = poses[-1]
                res["pose_enc_list"] = poses
        return res


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# release key (regex) -> ours; the order matters only for readability, every key matches at most one rule
_RELEASE_RULES: tuple[tuple[str, str], ...] = (
    (r"backbone\.input_proj\.0\.(weight|bias)", r"input_norm.\1"),
    (r"backbone\.input_proj\.1\.(weight|bias)", r"input_proj.\1"),
    (r"backbone\.camera_token", "camera_token"),
    (r"backbone\.register_token", "register_tokens"),
    (r"backbone\.(frame|global)_blocks\.(\d+)\.(.+)", r"\1_blocks.\2.\3"),
    (r"camera_head\.empty_pose_tokens", "camera_head.empty_pose"),
    (r"camera_head\.poseLN_modulation\.1\.(weight|bias)", r"camera_head.modulation.1.\1"),
    (r"camera_head\.(token_norm|trunk_norm|embed_pose|pose_branch\.fc1|pose_branch\.fc2)\.(weight|bias)",
     r"camera_head.\1.\2"),
    (r"camera_head\.trunk\.(\d+)\.(.+)", r"camera_head.trunk.\1.\2"),
    (r"(point|depth)_head\.norm\.(weight|bias)", r"\1_head.norm.\2"),
    (r"(point|depth)_head\.projects\.(\d)\.(weight|bias)", r"\1_head.projects.\2.\3"),
    (r"(point|depth)_head\.resize_layers\.(\d)\.(weight|bias)", r"\1_head.resize.\2.\3"),
    (r"(point|depth)_head\.scratch\.output_conv1\.(weight|bias)", r"\1_head.out_conv1.\2"),
    (r"(point|depth)_head\.scratch\.output_conv2\.0\.(weight|bias)", r"\1_head.out_conv2.\2"),
    (r"(point|depth)_head\.scratch\.output_conv2\.2\.(weight|bias)", r"\1_head.out_conv3.\2"),
)
_ONE_BASED = (  # the release numbers DPT levels 1..4; ours 0..3
    (r"(point|depth)_head\.scratch\.layer(\d)_rn\.weight", "{0}_head.layer_rn.{1}.weight"),
    (r"(point|depth)_head\.scratch\.refinenet(\d)\.out_conv\.(weight|bias)", "{0}_head.fusion.{1}.out_conv.{2}"),
    (r"(point|depth)_head\.scratch\.refinenet(\d)\.resConfUnit([12])\.(conv[12])\.(weight|bias)",
     "{0}_head.fusion.{1}.res{2}.{3}.{4}"),
)


def release_key(key: str) -> str:
    """The :class:`Probe` key of a key of the release's ``ProbeModelPA`` state dict (KeyError if none)."""
    for pat, repl in _RELEASE_RULES:
        if re.fullmatch(pat, key):
            return re.sub(pat, repl, key)
    for pat, fmt in _ONE_BASED:
        m = re.fullmatch(pat, key)
        if m:
            g = list(m.groups())
            return fmt.format(g[0], int(g[1]) - 1, *g[2:])
    raise KeyError(f"release state dict: no vidprobe key for {key!r}")


def from_release_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a ``ProbeModelPA`` state dict (zxhuang1698/VidFM3D) onto :class:`Probe` keys and shapes.

    Every release key maps to exactly one of ours (two keys landing on the same one raise). Token tensors
    drop the release's leading batch axis (``[1, 2, n, D]`` -> ``[2, n, D]``, ``[1, 1, 9]`` -> ``[9]``).
    Load the result with ``load_state_dict(..., strict=True)`` into a probe built in ``compat: reference``
    mode with the same sizes (``tests/test_parity_probe.py``).
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        ours = release_key(k)
        if ours in out:
            raise KeyError(f"release state dict: {k!r} maps to {ours!r}, which another key already took")
        if ours in ("camera_token", "register_tokens"):
            v = v.reshape(v.shape[1:])
        elif ours == "camera_head.empty_pose":
            v = v.reshape(-1)
        out[ours] = v
    return out
