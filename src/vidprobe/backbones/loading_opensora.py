"""Loading Open-Sora 2.0 from the official files: the MMDiT and HunyuanVideo VAE checkpoints (strict, official
names) and the empty prompt through T5-XXL and CLIP-L (see :mod:`vidprobe.backbones.opensora`)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vidprobe.backbones.common import require_diffusers
from vidprobe.backbones.transformer_opensora import MMDiTConfig, OpenSoraMMDiT

CHECKPOINT_FILE = "Open_Sora_v2.safetensors"
VAE_FILE = "hunyuan_vae.safetensors"
T5_SUBFOLDER = "google/t5-v1_1-xxl"
CLIP_SUBFOLDER = "openai/clip-vit-large-patch14"
T5_MAX_LENGTH = 512
CLIP_MAX_LENGTH = 77


def _resolve_file(model_id: str, filename: str, revision: str | None) -> str:
    p = Path(model_id)
    if p.is_file():
        return str(p)
    if p.is_dir():
        f = p / filename
        if not f.is_file():
            raise FileNotFoundError(f"{p}: file {filename!r} not found")
        return str(f)
    from huggingface_hub import hf_hub_download

    return hf_hub_download(model_id, filename, revision=revision)


def load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    sd = load_file(path)
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def load_official(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Strict load with the official names; a mismatch raises naming the file and the offending keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    bad = sorted(k for k in set(own) & set(state_dict) if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or bad:
        raise ValueError(
            f"{source}: checkpoint does not match {type(model).__name__}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} ({len(unexpected)}), "
            f"shape mismatch {bad[:5]} ({len(bad)})"
        )
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model


def load_transformer(model_id: str, revision: str | None, dtype: torch.dtype, filename: str = CHECKPOINT_FILE,
                     config: MMDiTConfig | None = None):
    """The MMDiT from ``Open_Sora_v2.safetensors`` (``config``: default the 11B model), strict, in ``dtype``."""
    path = _resolve_file(model_id, filename, revision)
    with torch.device("meta"):
        model = OpenSoraMMDiT(config or MMDiTConfig())
    sd = {k: v.to(dtype) for k, v in load_state_dict_file(path).items()}
    return load_official(model, sd, path)


def load_vae(model_id: str, revision: str | None, filename: str = VAE_FILE, config: dict | None = None):
    """HunyuanVideo VAE: the official ``hunyuan_vae.safetensors`` (original names = diffusers names) or a diffusers folder.

    ``config``: ``AutoencoderKLHunyuanVideo`` arguments (default: the class defaults, which are HunyuanVideo's).
    """
    d = require_diffusers()
    p = Path(model_id)
    if p.is_dir() and (p / "vae" / "config.json").is_file():
        return d.AutoencoderKLHunyuanVideo.from_pretrained(str(p), subfolder="vae", torch_dtype=torch.float32)
    path = _resolve_file(model_id, filename, revision)
    vae = d.AutoencoderKLHunyuanVideo(**(config or {}))
    sd = {k: v.float() for k, v in load_state_dict_file(path).items()}
    return load_official(vae, sd, path)


def _text_source(model_id: str, subfolder: str, revision: str | None) -> tuple[str, dict]:
    """Where a text encoder lives: ``model_id/<subfolder>`` (the Open-Sora-v2 download layout) or the
    standalone hub repo of the same name (``google/t5-v1_1-xxl``, ``openai/clip-vit-large-patch14``)."""
    p = Path(model_id)
    if p.is_dir():
        if (p / subfolder / "config.json").is_file():
            return str(p / subfolder), {}
        return subfolder, {}
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download(model_id, f"{subfolder}/config.json", revision=revision)
        return model_id, {"subfolder": subfolder, "revision": revision}
    except Exception:  # noqa: BLE001 - not in that repo: use the standalone one
        return subfolder, {}


def _encode_empty(tokenizer: str, encoder: str, subfolder: str, max_length: int, output: str, model_id: str,
                  revision: str | None, device, dtype) -> torch.Tensor:
    """The empty prompt padded to ``max_length`` tokens, no attention mask, through the transformers classes
    ``tokenizer`` / ``encoder`` of :func:`_text_source`'s repo; the ``output`` field in float32 on the CPU."""
    import transformers

    repo, kw = _text_source(model_id, subfolder, revision)
    tok = getattr(transformers, tokenizer).from_pretrained(repo, **kw)
    enc = getattr(transformers, encoder).from_pretrained(repo, dtype=dtype, **kw).to(device)
    ids = tok([""], truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = getattr(enc(input_ids=ids.to(device), attention_mask=None), output).float().cpu()
    del enc
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def compute_empty_t5(model_id: str, revision: str | None, device, dtype) -> torch.Tensor:
    """T5-XXL ``last_hidden_state`` of the empty prompt padded to 512 tokens, no attention mask.

    These are the settings of the release's ``HFEmbedder`` (read from its code; the parity fixture feeds fixed
    text embeddings, so this function is not compared with it). The release runs colossalai's fused T5 in bf16.
    """
    return _encode_empty("AutoTokenizer", "T5EncoderModel", T5_SUBFOLDER, T5_MAX_LENGTH, "last_hidden_state",
                         model_id, revision, device, dtype)


def compute_empty_clip(model_id: str, revision: str | None, device, dtype) -> torch.Tensor:
    """CLIP-L ``pooler_output`` of the empty prompt (77 tokens), as ``[1, 1, 768]``."""
    out = _encode_empty("CLIPTokenizer", "CLIPTextModel", CLIP_SUBFOLDER, CLIP_MAX_LENGTH, "pooler_output",
                        model_id, revision, device, dtype)
    return out[:, None]
