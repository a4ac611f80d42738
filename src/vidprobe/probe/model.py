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

The blocks, DPT heads and camera head are :mod:`vidprobe.nn`'s; the heads
carry VGGT's parameter names, which the release's ``ProbeModelPA`` shares, so
:func:`from_release_state_dict` renames only the trunk's keys. State dicts of
probes saved before the heads took those names load too
(:func:`upgrade_legacy_keys`, applied by ``load_state_dict``).

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

from vidprobe.nn.camera_head import CameraHead
from vidprobe.nn.dpt import DPTHead
from vidprobe.probe.config import ProbeConfig
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
        self.rope = RoPE2D(c.head_dim, c.rope_base) if c.rope else None  # no parameters; shared by the blocks

        def block() -> Block:
            return Block(c.width, c.num_heads, c.mlp_ratio, qk_norm=c.qk_norm, init_values=c.layerscale, rope=self.rope)

        self.frame_blocks = nn.ModuleList([block() for _ in range(c.depth)])
        self.global_blocks = nn.ModuleList([block() for _ in range(c.depth)])
        dpt_kw = dict(
            features=c.dpt_features,
            out_channels=c.dpt_out_channels,
            last_hidden=c.dpt_last_hidden,
            conf_activation="expp1",
            pos_embed="float32" if c.dpt_pos_embed else None,
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
                init_values=c.layerscale,
                qk_norm=c.camera_qk_norm,
                iters=c.camera_iters,
            )
            if "camera" in c.active_heads
            else None
        )
        self.set_grad_checkpointing(c.grad_checkpointing)
        self._register_load_state_dict_pre_hook(_upgrade_legacy_hook, with_module=True)

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
        pos_f = pos_g = None  # RoPE positions of a frame's tokens / of a sample's S frames
        if self.rope is not None:
            pos_f = grid_positions(h, w, self.num_special, device=features.device)
            pos_g = pos_f.repeat(S, 1)
        outputs = []
        ck = self._ckpt()
        for fblk, gblk in zip(self.frame_blocks, self.global_blocks):
            t = tokens.reshape(B * S, P, c.width)
            t = checkpoint(fblk, t, pos_f, use_reentrant=False) if ck else fblk(t, pos_f)
            f_out = t.reshape(B, S, P, c.width)
            t = t.reshape(B, S * P, c.width)
            t = checkpoint(gblk, t, pos_g, use_reentrant=False) if ck else gblk(t, pos_g)
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


# release key (regex) -> ours: the heads share the release's (VGGT's) names; every key matches at most one rule
_RELEASE_RULES: tuple[tuple[str, str], ...] = (
    (r"backbone\.input_proj\.0\.(weight|bias)", r"input_norm.\1"),
    (r"backbone\.input_proj\.1\.(weight|bias)", r"input_proj.\1"),
    (r"backbone\.camera_token", "camera_token"),
    (r"backbone\.register_token", "register_tokens"),
    (r"backbone\.(frame|global)_blocks\.(\d+)\.(.+)", r"\1_blocks.\2.\3"),
    (r"(camera_head|point_head|depth_head)\.(.+)", r"\1.\2"),
)


def release_key(key: str) -> str:
    """The :class:`Probe` key of a key of the release's ``ProbeModelPA`` state dict (KeyError if none)."""
    for pat, repl in _RELEASE_RULES:
        if re.fullmatch(pat, key):
            return re.sub(pat, repl, key)
    raise KeyError(f"release state dict: no vidprobe key for {key!r}")


def from_release_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a ``ProbeModelPA`` state dict (zxhuang1698/VidFM3D) onto :class:`Probe` keys and shapes.

    Every release key maps to exactly one of ours (two keys landing on the same one raise). Token tensors
    drop the release's leading batch axis (``[1, 2, n, D]`` -> ``[2, n, D]``).
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
        out[ours] = v
    return out


# key of a probe saved before the heads took VGGT's names (regex) -> today's key; ``n`` = the 0-based level ``i`` + 1
_LEGACY_RULES: tuple[tuple[str, str], ...] = (
    (r"(?P<h>point|depth)_head\.resize\.(?P<k>\d)\.(?P<p>weight|bias)", "{h}_head.resize_layers.{k}.{p}"),
    (r"(?P<h>point|depth)_head\.layer_rn\.(?P<i>\d)\.weight", "{h}_head.scratch.layer{n}_rn.weight"),
    (r"(?P<h>point|depth)_head\.fusion\.(?P<i>\d)\.res(?P<j>[12])\.(?P<c>conv[12])\.(?P<p>weight|bias)",
     "{h}_head.scratch.refinenet{n}.resConfUnit{j}.{c}.{p}"),
    (r"(?P<h>point|depth)_head\.fusion\.(?P<i>\d)\.out_conv\.(?P<p>weight|bias)",
     "{h}_head.scratch.refinenet{n}.out_conv.{p}"),
    (r"(?P<h>point|depth)_head\.out_conv1\.(?P<p>weight|bias)", "{h}_head.scratch.output_conv1.{p}"),
    (r"(?P<h>point|depth)_head\.out_conv2\.(?P<p>weight|bias)", "{h}_head.scratch.output_conv2.0.{p}"),
    (r"(?P<h>point|depth)_head\.out_conv3\.(?P<p>weight|bias)", "{h}_head.scratch.output_conv2.2.{p}"),
    (r"camera_head\.modulation\.1\.(?P<p>weight|bias)", "camera_head.poseLN_modulation.1.{p}"),
    (r"camera_head\.empty_pose", "camera_head.empty_pose_tokens"),
)


def upgrade_legacy_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of a probe saved before the heads took VGGT's names, under today's keys (others unchanged).

    ``camera_head.empty_pose [9]`` becomes ``camera_head.empty_pose_tokens [1, 1, 9]``.
    """
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        for pat, fmt in _LEGACY_RULES:
            m = re.fullmatch(pat, k)
            if m:
                g = m.groupdict()
                if "i" in g:
                    g["n"] = int(g["i"]) + 1
                k = fmt.format(**g)
                if k == "camera_head.empty_pose_tokens":
                    v = v.reshape(1, 1, -1)
                break
        out[k] = v
    return out


def _upgrade_legacy_hook(module, state_dict, prefix, *_args) -> None:
    """``load_state_dict`` pre-hook of :class:`Probe`: legacy keys renamed in place (:func:`upgrade_legacy_keys`)."""
    keys = [k for k in state_dict if k.startswith(prefix)]
    local = {k[len(prefix):]: state_dict[k] for k in keys}
    new = upgrade_legacy_keys(local)
    if new.keys() == local.keys():
        return
    for k in keys:
        del state_dict[k]
    state_dict.update({prefix + k: v for k, v in new.items()})
