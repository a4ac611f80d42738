"""Shared pieces of the backbone adapters.

* video checks, resizing to the model's input (a multiple of the patch size)
  and normalisation;
* frame layouts: which feature map serves each input frame
  (:func:`per_frame_index`, :func:`vae4x_index`, :func:`chunked_clips`,
  :func:`interleaved_clips` / :func:`interleaved_frame_index`);
* token sequence -> ``[N, h, w, C]`` grids;
* layer resolution (1-based block outputs, ``-1`` = the model's final output);
* dtype / device handling, :func:`require_transformers` / :func:`require_diffusers`
  and :func:`load_or_random` (hub weights or a seeded random init of the same
  class); :func:`start_extract`, the checks every extract begins with.

Layer convention used by every adapter: layer ``k`` (1..L) is the output of
the k-th transformer block, *before* any final norm (what Hugging Face calls
``hidden_states[k]``). Layer ``-1`` ("last") is the model's own final output,
i.e. the last block followed by the final LayerNorm when the model has one
(``last_hidden_state``; DINOv2's ``x_norm_patchtokens``). The reference reads
DINOv2 and Fast3R this way; V-JEPA it reads at layer ``L`` (its release returns
the last block before the norm; tests/test_parity_vjepa.py). ``L`` and ``-1``
therefore differ for models with a final norm, and the
feature key keeps the number the caller asked for.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from vidprobe.backbones.base import MissingExtraError
from vidprobe.backbones.resize import RESIZE_KERNELS, check_kernel, resize_video  # noqa: F401 (re-exported)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

LAST = -1


# ---------------------------------------------------------------- input checks
def check_video(video: torch.Tensor, who: str = "backbone") -> torch.Tensor:
    """Validate ``video [T,3,H,W]`` float in [0,1]; raise ValueError naming the field."""
    if not isinstance(video, torch.Tensor):
        raise ValueError(f"{who}: field 'video': expected a torch.Tensor [T,3,H,W], got {type(video).__name__}")
    if video.dim() != 4 or video.shape[1] != 3:
        raise ValueError(f"{who}: field 'video': expected shape [T,3,H,W], got {tuple(video.shape)}")
    if video.shape[0] < 1:
        raise ValueError(f"{who}: field 'video': no frames")
    if not torch.is_floating_point(video):
        raise ValueError(f"{who}: field 'video': expected a float tensor in [0,1], got {video.dtype}")
    if video.numel() and (float(video.min()) < -1e-3 or float(video.max()) > 1 + 1e-3):
        raise ValueError(
            f"{who}: field 'video': values must lie in [0,1], got [{float(video.min()):.3g}, {float(video.max()):.3g}]"
        )
    return video


def check_timesteps(timesteps: Sequence[int | None], who: str) -> None:
    ts = list(timesteps)
    if ts != [None]:
        raise ValueError(f"{who}: this model has no diffusion timestep; pass timesteps=(None,), got {ts}")


def start_extract(bb: Any, video: torch.Tensor, layers: Sequence[int], timesteps: Sequence[int | None],
                  num_layers: int | None = None) -> list[tuple[int, int]]:
    """The checks every extract without a diffusion time starts with: the video, ``timesteps == (None,)``,
    and ``layers`` resolved against ``num_layers`` (default ``bb.num_layers``); errors name ``bb.spec.name``."""
    who = bb.spec.name
    check_video(video, who)
    check_timesteps(timesteps, who)
    return resolve_layers(layers, bb.num_layers if num_layers is None else num_layers, who)


def resolve_layers(layers: Sequence[int], num_layers: int, who: str) -> list[tuple[int, int]]:
    """``[(requested, block)]``: block is 1-based; ``-1`` maps to ``num_layers`` (final output)."""
    if not layers:
        raise ValueError(f"{who}: no layers requested")
    out = []
    for x in layers:
        x = int(x)
        if x == LAST:
            out.append((x, num_layers))
        elif 1 <= x <= num_layers:
            out.append((x, x))
        else:
            raise ValueError(f"{who}: layer {x} out of range: blocks are 1..{num_layers} (or -1 for the final output)")
    return list(dict.fromkeys(out))


# ------------------------------------------------------------- resize/normalise
def snap_hw(hw: tuple[int, int], multiple: int) -> tuple[int, int]:
    """Round (H, W) to the nearest multiples of ``multiple`` (at least one multiple)."""
    return tuple(max(multiple, int(round(v / multiple)) * multiple) for v in hw)  # type: ignore[return-value]


def normalize(video: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=video.dtype, device=video.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=video.dtype, device=video.device).view(1, -1, 1, 1)
    return (video - m) / s


def prepare_frames(
    video: torch.Tensor,
    hw: tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    kernel: str = "bilinear",
) -> torch.Tensor:
    """Resize (in float32, with ``kernel``: see :mod:`vidprobe.backbones.resize`) to ``hw``, normalise,
    move to device/dtype: ``[T,3,h,w]``."""
    x = video.to(device=device, dtype=torch.float32)
    x = normalize(resize_video(x, hw, kernel), mean, std)
    return x.to(dtype)


class ImageNetEncoder:
    """Mixin of the hooked encoder adapters fed ImageNet-normalised frames (DINOv2, V-JEPA, V-JEPA 2, VideoMAE).

    The adapter sets ``blocks``, ``input_hw``, ``device``, ``dtype`` (and ``resize``, default ``bilinear``).
    """

    resize: str = "bilinear"

    @property
    def num_layers(self) -> int:
        return len(self.blocks)  # type: ignore[attr-defined]

    def preprocess(self, video: torch.Tensor) -> torch.Tensor:
        """``[T,3,H,W]`` in [0,1] -> normalised frames ``[T,3,h,w]`` at ``input_hw`` (``resize`` kernel), on the
        model's device and dtype."""
        return prepare_frames(video, self.input_hw, IMAGENET_MEAN, IMAGENET_STD, self.device,  # type: ignore[attr-defined]
                              self.dtype, kernel=self.resize)  # type: ignore[attr-defined]


# ------------------------------------------------------------------ layouts
def per_frame_index(T: int) -> torch.Tensor:
    """Per-frame models: frame t -> map t."""
    return torch.arange(T, dtype=torch.long)


def vae4x_index(T: int) -> torch.Tensor:
    """4x temporal VAEs (WAN, CogVideoX, HunyuanVideo): frame 0 -> 0, frame t -> floor((t-1)/4)+1."""
    t = torch.arange(T, dtype=torch.long)
    return torch.where(t == 0, torch.zeros_like(t), torch.div(t - 1, 4, rounding_mode="floor") + 1)


def tubelet_index(T: int, tubelet: int) -> torch.Tensor:
    """Tubelet models: frame t -> floor(t / tubelet)."""
    return torch.div(torch.arange(T, dtype=torch.long), tubelet, rounding_mode="floor")


def round_up(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def interleaved_clips(T: int, num_clips: int) -> list[list[int]]:
    """Split frames ``0..T-1`` into interleaved clips that all start with frame 0.

    Rule: with ``n = min(num_clips, max(1, T-1))`` clips, clip ``k`` (0-based)
    is ``[0, k+1, k+1+n, k+1+2n, ...]`` (every frame < T). Frame 0 is in every
    clip; every other frame ``t >= 1`` is in exactly one clip, ``k = (t-1) % n``,
    at position ``p = (t-1)//n + 1``. The reference's V-JEPA setting (76
    frames, 5 clips) gives five 16-frame clips; CogVideoX (97 frames, 2 clips)
    gives two 49-frame clips. Clip lengths differ by at most one when ``T-1``
    is not a multiple of ``n``.
    """
    if T < 1:
        raise ValueError("interleaved_clips: need at least one frame")
    if num_clips < 1:
        raise ValueError(f"interleaved_clips: num_clips must be >= 1, got {num_clips}")
    n = min(num_clips, max(1, T - 1))
    return [[0] + list(range(k + 1, T, n)) for k in range(n)]


def interleaved_position(t: int, num_clips: int, T: int) -> tuple[int, int]:
    """(clip k, position p within clip k) that serves frame ``t`` (frame 0 -> clip 0, position 0)."""
    if not 0 <= t < T:
        raise ValueError(f"frame {t} outside [0,{T})")
    n = min(num_clips, max(1, T - 1))
    if t == 0:
        return 0, 0
    return (t - 1) % n, (t - 1) // n + 1


def pad_clip(frames: list[int], length: int) -> list[int]:
    """Pad a clip's frame list to ``length`` by repeating its last frame."""
    if len(frames) > length:
        raise ValueError(f"pad_clip: clip of {len(frames)} frames is longer than {length}")
    return frames + [frames[-1]] * (length - len(frames))


def interleaved_frame_index(
    T: int,
    num_clips: int,
    position_to_map: Callable[[int], torch.Tensor],
    maps_per_clip: int,
) -> torch.Tensor:
    """``frame_index [T]`` for interleaved clips whose maps are concatenated clip after clip.

    ``position_to_map(L)`` gives, for a clip of ``L`` (padded) frames, the map
    index within the clip of each position (V-JEPA: ``tubelet_index(L, 2)``;
    CogVideoX: ``vae4x_index(L)``); clip ``k``'s maps occupy
    ``k*maps_per_clip ... (k+1)*maps_per_clip - 1``.
    """
    clips = interleaved_clips(T, num_clips)
    L = max(len(c) for c in clips)
    pos_map = position_to_map(L)
    idx = torch.empty(T, dtype=torch.long)
    for t in range(T):
        k, p = interleaved_position(t, num_clips, T)
        idx[t] = k * maps_per_clip + int(pos_map[p])
    return idx


def chunked_clips(T: int, clip_len: int) -> list[list[int]]:
    """Consecutive clips of ``clip_len`` frames; the last one is padded by repeating its last frame."""
    if clip_len < 1:
        raise ValueError(f"chunked_clips: clip_len must be >= 1, got {clip_len}")
    clips = [list(range(s, min(s + clip_len, T))) for s in range(0, T, clip_len)]
    return [pad_clip(c, clip_len) for c in clips]


def drop_unused(maps: torch.Tensor, frame_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep only the maps some frame uses (e.g. drop maps made only of padding frames); re-index."""
    used = torch.unique(frame_index)
    if used.numel() == maps.shape[0]:
        return maps, frame_index
    remap = torch.full((maps.shape[0],), -1, dtype=torch.long)
    remap[used] = torch.arange(used.numel())
    return maps[used.to(maps.device)], remap[frame_index]


def tokens_to_grid(tokens: torch.Tensor, t: int, h: int, w: int) -> torch.Tensor:
    """``[B, t*h*w, C]`` (time-major, then rows, then columns) -> ``[B*t, h, w, C]``."""
    B, N, C = tokens.shape
    if N != t * h * w:
        raise ValueError(f"tokens_to_grid: {N} tokens do not form a {t}x{h}x{w} grid")
    return tokens.reshape(B * t, h, w, C)


# ------------------------------------------------------------- dtype / device
_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None -> bf16 on CUDA, fp32 elsewhere; strings 'fp32'/'fp16'/'bf16' or a torch dtype."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().replace("torch.", "")
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of fp32, fp16, bf16")
    return _DTYPES[key]


def require_transformers():
    """Import transformers or raise MissingExtraError naming the 'hf' extra."""
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingExtraError("transformers", "hf") from e
    return transformers


def require_diffusers():
    """Import diffusers or raise MissingExtraError naming the 'hf' extra."""
    try:
        import diffusers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingExtraError("diffusers", "hf") from e
    return diffusers


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block under ``torch.manual_seed(seed)`` without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def load_or_random(
    cls: Any,
    config: Any,
    model_id: str | None,
    revision: str | None,
    random_init: bool,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int = 0,
    **from_pretrained_kwargs,
):
    """A Hugging Face model: ``cls.from_pretrained(model_id, revision=...)`` or ``cls(config)`` seeded.

    ``config`` is required for ``random_init`` (a full-size config written in
    the adapter, so no download is needed, or a tiny one for tests); with
    pretrained weights a given ``config`` replaces the hub's.
    The model comes back in eval mode with gradients off.
    """
    if random_init:
        if config is None:
            raise ValueError(f"{getattr(cls, '__name__', cls)}: random init needs a config")
        with seeded(seed):
            model = cls(config)
    else:
        if not model_id:
            raise ValueError(f"{getattr(cls, '__name__', cls)}: no model_id (hub id or local path) to load")
        kw = dict(from_pretrained_kwargs)
        if config is not None:
            kw["config"] = config
        model = cls.from_pretrained(model_id, revision=revision, dtype=dtype, **kw)
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    return model


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------- hooks
def run_tapped(
    blocks: Sequence[torch.nn.Module],
    resolved: Sequence[tuple[int, int]],
    forward: Callable[[], Any],
    final: Callable[[torch.Tensor], torch.Tensor] | None = None,
    take: Callable[[Any], torch.Tensor] | None = None,
) -> dict[int, torch.Tensor]:
    """One forward pass with hooks on the needed blocks, stopped after the deepest one.

    ``resolved`` comes from :func:`resolve_layers`; returns ``{requested: tokens}``
    where the ``-1`` entry goes through ``final`` (the model's final norm).
    """
    from vidprobe.backbones.hooks import BlockTap

    needed = sorted({b for _, b in resolved})
    with BlockTap(blocks, needed, take=take) as tap:
        tap.run(forward)
    missing = [b for b in needed if b not in tap.outputs]
    if missing:
        raise RuntimeError(f"the forward pass never reached block(s) {missing}")
    out = {}
    for req, b in resolved:
        t = tap.outputs[b]
        if req == LAST and final is not None:
            t = final(t)
        out[req] = t
    return out


def both_or_neither(height: int | None, width: int | None, who: str) -> tuple[int, int] | None:
    if (height is None) != (width is None):
        raise ValueError(f"{who}: give both height and width, or neither")
    if height is None:
        return None
    if height < 1 or width < 1:
        raise ValueError(f"{who}: height/width must be positive, got {height}x{width}")
    return int(height), int(width)
