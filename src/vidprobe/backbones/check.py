"""`vidprobe check-backbone NAME`: a short full denoising loop, one decoded frame saved.

For users with weights, before a long extraction: the clip is encoded,
noised to tau <= 0.5 and denoised in a few steps with the adapter's own
scaling, conditioning and empty-prompt embedding
(:func:`vidprobe.backbones.diffusion.denoise_check`). The saved PNG shows the
input frame (left) next to the decoded one (right); with correct settings they
look alike and the printed PSNR is well above 15 dB. ``--tiny`` runs the same
code on a tiny random model (the image is then noise; it only checks that the
command runs).
"""

from __future__ import annotations

from pathlib import Path

import torch


def pattern_video(num_frames: int, hw: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A smooth moving colour pattern ``[T,3,H,W]`` in [0,1] (no dataset needed)."""
    H, W = hw
    y = torch.linspace(0, 1, H).view(H, 1)
    x = torch.linspace(0, 1, W).view(1, W)
    frames = []
    for t in range(num_frames):
        s = t / max(1, num_frames - 1)
        r = 0.5 + 0.4 * torch.sin(6.28 * (x + 0.3 * s))
        g = 0.5 + 0.4 * torch.cos(6.28 * (y - 0.2 * s))
        b = 0.5 + 0.4 * torch.sin(6.28 * (x + y) * 0.5 + seed)
        frames.append(torch.stack([r.expand(H, W), g.expand(H, W), b.expand(H, W)]))
    return torch.stack(frames).clamp(0, 1)


def save_png(path: Path, img: torch.Tensor) -> None:
    from PIL import Image

    arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    from vidprobe.atomic import atomic_path

    with atomic_path(path, keep_suffix=True) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
