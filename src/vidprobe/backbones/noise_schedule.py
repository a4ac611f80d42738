"""Timesteps and noise of the diffusion backbones: which scheduler step an index or tau selects, the mix the
scheduler's own forward process applies there, and the seeded noise streams.

A timestep is a **scheduler index** (``int``, e.g. the reference's 749) or **tau** (``float`` in [0, 1], larger =
more noise), ``tau = 1 - i / N`` with ``N = 1000`` steps (``set_timesteps(1000)``, as the reference release); see
:mod:`vidprobe.backbones.diffusion` for the noise level each family's scheduler applies at an index. Noise is drawn
on the CPU from a ``torch.Generator`` seeded by ``noise_seed(seed, clip, index)``; other random draws of a clip use
the streams ``>= 1000`` below, so they never collide with a timestep's noise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

NUM_INFERENCE_STEPS = 1000


@dataclass(frozen=True)
class TimestepChoice:
    """One requested timestep, resolved against a scheduler (see :mod:`vidprobe.backbones.diffusion`)."""

    requested: int | float
    index: int  # position in scheduler.timesteps after set_timesteps(N)
    tau: float  # 1 - index / N (the paper's label; larger = more noise)
    model_t: float  # the timestep value the denoiser receives
    alpha: float  # x_t = alpha * x_0 + sigma * noise
    sigma: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def index_of(timestep: int | float, num_steps: int = NUM_INFERENCE_STEPS) -> int:
    """Scheduler index of a requested timestep: ints are indices, floats are tau in [0, 1]."""
    if isinstance(timestep, bool) or timestep is None:
        raise ValueError(f"timestep must be a scheduler index (int) or tau in [0,1] (float), got {timestep!r}")
    if isinstance(timestep, float):
        if not 0.0 <= timestep <= 1.0:
            raise ValueError(f"tau must lie in [0, 1], got {timestep}")
        return min(num_steps - 1, max(0, int(round((1.0 - timestep) * num_steps))))
    i = int(timestep)
    if not 0 <= i < num_steps:
        raise ValueError(f"scheduler index must lie in [0, {num_steps}), got {i}")
    return i


def tau_of_index(index: int, num_steps: int = NUM_INFERENCE_STEPS) -> float:
    return round(1.0 - index / num_steps, 6)


def prepared_scheduler(scheduler: Any, num_steps: int = NUM_INFERENCE_STEPS) -> Any:
    """``scheduler.set_timesteps(num_steps)`` on CPU (the reference's setting); returns it."""
    scheduler.set_timesteps(num_steps, device="cpu")
    return scheduler


def noise_latents(scheduler: Any, x0: torch.Tensor, noise: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
    """The scheduler's own forward process at ``model_t``: ``add_noise`` (DDIM, UniPC) or ``scale_noise`` (flow Euler)."""
    t = model_t.reshape(1).to(x0.device)
    if hasattr(scheduler, "add_noise"):
        return scheduler.add_noise(x0, noise, t)
    return scheduler.scale_noise(x0, t, noise)


def resolve_timestep(scheduler: Any, timestep: int | float, num_steps: int = NUM_INFERENCE_STEPS) -> TimestepChoice:
    """Index, tau, model timestep and the (alpha, sigma) mix the scheduler applies there."""
    i = index_of(timestep, num_steps)
    ts = scheduler.timesteps
    if len(ts) != num_steps:
        raise RuntimeError(f"scheduler has {len(ts)} timesteps; call prepared_scheduler(s, {num_steps}) first")
    t = ts[i]
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    # probe the scheduler's own mix: x0=1, noise=0 -> alpha; x0=0, noise=1 -> sigma
    alpha = float(noise_latents(scheduler, one.float(), zero.float(), t).double())
    sigma = float(noise_latents(scheduler, zero.float(), one.float(), t).double())
    return TimestepChoice(
        requested=timestep, index=i, tau=tau_of_index(i, num_steps), model_t=float(t), alpha=alpha, sigma=sigma
    )


def noise_seed(seed: int, clip: int, index: int) -> int:
    """Seed of the noise for (clip k, scheduler index): fixed, distinct per pair."""
    return (int(seed) * 1_000_003 + int(clip) * 10_007 + int(index)) % (2**63 - 1)


#: noise streams of a clip other than the timesteps' (indices < 1000): never collide with them
CONDITION_STREAM = 1000  # posterior sample of a condition latent (first-frame image)
RECON_STREAM = 1001  # Aether's reconstruction: initial latents and the DPM steps' noise
RECON_INPUT_STREAM = 1002  # Aether's reconstruction: posterior sample of its video condition


def make_generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


def make_noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=g, dtype=torch.float32)
