"""Bytes per video and (layer, timestep) of the paper's models under each feature codec (README, "Scaling up").

Feature grids ``[N, h, w, C]`` are computed, not typed in: the input size and frame count come from each model's
``configs/paper/<model>_co3d.yaml`` (its grid entry's ``height``, ``width``, ``num_frames``), the channels and
patch sizes from the architectures (:mod:`vidprobe.backbones.fullsize`, ``vjepa.VARIANTS``, Open-Sora's
``MMDiTConfig``), and the clip layouts from the adapters' own helpers (``interleaved_clips``, ``vae4x_length``,
``round_up``); the VAEs of WAN2.1, CogVideoX and Open-Sora 2.0 (HunyuanVideo's) compress 8x in space and 4x in time
(+1 first frame). Bytes are those of the file's tensors (:func:`vidprobe.features.codec.encoded_nbytes`: features,
quantiser parameters, frame index; the JSON header adds under 1 KiB); a PCA basis (``C x (K + 1)`` float32 per key)
is shared by every video of the store and listed once. ``tests/test_fullsize_meta.py`` checks the same grids by
running the adapters at full size on the meta device.

    python tools/storage_table.py            # the Markdown table
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CODECS = ("int8", "fp8", "pca:256", "pca:256+int8", "pca:64+int8")
MODELS = ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "cogvideox-5b-i2v", "opensora2", "vjepa-vith16-384", "dinov2-large")
VAE_SPACE = 8


def paper_input(name: str) -> tuple[int, int, int]:
    """``(height, width, frames)`` of the backbone entry of ``configs/paper/<name>_co3d.yaml``."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "paper" / f"{name}_co3d.yaml").read_text())
    entry = next(b for b in cfg["grid"]["backbones"] if b["name"] == name)
    return int(entry["kwargs"]["height"]), int(entry["kwargs"]["width"]), int(entry["num_frames"])


def feature_grid(name: str) -> tuple[int, int, int, int]:
    """``(N, h, w, C)`` of one video's feature file at the paper config."""
    from vidprobe.backbones import fullsize as fs
    from vidprobe.backbones.common import interleaved_clips, round_up
    from vidprobe.backbones.diffusion import vae4x_length

    H, W, T = paper_input(name)
    if name.startswith("wan2.1"):
        tr = fs.fullsize(name, "transformer")
        p = tr["patch_size"][-1]
        return (vae4x_length(T) - 1) // 4 + 1, H // VAE_SPACE // p, W // VAE_SPACE // p, \
            tr["num_attention_heads"] * tr["attention_head_dim"]
    if name == "cogvideox-5b-i2v":
        tr = fs.fullsize(name, "transformer")
        clips = interleaved_clips(T, 2)  # the 5B-I2V layout: 2 interleaved clips sharing frame 0
        per = (vae4x_length(max(len(c) for c in clips)) - 1) // 4 + 1
        p = tr["patch_size"]
        c = tr["num_attention_heads"] * tr["attention_head_dim"]
        return len(clips) * per, H // VAE_SPACE // p, W // VAE_SPACE // p, c
    if name == "opensora2":
        from vidprobe.backbones.transformer_opensora import MMDiTConfig

        cfg = MMDiTConfig()
        p = cfg.patch_size
        return (vae4x_length(T) - 1) // 4 + 1, H // VAE_SPACE // p, W // VAE_SPACE // p, cfg.hidden_size
    if name.startswith("vjepa-"):
        from vidprobe.backbones.vjepa import REFERENCE_CLIPS, VARIANTS

        arch = VARIANTS[name[len("vjepa-"):]]
        clips = interleaved_clips(T, REFERENCE_CLIPS)
        per = round_up(max(len(c) for c in clips), 2) // 2  # tubelet 2
        return len(clips) * per, H // 16, W // 16, arch["embed_dim"]
    if name == "dinov2-large":
        cfg = fs.fullsize(name, "config")
        return T, H // cfg["patch_size"], W // cfg["patch_size"], cfg["hidden_size"]
    raise KeyError(name)


def rows(codecs=CODECS) -> list[dict]:
    """One row per model: its grid, bytes per codec, and each PCA basis's bytes."""
    from vidprobe.features.codec import basis_nbytes, encoded_nbytes, parse_codec

    out = []
    for name in MODELS:
        shape = feature_grid(name)
        frames = paper_input(name)[2]
        r = {"model": name, "grid": shape, "frames": frames, "fp16": encoded_nbytes(shape, None, "fp16", frames)}
        for c in codecs:
            r[c] = encoded_nbytes(shape, parse_codec(c), "fp16", frames)
            r[f"basis {c}"] = basis_nbytes(shape[-1], parse_codec(c))
        out.append(r)
    return out


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}" if n >= 2**20 else f"{n / 2**20:.2f}"


def markdown(codecs=CODECS) -> str:
    head = ["model (paper config)", "grid N x h x w x C", "fp16 MiB", *[f"{c} MiB (x)" for c in codecs]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows(codecs):
        cells = [r["model"], " x ".join(map(str, r["grid"])), _mib(r["fp16"])]
        cells += [f"{_mib(r[c])} ({r['fp16'] / r[c]:.1f}x)" for c in codecs]
        lines.append("| " + " | ".join(cells) + " |")
    sizes: dict[int, list[int]] = {}
    for r in rows(codecs):
        for c in codecs:
            if r[f"basis {c}"]:
                sizes.setdefault(parse_k(c), []).append(r[f"basis {c}"])
    note = "; ".join(f"K={k}: {_mib(min(v))}-{_mib(max(v))} MiB" for k, v in sorted(sizes.items()))
    return ("\n".join(lines) + "\n\nPer video and (layer, timestep): the file's tensor bytes (x = fewer bytes than "
            f"fp16). Once per (layer, timestep) and store, the PCA basis (4 C (K + 1) bytes): {note}.")


def parse_k(codec: str) -> int:
    from vidprobe.features.codec import parse_codec

    return parse_codec(codec).pca


if __name__ == "__main__":
    print(markdown())
