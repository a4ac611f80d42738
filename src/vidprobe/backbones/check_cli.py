"""`vidprobe check-backbone NAME`: a short full denoising loop, one decoded frame saved.

The command of :mod:`vidprobe.backbones.check` (the test clip and the PNG writer live there): the clip is
encoded, noised to tau <= 0.5 and denoised in a few steps with the adapter's own scaling, conditioning and
empty-prompt embedding (:func:`vidprobe.backbones.diffusion.denoise_check`). ``--tiny`` runs the same code on
a tiny random model.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer()


@app.command("check-backbone")
def check_backbone(
    name: str = typer.Argument(..., help="a diffusion backbone name (see `vidprobe backbones`)"),
    tiny: bool = typer.Option(False, help="tiny random model (no weights; checks the code path only)"),
    steps: int = typer.Option(4, help="denoising steps"),
    out: Path = typer.Option(Path("check_frame.png"), help="PNG to write: input frame | decoded frame"),
    model_id: str = typer.Option(None, help="hub id or local folder (default: the registered one)"),
    frames: int = typer.Option(None, help="frames of the test clip (default: one clip of the reference layout)"),
    device: str = typer.Option(None, help="cpu, cuda, cuda:1 (default: cuda if available)"),
    offload: bool = typer.Option(False, help="keep the VAE on the CPU between uses"),
    start_tau: float = typer.Option(0.5, help="start the loop at this noise label"),
) -> None:
    """Run a short denoising loop with a diffusion backbone and save a decoded frame next to the input.

    Examples (the first checks the code path on a tiny random model, the second the real weights):
      vidprobe check-backbone wan2.1-t2v-1.3b --tiny --out check_tiny.png
      vidprobe check-backbone wan2.1-t2v-14b --device cuda
    """
    import torch

    from vidprobe.backbones import registry
    from vidprobe.backbones.check import save_png, pattern_video
    from vidprobe.backbones.diffusion import DiffusionBackbone, denoise_check

    reg = registry()
    if name not in reg:
        raise typer.BadParameter(f"unknown backbone {name!r}; known: {', '.join(sorted(reg))}")
    kw = dict(tiny=tiny, device=device, offload=offload)
    if model_id:
        kw["model_id"] = model_id
    bb = reg[name][1](**kw)
    if not isinstance(bb, DiffusionBackbone):
        raise typer.BadParameter(f"{name} is not a diffusion backbone")
    T = frames or (9 if tiny else 49)
    video = pattern_video(T, bb.input_hw)
    decoded = denoise_check(bb, video, steps=steps, start_tau=start_tau)
    ref, rec = video[0], decoded[0]
    mse = float(((ref - rec) ** 2).mean())
    psnr = 10 * torch.log10(torch.tensor(1.0 / max(mse, 1e-10))).item()
    save_png(out, torch.cat([ref, rec], dim=2))
    typer.echo(f"{name}: {steps} steps from tau<={start_tau}, frame 0 PSNR {psnr:.1f} dB -> {out}")
