"""Process group and device of a training run (``torchrun``: each rank takes its slice of every global batch)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["Dist", "barrier", "init_distributed", "resolve_device"]


@dataclass
class Dist:
    """This process's place in the run: ``rank`` of ``world`` processes (``local_rank`` on its machine)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the process group when ``WORLD_SIZE`` > 1 (NCCL on GPU, gloo on CPU); a lone process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def barrier(d: Dist) -> None:
    """Wait for every rank (no-op for a lone process)."""
    if d.world > 1:
        import torch.distributed as tdist

        tdist.barrier()


def resolve_device(name: str) -> torch.device:
    """``auto``: this rank's GPU (``LOCAL_RANK``) when there is one, else the CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(name)
