"""Open-Sora 2.0's flow-matching schedule: the resolution-dependent time shift and the forward process.

See :mod:`vidprobe.backbones.opensora` ("Noise") for the formulas and the release's values they reproduce.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch

from vidprobe.backbones.noise_schedule import NUM_INFERENCE_STEPS

SIGMA_MIN = 1e-5
SCHEDULE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def shift_alpha(latent_frames: int, latent_h: int, latent_w: int) -> float:
    """The resolution-dependent shift: linear in ``h*w//4`` (256 -> 1, 4096 -> 3) times ``sqrt(frames)`` (float64)."""
    seq = (latent_w * latent_h) // 4
    m = (3.0 - 1.0) / (4096 - 256)
    b = 1.0 - m * 256
    return (m * seq + b) * math.sqrt(latent_frames)


def time_shift(alpha: float, t):
    """``alpha t / (1 + (alpha - 1) t)``; on a tensor every operation rounds in the tensor's dtype."""
    return alpha * t / (1 + (alpha - 1) * t)


def schedule_dtype_of(name: str, who: str = "opensora2") -> torch.dtype:
    if name not in SCHEDULE_DTYPES:
        raise ValueError(f"{who}: schedule_dtype must be one of {', '.join(SCHEDULE_DTYPES)}, got {name!r}")
    return SCHEDULE_DTYPES[name]


class OpenSoraFlowScheduler:
    """Open-Sora 2.0's flow-matching forward process behind the scheduler interface the diffusion core uses.

    After ``set_timesteps(N)``, ``timesteps[i] = 1000 * t_i`` (float64,
    descending, index 0 = pure noise) with ``t_i = shift(tau_i)``, ``tau_i = 1 -
    i/N``, both formed in ``dtype`` (``"fp32"`` or ``"bf16"``: every operation
    of the shift rounds there). ``scale_noise(x0, t, noise)`` is ``(1 - s) x0 +
    (1 - (1 - sigma_min)(1 - s)) noise`` with ``s = t/1000``, also evaluated in
    ``dtype`` (result in x0's dtype); ``step`` is the Euler update ``x + (s_next
    - s) v`` (``s_next`` = the next entry, 0 after the last). ``alpha`` (the
    shift) is set from the latent grid with :meth:`set_grid`.
    """

    def __init__(self, alpha: float = 1.0, sigma_min: float = SIGMA_MIN, num_train_timesteps: int = 1000,
                 dtype: str = "fp32"):
        self.alpha = float(alpha)
        self.sigma_min = float(sigma_min)
        self.dtype_name = dtype
        self.dtype = schedule_dtype_of(dtype)
        self.config = SimpleNamespace(num_train_timesteps=int(num_train_timesteps), sigma_min=float(sigma_min))
        self.num_steps = NUM_INFERENCE_STEPS
        self.set_timesteps(self.num_steps)

    def set_grid(self, latent_frames: int, latent_h: int, latent_w: int) -> float:
        self.alpha = shift_alpha(latent_frames, latent_h, latent_w)
        self.set_timesteps(self.num_steps)
        return self.alpha

    def model_time(self, tau: torch.Tensor) -> torch.Tensor:
        """``tau`` (any float dtype) -> the shifted time ``t`` in ``dtype``."""
        return time_shift(self.alpha, tau.to(self.dtype)).to(self.dtype)

    def set_timesteps(self, num_steps: int, device: Any = "cpu") -> None:
        self.num_steps = int(num_steps)
        tau = 1.0 - torch.arange(self.num_steps, dtype=torch.float64) / self.num_steps
        n = self.config.num_train_timesteps
        self.timesteps = (n * self.model_time(tau).double()).to(device)

    def scale_noise(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        s = (torch.as_tensor(t).double() / self.config.num_train_timesteps).reshape(-1).to(x0.device, self.dtype)
        s = s.view(-1, *([1] * (x0.dim() - 1))) if s.numel() > 1 else s.reshape(())
        t_rev = 1 - s
        xt = t_rev * x0.to(self.dtype) + (1 - (1 - self.sigma_min) * t_rev) * noise.to(x0.device, self.dtype)
        return xt.to(x0.dtype)

    def step(self, model_output, timestep, sample, return_dict: bool = False):
        ts = self.timesteps.to(torch.float64)
        i = int(torch.argmin((ts - float(timestep)).abs()))
        nxt = float(ts[i + 1]) if i + 1 < len(ts) else 0.0
        ds = (nxt - float(timestep)) / self.config.num_train_timesteps
        return (sample + ds * model_output,)
