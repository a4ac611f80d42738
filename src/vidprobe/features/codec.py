"""Feature codecs: smaller feature files whose loss is known, decoded transparently by the reader.

A codec spec is one of ``pca:K``, ``int8``, ``fp8`` or ``pca:K+int8`` / ``pca:K+fp8`` (PCA first, then the
quantiser); ``none`` is the plain store. The encoded tensor keeps the file's ``[N,h,w,C']`` layout (``C' = K``
after PCA), so the reader's per-map byte ranges still apply and decoding a subset of maps equals decoding all of
them and slicing:

* ``pca:K``: ``y = (x - mean) @ W`` with ``W [C,K]`` the top-K principal directions of a channel sample of the
  first videos of each (layer, timestep) key (the fitting sample; its video ids go into the manifest). The
  covariance of the sample is accumulated in float64 and diagonalised with ``torch.linalg.eigh`` (its
  eigenvectors are the right singular vectors of the centred sample); each direction's sign is fixed so its
  largest entry is positive. ``y`` is stored in the store's dtype unless a quantiser follows. The basis lives in
  the store: ``<root>/codec/<spec>/<key dir>.safetensors`` (``mean [C]``, ``components [C,K]``, float32).
* ``int8``: per file and channel, ``offset = (max + min) / 2`` and ``scale = (max - min) / 254``;
  ``q = round((x - offset) / scale)`` in ``[-127, 127]``; error ``<= scale / 2`` per value.
* ``fp8``: per file and channel, ``scale = max |x| / 448``; ``q = float8_e4m3fn(x / scale)`` (3 mantissa bits:
  relative error ``<= 2^-4``, absolute ``<= scale * 2^-10`` near zero). Needs ``torch.float8_e4m3fn``.

Quantiser parameters are float32 tensors next to ``features`` in each file (``int8_scale``, ``int8_offset``,
``fp8_scale``); the file's metadata names its codec (``codec``). Encoding starts from the values cast to the
store's dtype, and decoding returns that dtype, so ``extract --codec`` and ``extract`` then ``compress`` write
the same numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from vidprobe.features.layout import DTYPES, FeatureStoreError, dtype_name, key_dirname

__all__ = [
    "CODEC_DIR",
    "FORMS",
    "Basis",
    "Codec",
    "CodecError",
    "Encoder",
    "basis_nbytes",
    "basis_path",
    "codec_record",
    "decode",
    "encode",
    "encoded_nbytes",
    "fit_pca",
    "load_basis",
    "manifest_codecs",
    "parse_codec",
    "sample_vectors",
    "save_basis",
]

CODEC_DIR = "codec"
QUANTS = ("int8", "fp8")
FORMS = "pca:K, int8, fp8, pca:K+int8, pca:K+fp8 (or none)"
FP8_MAX = 448.0  # largest finite float8_e4m3fn
PARAMS = {"int8": ("int8_scale", "int8_offset"), "fp8": ("fp8_scale",)}
FIT_METHOD = ("float64 covariance of the channel sample, torch.linalg.eigh (= right singular vectors of the centred "
              "sample)")


class CodecError(FeatureStoreError):
    """A codec spec, basis or encoded file that cannot be used (the message names the spec or file)."""


@dataclass(frozen=True)
class Codec:
    """A parsed spec: ``pca`` components (None: no PCA) then ``quant`` (``int8``, ``fp8`` or None)."""

    pca: int | None = None
    quant: str | None = None

    @property
    def name(self) -> str:
        parts = ([f"pca:{self.pca}"] if self.pca else []) + ([self.quant] if self.quant else [])
        return "+".join(parts)

    @property
    def dirname(self) -> str:
        return self.name.replace(":", "-")

    def encoded_dtype(self, storage: str) -> torch.dtype:
        if self.quant == "int8":
            return torch.int8
        if self.quant == "fp8":
            return fp8_dtype()
        return DTYPES[dtype_name(storage)]

    def channels(self, c: int) -> int:
        return self.pca if self.pca else c


def fp8_dtype() -> torch.dtype:
    """``torch.float8_e4m3fn``, or a CodecError naming the torch version that lacks it."""
    dt = getattr(torch, "float8_e4m3fn", None)
    if dt is None:
        raise CodecError(f"codec fp8 needs torch.float8_e4m3fn, which torch {torch.__version__} lacks; use int8")
    try:
        torch.zeros(1).to(dt).float()
    except (RuntimeError, TypeError) as e:
        raise CodecError(f"codec fp8: torch {torch.__version__} cannot cast to float8_e4m3fn here ({e}); use int8") from None
    return dt


def parse_codec(text: str | None) -> Codec | None:
    """``"pca:64+int8"`` -> ``Codec(64, "int8")``; ``None``, ``""`` or ``"none"`` -> None (no codec)."""
    if text is None or str(text).strip().lower() in ("", "none"):
        return None
    parts = [p.strip().lower() for p in str(text).split("+")]
    pca, quant = None, None
    for i, p in enumerate(parts):
        if p.startswith("pca:") and i == 0:
            try:
                pca = int(p[4:])
            except ValueError:
                pca = 0
            if pca < 1:
                raise CodecError(f"codec {text!r}: pca:K needs an integer K >= 1, got {p[4:]!r}")
        elif p in QUANTS and quant is None and i == len(parts) - 1:
            quant = p
        else:
            raise CodecError(f"unknown codec {text!r} (part {p!r}); use one of {FORMS}")
    codec = Codec(pca, quant)
    if quant == "fp8":
        fp8_dtype()
    return codec


# ------------------------------------------------------------------ PCA basis
@dataclass
class Basis:
    """A PCA basis: ``mean [C]`` and ``components [C,K]`` (float32); ``explained``: variance fraction kept."""

    mean: torch.Tensor
    components: torch.Tensor
    explained: float = float("nan")


def basis_path(root: str | Path, codec: Codec, layer: int, timestep: int | None) -> Path:
    return Path(root) / CODEC_DIR / codec.dirname / f"{key_dirname(layer, timestep)}.safetensors"


def save_basis(path: Path, basis: Basis, meta: dict[str, Any]) -> None:
    from safetensors.torch import save

    from vidprobe.atomic import atomic_write_bytes

    md = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    md["explained_variance"] = json.dumps(basis.explained)
    tensors = {"mean": basis.mean.float().contiguous(), "components": basis.components.float().contiguous()}
    data = save(tensors, metadata=md)
    atomic_write_bytes(path, data, fsync=True)


def load_basis(path: Path, codec: Codec) -> Basis:
    from safetensors import safe_open

    if not path.is_file():
        raise CodecError(f"{path}: missing PCA basis of codec {codec.name!r} (the store's manifest names it)")
    try:
        with safe_open(str(path), framework="pt") as f:
            mean, comp = f.get_tensor("mean"), f.get_tensor("components")
            explained = json.loads((f.metadata() or {}).get("explained_variance", "NaN"))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own types
        raise CodecError(f"{path}: unreadable PCA basis ({type(e).__name__}: {e})") from None
    if comp.dim() != 2 or mean.shape != (comp.shape[0],) or comp.shape[1] != codec.pca:
        raise CodecError(f"{path}: PCA basis has components {list(comp.shape)} and mean {list(mean.shape)}; "
                         f"codec {codec.name!r} needs [C, {codec.pca}] and [C]")
    return Basis(mean.float(), comp.float(), float(explained))


def sample_vectors(maps: torch.Tensor, n: int, seed: int, video: str) -> torch.Tensor:
    """Up to ``n`` channel vectors ``[n, C]`` drawn without replacement from ``maps [N,h,w,C]`` (seeded per video)."""
    from vidprobe.data.sampling import stable_seed

    flat = maps.reshape(-1, maps.shape[-1])
    if flat.shape[0] <= n:
        return flat.clone()
    g = torch.Generator().manual_seed(stable_seed("pca-sample", seed, video) % (2**63))
    return flat[torch.randperm(flat.shape[0], generator=g)[:n]]


def fit_pca(samples: Iterable[torch.Tensor], k: int, chunk: int = 8192) -> Basis:
    """Mean and top-``k`` principal directions of the stacked channel vectors ``samples`` (see the module docs)."""
    n, s, gram, shift = 0, None, None, None
    for x in samples:
        for part in x.reshape(-1, x.shape[-1]).split(chunk):
            d = part.double()
            if shift is None:  # shifted sums keep E[x^2] - E[x]^2 from cancelling when |mean| >> std
                shift = d.mean(0)
                s = torch.zeros_like(shift)
                gram = torch.zeros(d.shape[1], d.shape[1], dtype=torch.float64)
            d = d - shift
            s += d.sum(0)
            gram += d.T @ d
            n += d.shape[0]
    if not n:
        raise CodecError("pca: no channel vectors to fit on")
    c = gram.shape[0]
    if k > c:
        raise CodecError(f"codec pca:{k}: K must be <= the {c} feature channels")
    mu = s / n
    cov = gram / n - torch.outer(mu, mu)
    evals, evecs = torch.linalg.eigh((cov + cov.T) / 2)
    comp = evecs[:, -k:].flip(-1)
    big = comp.abs().argmax(0)
    sign = torch.sign(comp[big, torch.arange(k)])
    comp = comp * torch.where(sign == 0, torch.ones_like(sign), sign)
    total = float(evals.clamp_min(0).sum())
    kept = float(evals[-k:].clamp_min(0).sum())
    return Basis((shift + mu).float(), comp.float(), kept / total if total > 0 else 1.0)


# ------------------------------------------------------------------ encode / decode
def _quantise(y: torch.Tensor, quant: str) -> dict[str, torch.Tensor]:
    flat = y.reshape(-1, y.shape[-1])
    if quant == "int8":
        lo, hi = flat.amin(0), flat.amax(0)
        offset = (hi + lo) / 2
        scale = (hi - lo) / 254
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = ((y - offset) / scale).round_().clamp_(-127, 127).to(torch.int8)
        return {"features": q, "int8_scale": scale, "int8_offset": offset}
    amax = flat.abs().amax(0)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (y / scale).clamp_(-FP8_MAX, FP8_MAX).to(fp8_dtype())
    return {"features": q, "fp8_scale": scale}


def encode(x: torch.Tensor, codec: Codec, basis: Basis | None = None) -> dict[str, torch.Tensor]:
    """``x [N,h,w,C]`` (the store's dtype) -> the file's tensors: ``features [N,h,w,C']`` plus quantiser params."""
    storage = x.dtype
    y = x.float()
    if codec.pca:
        if basis is None:
            raise CodecError(f"codec {codec.name!r}: no PCA basis given")
        if basis.mean.numel() != x.shape[-1]:
            raise CodecError(f"codec {codec.name!r}: the basis was fitted on {basis.mean.numel()} channels, "
                             f"these features have {x.shape[-1]}")
        y = (y - basis.mean) @ basis.components
    if codec.quant:
        return {k: v.contiguous() for k, v in _quantise(y, codec.quant).items()}
    out = y.to(storage)
    if not torch.isfinite(out).all():
        raise CodecError(f"codec {codec.name!r}: PCA coefficients overflow {dtype_name(storage)} (max |y| = "
                         f"{float(y.abs().max()):.4g}); add +int8 or store fp32")
    return {"features": out.contiguous()}


def decode(enc: torch.Tensor, params: dict[str, torch.Tensor], codec: Codec, basis: Basis | None,
           dtype: torch.dtype) -> torch.Tensor:
    """The inverse of :func:`encode` for any subset of maps ``enc [n,h,w,C']``; returns ``dtype`` (the store's)."""
    y = enc.float()
    if codec.quant == "int8":
        y = y * params["int8_scale"] + params["int8_offset"]
    elif codec.quant == "fp8":
        y = y * params["fp8_scale"]
    if codec.pca:
        if basis is None:
            raise CodecError(f"codec {codec.name!r}: no PCA basis to decode with")
        y = y @ basis.components.T + basis.mean
    return y.to(dtype)


class Encoder:
    """``encoder(x) -> tensors`` for :func:`vidprobe.features.file_format.write_feature_file`; ``name``: the spec."""

    def __init__(self, codec: Codec, basis: Basis | None = None):
        self.codec, self.basis, self.name = codec, basis, codec.name

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return encode(x, self.codec, self.basis)


# ------------------------------------------------------------------ manifest
def codec_record(codec: Codec | None, storage: str, fit: dict | None = None) -> dict | None:
    """The manifest's ``codec`` field (None for a plain store)."""
    if codec is None:
        return None
    params = f"{CODEC_DIR}/{codec.dirname}" if codec.pca else None
    return {"spec": codec.name, "storage_dtype": dtype_name(storage), "params_dir": params, "fit": fit}


def manifest_codecs(manifest: dict, path: Path) -> tuple[Codec | None, dict[str | None, Codec | None]]:
    """``(the store's codec, {spec name: codec} a file may carry)``; during an in-place ``compress`` both the
    old and the new codec are allowed. Raises CodecError naming the field for an unknown codec."""
    rec = manifest.get("codec")
    if rec is not None and (not isinstance(rec, dict) or "spec" not in rec):
        raise CodecError(f"{path}: field 'codec' must be a mapping with a 'spec', got {rec!r}")
    try:
        codec = parse_codec(rec["spec"]) if rec else None
    except CodecError as e:
        raise CodecError(f"{path}: field 'codec.spec': {e}") from None
    allowed = {codec.name if codec else None: codec}
    conv = manifest.get("codec_conversion")
    if conv:
        try:
            old = parse_codec(conv.get("from"))
        except CodecError as e:
            raise CodecError(f"{path}: field 'codec_conversion.from': {e}") from None
        allowed[old.name if old else None] = old
    return codec, allowed


def encoded_nbytes(shape: tuple[int, int, int, int], codec: Codec | None, storage: str = "fp16",
                   frames: int | None = None) -> int:
    """Bytes of one encoded feature file's tensors (features, quantiser params, frame index; no header)."""
    n, h, w, c = shape
    item = DTYPES[dtype_name(storage)].itemsize
    fi = 8 * (frames if frames is not None else n)
    if codec is None:
        return n * h * w * c * item + fi
    k = codec.channels(c)
    per = 1 if codec.quant else item
    params = 4 * k * len(PARAMS.get(codec.quant or "", ()))
    return n * h * w * k * per + params + fi


def basis_nbytes(c: int, codec: Codec | None) -> int:
    """Bytes of one (layer, timestep) key's PCA basis (shared by every video of the key)."""
    return 0 if codec is None or not codec.pca else 4 * c * (codec.pca + 1)
