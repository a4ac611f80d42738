"""Shared logic of the diffusion video backbones (WAN2.1, CogVideoX, Aether, Open-Sora 2.0).

One extraction, for every family::

    frames --resize, [0,1] -> [-1,1]--> clips (one clip, or interleaved clips sharing frame 0)
    per clip:   VAE encode ONCE (+ the image condition of image-to-video models, also once)
    per timestep:  x_t = scheduler.add_noise(x_0, noise(seed, clip, index), t)   (the model's own scheduler)
                   ONE denoiser forward with the cached empty-prompt embedding,
                   hooked blocks read, forward stopped after the deepest requested block
    tokens -> [N_latent_frames, h, w, C] per (layer, timestep) + frame_index [T]

This module holds the adapter (:class:`DiffusionBackbone`) and the denoising check; the timestep and noise
arithmetic is in :mod:`vidprobe.backbones.noise_schedule` and the empty-prompt cache in
:mod:`vidprobe.backbones.text_cache` (both importable from here too), the build the families share in
:mod:`vidprobe.backbones.diffusion_build`.

Timesteps
---------
A timestep is given either as a **scheduler index** (``int``, e.g. the
reference's 749) or as **tau** (``float`` in [0, 1], larger = more noise).
Every family calls ``scheduler.set_timesteps(N)`` with ``N = 1000`` (what the
reference release does), so index ``i`` selects ``scheduler.timesteps[i]``
(descending: index 0 is the noisiest step, index 999 the cleanest). The two
forms are related by the paper's convention

    tau = 1 - i / N          (index 749 -> tau 0.251; tau 0.25 -> index round(N * 0.75) = 750)

which is also what :func:`vidprobe.features.store.tau_of` writes into the
store manifest. tau is a *label* of the schedule position, not the noise
level: the actual mix ``x_t = alpha * x_0 + sigma * noise`` at that index is
the scheduler's, obtained by running the scheduler's own ``add_noise`` (so any
quirk of it is reproduced, see below), and recorded next to it in
``FeatureSet.info["timesteps"]`` (``index``, ``tau``, ``model_t`` = the value
fed to the denoiser, ``alpha``, ``sigma``). For the reference settings
(proven against the release's own code path by
``tests/test_parity_diffusion.py``):

* WAN2.1 (UniPC, flow sigmas, ``flow_shift = 3.0``): ``sigma_i = 3 s_i / (1 + 2 s_i)``
  with the unshifted ``s_i`` of the diffusers release in use, which changed in
  diffusers 0.37 (see :mod:`vidprobe.backbones.wan`, setting ``flow_schedule``):
  diffusers <= 0.36 ``s_i = (1 - 1/N)(1 - i/N)``, index 749 -> timestep 500,
  ``sigma = 0.50100``; diffusers >= 0.37 ``s_i = 1 - i (1 - 1/N) / N``, index
  749 -> timestep 502, ``sigma = 0.50233``. Either way the features are read at
  about half noise although the paper calls the setting "tau = 0.25". UniPC
  stores integer timesteps and its ``add_noise`` looks the sigma up by
  timestep value, taking the *second* index when a value repeats (the
  high-noise end repeats many; with diffusers >= 0.37 index 249 is noised
  with sigma[250]).
* CogVideoX / Aether (CogVideoX DDIM or DPM, ``trailing`` spacing): ``model_t =
  N - 1 - i`` (index 749 -> t = 250), ``alpha = sqrt(abar_t)``,
  ``sigma = sqrt(1 - abar_t)`` with the scheduler's own (SNR-shifted,
  zero-terminal-SNR) ``alphas_cumprod``.
* Open-Sora 2.0: see :mod:`vidprobe.backbones.opensora`.

Noise is drawn on the CPU from ``torch.Generator`` seeded by
``noise_seed(seed, clip, index)``, so features are identical across runs and
devices for a fixed seed. Other random draws of a clip (a posterior sample
of a condition latent, Aether's reconstruction) use their own streams,
``noise_seed(seed, clip, stream)`` with ``stream >= 1000``, so they never
collide with a timestep's noise. (The release draws all of these unseeded.)

Numerics settings (all off by default; the paper configs set the release's)
-------------------------------------------------------------------------
* ``resize``: the kernel of :func:`vidprobe.backbones.resize.resize_video`
  (the release's pipelines use the diffusers video processor = ``pil-lanczos``).
* ``autocast``: run the VAE and the denoiser under ``torch.autocast(dtype)`` and
  noise the latents in the compute dtype (``scheduler.add_noise`` on
  compute-dtype tensors), as the release's CogVideoX/Aether scripts do; off:
  plain ``dtype`` weights, noising in float32.
* ``condition_latent``: ``mode`` (posterior mean) or ``sample`` (a seeded
  posterior sample, what the image-to-video pipelines' ``prepare_latents`` use)
  for the VAE latents of a *condition* (the first-frame image of I2V models,
  Aether's reconstruction input). The clean latents ``x_0`` are always the mean.

Layers
------
Layer ``k`` is the output of the k-th transformer block (1-based, as
everywhere in vidprobe). The reference release counts blocks from 0 (its
``layer20`` is ``blocks[20]``), so the reference's "block 20" is layer 21
here; the registered defaults use 21.

Text condition
--------------
The empty prompt's embedding is computed once per (model id, revision, text
encoder dtype: the ``variant`` key; the release encodes it with T5 in fp16 for
CogVideoX, fp32 for WAN and Aether) with the pipeline's own ``encode_prompt``
and cached as safetensors under
``$VIDPROBE_CACHE`` (default ``~/.cache/vidprobe``)``/text_embeds``; the text
encoder is loaded only when the cache misses and freed right after, so it
never sits in GPU memory during extraction. ``text_embeds=PATH`` passes a
precomputed file instead (a safetensors file with one tensor, or the key
``prompt_embeds``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.backbones.common import (
    check_kernel,
    check_video,
    drop_unused,
    resize_video,
    resolve_layers,
    run_tapped,
    tokens_to_grid,
)
from vidprobe.backbones.noise_schedule import (  # noqa: F401 (re-exported: the diffusion API)
    CONDITION_STREAM,
    NUM_INFERENCE_STEPS,
    RECON_INPUT_STREAM,
    RECON_STREAM,
    TimestepChoice,
    index_of,
    make_generator,
    make_noise,
    noise_latents,
    noise_seed,
    prepared_scheduler,
    resolve_timestep,
    tau_of_index,
)
from vidprobe.backbones.text_cache import (  # noqa: F401 (re-exported)
    cache_root,
    empty_prompt_embeds,
    load_text_embeds,
    save_tensor_atomic,
    text_cache_path,
)

CONDITION_LATENTS = ("mode", "sample")


# ------------------------------------------------------------------ core
@dataclass
class ClipLatents:
    """One clip after the VAE: ``latents`` in the layout the denoiser takes, plus its conditions."""

    latents: torch.Tensor  # scaled clean latents x_0
    grid: tuple[int, int, int]  # token grid (frames, rows, columns) of the denoiser
    cond: dict[str, Any]


class DiffusionBackbone:
    """Base adapter; a family implements the hooks marked ``family``.

    Components: ``transformer`` (with ``.blocks`` or ``.transformer_blocks``),
    ``vae``, ``scheduler`` (prepared with :func:`prepared_scheduler`),
    ``text_embeds`` ``[1, L, D]`` on the CPU.
    """

    #: family: pixel multiple the input size is snapped to (VAE x patch)
    size_multiple: int = 16

    def __init__(
        self,
        spec: BackboneSpec,
        transformer: torch.nn.Module,
        vae: torch.nn.Module,
        scheduler: Any,
        text_embeds: torch.Tensor,
        input_hw: tuple[int, int],
        device: torch.device,
        dtype: torch.dtype,
        vae_dtype: torch.dtype | None = None,
        seed: int = 0,
        offload: bool = False,
        model_id: str | None = None,
        revision: str | None = None,
        num_clips: int = 1,
        clip_frames: int | None = None,
        resize: str = "bilinear",
        autocast: bool = False,
        condition_latent: str = "mode",
    ):
        self.spec = spec
        self.transformer = transformer
        self.vae = vae
        self.scheduler = scheduler  # its timesteps are set at the end (set_schedule may read the settings below)
        self.text_embeds = text_embeds.detach().cpu()
        m = self.size_multiple
        h, w = input_hw
        if h % m or w % m:
            raise ValueError(f"{spec.name}: input size {h}x{w} must be a multiple of {m}")
        self.input_hw = (int(h), int(w))
        self.device, self.dtype = device, dtype
        self.vae_dtype = vae_dtype or dtype
        self.seed = int(seed)
        self.offload = bool(offload)
        self.model_id, self.revision = model_id, revision
        self.num_clips = int(num_clips)
        self.clip_frames = clip_frames
        self.resize = check_kernel(resize, f"{spec.name}: resize")
        self.autocast = bool(autocast)
        if condition_latent not in CONDITION_LATENTS:
            raise ValueError(f"{spec.name}: condition_latent must be one of {CONDITION_LATENTS}, got {condition_latent!r}")
        self.condition_latent = condition_latent
        self.current_clip = 0  # index of the clip being encoded (seeds its random streams)
        self.vae_calls = 0  # VAE encode calls (a test and a benchmark read it)
        self.forward_calls = 0
        # dtypes are set by the builders (from_pretrained(torch_dtype=...) keeps the modules a model
        # marks fp32 in fp32); here the parts only move
        self.transformer.to(device=device).eval().requires_grad_(False)
        self.vae.to(device="cpu" if offload else device).eval().requires_grad_(False)
        self.set_schedule(self.scheduler, NUM_INFERENCE_STEPS)

    # ---------------------------------------------------------------- family
    @property
    def blocks(self) -> Sequence[torch.nn.Module]:
        raise NotImplementedError

    def clips(self, T: int) -> list[list[int]]:
        """Frame indices of each clip fed to the VAE (family: one clip or interleaved clips)."""
        raise NotImplementedError

    def frame_index(self, T: int) -> torch.Tensor:
        raise NotImplementedError

    def encode_clip(self, frames: torch.Tensor) -> ClipLatents:
        """``frames [L,3,H,W]`` in [-1,1] (vae dtype, device) -> scaled latents + conditions (family)."""
        raise NotImplementedError

    def denoiser_forward(self, noisy: torch.Tensor, choice: TimestepChoice, cl: ClipLatents) -> Any:
        """One denoiser call on the noised latents (family)."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (as returned by ``encode_clip``) -> frames ``[L,3,H,W]`` in [0,1] (family)."""
        raise NotImplementedError

    def set_schedule(self, scheduler: Any, num_steps: int) -> Any:
        """``scheduler``'s timesteps for ``num_steps`` steps, as the family's pipeline sets them (default: the
        scheduler's own spacing, :func:`prepared_scheduler`; a family whose pipeline passes its own sigmas overrides)."""
        return prepared_scheduler(scheduler, num_steps)

    def blocks_for(self, choice: TimestepChoice) -> Sequence[torch.nn.Module]:
        """The blocks the denoiser runs at ``choice`` (default :attr:`blocks`; a two-expert model picks by timestep)."""
        return self.blocks

    # ---------------------------------------------------------------- shared
    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    @contextlib.contextmanager
    def vae_on_device(self):
        """With ``offload``, the VAE lives on the CPU and visits the GPU only while encoding."""
        if self.offload and self.device.type != "cpu":
            self.vae.to(self.device)
            try:
                yield self.vae
            finally:
                self.vae.to("cpu")
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        else:
            yield self.vae

    def amp(self):
        """``torch.autocast(dtype)`` when the ``autocast`` setting is on (and the dtype is a half type), else a no-op."""
        if self.autocast and self.dtype in (torch.float16, torch.bfloat16):
            return torch.autocast(device_type=self.device.type, dtype=self.dtype)
        return contextlib.nullcontext()

    def vae_latent_dist(self, x: torch.Tensor) -> Any:
        """``x [B,3,F,H,W]`` in [-1,1] -> the VAE's posterior (``DiagonalGaussianDistribution``); one encode call."""
        self.vae_calls += 1
        with self.vae_on_device() as vae, self.amp():
            out = vae.encode(x.to(device=self.device, dtype=self.vae_dtype))
        return out.latent_dist if hasattr(out, "latent_dist") else out[0]

    def vae_encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B,3,F,H,W]`` in [-1,1] -> the posterior mean (``argmax``; deterministic, as the reference)."""
        dist = self.vae_latent_dist(x)
        return dist.mode() if hasattr(dist, "mode") else dist.mean

    def condition_latent_of(self, dist: Any, stream: int = CONDITION_STREAM) -> torch.Tensor:
        """A condition's latent from its posterior: the mean, or a sample seeded by (seed, current clip, stream)."""
        if self.condition_latent == "mode":
            return dist.mode() if hasattr(dist, "mode") else dist.mean
        return dist.sample(generator=make_generator(noise_seed(self.seed, self.current_clip, stream)))

    def preprocess(self, video: torch.Tensor) -> torch.Tensor:
        """``[T,3,H,W]`` in [0,1] -> ``[T,3,h,w]`` in [-1,1] at the input size, resized with the ``resize`` kernel.

        With ``pil-lanczos`` this is what the diffusers ``VideoProcessor`` does to the
        decoded frames (PIL Lanczos to (h, w), /255, 2x-1; no crop): proven by
        ``tests/test_diffusion_backbones.py::test_pil_lanczos_preprocess_equals_diffusers_video_processor``.
        """
        x = resize_video(video.to(device=self.device, dtype=torch.float32), self.input_hw, self.resize)
        return (x * 2.0 - 1.0).clamp(-1.0, 1.0)

    def timestep_choices(self, timesteps: Sequence[int | float]) -> list[TimestepChoice]:
        ts = list(timesteps)
        if not ts or any(t is None for t in ts):
            raise ValueError(f"{self.spec.name}: diffusion models need timesteps (index int or tau float), got {ts}")
        return [resolve_timestep(self.scheduler, t) for t in ts]

    def noised(self, cl: ClipLatents, choice: TimestepChoice, clip_k: int) -> torch.Tensor:
        """``x_t`` of clip ``clip_k``: the scheduler's ``add_noise`` in float32 (``autocast``: in the compute dtype)."""
        noise = make_noise(cl.latents.shape, noise_seed(self.seed, clip_k, choice.index))
        work = self.dtype if self.autocast else torch.float32
        x0 = cl.latents.to(work)
        t = torch.tensor(choice.model_t, dtype=torch.float32)
        xt = noise_latents(self.scheduler, x0, noise.to(x0.device, work), t.to(self.scheduler.timesteps.dtype))
        return xt.to(self.dtype)

    def encode(self, video: torch.Tensor) -> list[ClipLatents]:
        """VAE latents (and conditions) of every clip of ``video``: one encode per clip."""
        frames = self.preprocess(video)
        out = []
        for k, c in enumerate(self.clips(video.shape[0])):
            self.current_clip = k
            out.append(self.encode_clip(frames[c]))
        return out

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(749,), clip=None) -> FeatureSet:
        who = self.spec.name
        check_video(video, who)
        resolved = resolve_layers(layers, self.num_layers, who)
        choices = self.timestep_choices(timesteps)
        T = video.shape[0]
        encoded = self.encode(video)  # VAE once per clip, shared by all timesteps and layers
        parts: dict[tuple[int, Any], list[torch.Tensor]] = {}
        for k, cl in enumerate(encoded):
            for choice in choices:
                noisy = self.noised(cl, choice, k)
                self.forward_calls += 1
                with self.amp():
                    toks = run_tapped(self.blocks_for(choice), resolved, lambda: self.denoiser_forward(noisy, choice, cl))
                for req, tok in toks.items():
                    parts.setdefault((req, choice.requested), []).append(tokens_to_grid(tok, *cl.grid).float().cpu())
        fi = self.frame_index(T)
        maps, idx = {}, fi
        for key, v in parts.items():
            maps[key], idx = drop_unused(torch.cat(v), fi)
        f, h, w = encoded[0].grid
        info = {
            "model_id": self.model_id,
            "revision": self.revision,
            "input_hw": self.input_hw,
            "grid": (h, w),
            "latent_frames_per_clip": f,
            "layout": self.spec.frame_layout,
            "clips": self.clips(T),
            "seed": self.seed,
            "timesteps": [c.as_dict() for c in choices],
            "scheduler": type(self.scheduler).__name__,
            "resize": self.resize,
            "autocast": self.autocast,
            "condition_latent": self.condition_latent,
        }
        return FeatureSet(maps=maps, frame_index=idx, info=info)


# ------------------------------------------------------------ sanity check
@torch.inference_mode()
def denoise_check(
    bb: DiffusionBackbone, video: torch.Tensor, steps: int = 4, start_tau: float = 0.5, seed: int = 0
) -> torch.Tensor:
    """A short full denoising loop on the first clip of ``video``; returns the decoded clip ``[L,3,H,W]`` in [0,1].

    The clip is encoded and scaled exactly as for extraction, noised to the
    first of ``steps`` evenly spaced scheduler steps whose noise label is
    <= ``start_tau`` (tau = t / num_train_timesteps), denoised with
    ``scheduler.step`` and the denoiser's full output (empty prompt, the
    image condition of I2V models), un-scaled and decoded. With real weights
    the result must look like the input: a wrong latent scaling or condition
    shows up as noise, colour casts or a washed-out frame.
    """
    import copy

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    check_video(video, bb.spec.name)
    cl = bb.encode(video)[0]
    sched = copy.deepcopy(bb.scheduler)
    bb.set_schedule(sched, steps)
    n_train = int(sched.config.num_train_timesteps)
    ts = [t for t in sched.timesteps if float(t) / n_train <= start_tau + 1e-6] or [sched.timesteps[-1]]
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(len(sched.timesteps) - len(ts))
    noise = make_noise(cl.latents.shape, seed)
    x = noise_latents(sched, cl.latents.float(), noise, ts[0].reshape(1)).to(bb.dtype)
    for t in ts:
        choice = TimestepChoice(requested=float(t), index=-1, tau=float(t) / n_train, model_t=float(t), alpha=float("nan"), sigma=float("nan"))
        out = bb.denoiser_forward(x, choice, cl)
        out = out[0] if isinstance(out, (tuple, list)) else out.sample
        x = sched.step(out.float(), t, x.float(), return_dict=False)[0].to(bb.dtype)
    return bb.decode(x)


def vae4x_length(n: int) -> int:
    """Smallest clip length >= n of the form 4k+1 (what a 4x causal video VAE needs)."""
    return 1 + 4 * max(0, -(-(n - 1) // 4))


def transformer_blocks(model: torch.nn.Module) -> Sequence[torch.nn.Module]:
    for name in ("blocks", "transformer_blocks", "single_blocks"):
        if hasattr(model, name):
            return getattr(model, name)
    raise AttributeError(f"{type(model).__name__} has no block list")


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast a freshly built (tiny/random) module only when its dtype differs."""
    p = next(module.parameters(), None)
    return module if p is None or p.dtype == dtype else module.to(dtype)
