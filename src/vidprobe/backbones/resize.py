"""Frame resizing with a named kernel, so each model can be fed as its own release feeds it.

``resize_video(video [T,3,H,W] in [0,1], (h, w), kernel) -> [T,3,h,w]`` in float32.

Kernels:

* ``bilinear`` (default): ``torch.nn.functional.interpolate`` bilinear with
  antialiasing, ``align_corners=False`` (float, no quantisation).
* ``bilinear-noaa``: the same without antialiasing (what plain
  ``F.interpolate`` / torchvision tensor resizing with ``antialias=False`` does).
* ``bicubic``: torch bicubic with antialiasing, clamped to [0, 1].
* ``pil-lanczos``, ``pil-bicubic``, ``pil-bilinear``: each frame is quantised to
  8-bit RGB (``round(255 x)``; lossless for frames read from 8-bit PNG/JPEG),
  resized with ``PIL.Image.resize`` and that resample filter, and read back as
  ``uint8 / 255``: the result of resizing the decoded image files with PIL, as
  the diffusers video processor (Lanczos) and PIL-based loaders do.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_KERNELS = ("bilinear", "bilinear-noaa", "bicubic", "pil-lanczos", "pil-bicubic", "pil-bilinear")


def check_kernel(kernel: str, who: str = "resize") -> str:
    if kernel not in RESIZE_KERNELS:
        raise ValueError(f"{who}: unknown resize kernel {kernel!r}; choose from {', '.join(RESIZE_KERNELS)}")
    return kernel


def _pil_filter(kernel: str):
    from PIL import Image

    return {"pil-lanczos": Image.Resampling.LANCZOS, "pil-bicubic": Image.Resampling.BICUBIC,
            "pil-bilinear": Image.Resampling.BILINEAR}[kernel]


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """``[T,3,H,W]`` float in [0,1] -> ``[T,H,W,3]`` uint8 (``round(255 x)``)."""
    x = (video.detach().to("cpu", torch.float32).clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def resize_video(video: torch.Tensor, hw: tuple[int, int], kernel: str = "bilinear") -> torch.Tensor:
    """Resize ``video [T,3,H,W]`` to ``hw = (h, w)`` with ``kernel``; float32 on the input's device.

    Identity (no quantisation either) when the size already matches.
    """
    check_kernel(kernel)
    h, w = int(hw[0]), int(hw[1])
    if tuple(video.shape[-2:]) == (h, w):
        return video
    if kernel == "bilinear":
        return F.interpolate(video.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    if kernel == "bilinear-noaa":
        return F.interpolate(video.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    if kernel == "bicubic":
        out = F.interpolate(video.float(), size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        return out.clamp(0, 1)
    from PIL import Image

    flt = _pil_filter(kernel)
    frames = [np.asarray(Image.fromarray(f, mode="RGB").resize((w, h), resample=flt)) for f in to_uint8_frames(video)]
    out = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255)
    return out.to(video.device)


__all__ = ["RESIZE_KERNELS", "check_kernel", "resize_video", "to_uint8_frames"]
