"""Store-to-store conversion: re-encode every feature file of a store with a codec (`vidprobe compress`).

``compress_store(src, "pca:64+int8", out=NEW)`` writes a new store with the source's settings, keys and
sources and the codec in its manifest; ``in_place=True`` converts the source itself. In both cases:

1. PCA codecs first fit a basis per (layer, timestep) key on the first ``fit_videos`` readable videos (sorted
   ids; up to ``max_vectors`` channel vectors in all, drawn per video with a seed) and write it atomically
   into the destination (``codec/<spec>/<key>.safetensors``); the manifest records the fitting sample.
   A basis already there is reused, so a rerun fits nothing again.
2. Every file is read through :class:`~vidprobe.features.store.FeatureStore` (decoded, if the source is
   itself encoded), encoded and written atomically (temp file + rename) with the source's metadata. A file
   that already carries the codec is skipped, so an interrupted run resumes; a file that cannot be read
   is skipped, named and counted (:attr:`CompressSummary.broken`).

The source is never changed without ``in_place``. With it, the manifest first names the new codec and marks
the conversion (``codec_conversion: {from, to}``, so readers accept files of either codec meanwhile); each
file is replaced only after its encoded version is complete on disk; when no file is left (none broken) the
mark and the old codec's basis are removed.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from vidprobe.features.codec import (
    CODEC_DIR,
    FIT_METHOD,
    Basis,
    Codec,
    CodecError,
    Encoder,
    basis_path,
    codec_record,
    fit_pca,
    load_basis,
    parse_codec,
    sample_vectors,
    save_basis,
)
from vidprobe.features.file_format import write_feature_file
from vidprobe.features.layout import FeatureStoreError, Key, key_dirname
from vidprobe.features.manifest import prepare_store, read_manifest, update_manifest
from vidprobe.features.store import FeatureStore

__all__ = ["CompressSummary", "compress_store", "store_bytes"]

#: metadata the writer sets itself (the rest of a source file's metadata is kept)
OWN_META = ("format", "shape", "dtype", "codec", "encoded_shape")


@dataclass
class CompressSummary:
    """What one conversion did."""

    codec: str
    src: Path
    dst: Path
    converted: int = 0
    already: int = 0
    broken: dict[str, str] = field(default_factory=dict)  # file -> reason
    bytes_in: int = 0  # source files converted by this run
    bytes_out: int = 0  # their encoded files
    seconds: float = 0.0
    fit: dict = field(default_factory=dict)

    def format(self) -> str:
        r = f" ({self.bytes_in / self.bytes_out:.2f}x smaller)" if self.bytes_out else ""
        lines = [f"compress {self.src} -> {self.dst} with {self.codec}: {self.converted} files converted, "
                 f"{self.already} already converted, {len(self.broken)} broken; {self.bytes_in:,} -> {self.bytes_out:,} "
                 f"bytes{r} in {self.seconds:.1f} s"]
        for key, ev in self.fit.get("explained_variance", {}).items():
            lines.append(f"  {key}: PCA keeps {ev:.4f} of the fitting sample's variance "
                         f"({len(self.fit['videos'][key])} videos, {self.fit['vectors'][key]} vectors)")
        lines += [f"  broken {p}: {why}" for p, why in sorted(self.broken.items())]
        return "\n".join(lines)


def store_bytes(root: str | Path) -> int:
    """Bytes of every file under a store directory (features, bases, manifest; lock files are empty)."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def _fit_key(src: FeatureStore, key: Key, codec: Codec, fit_videos: int, max_vectors: int, seed: int):
    """``(basis, fitting videos, vectors)`` of one key from its first ``fit_videos`` readable videos."""
    vids = src.videos(*key)
    per = math.ceil(max_vectors / max(1, min(fit_videos, len(vids))))
    chosen, samples = [], []
    for v in vids:
        if len(chosen) >= fit_videos:
            break
        try:
            maps, _ = src.maps(v, *key)
        except FeatureStoreError:
            continue  # counted as broken by the conversion
        samples.append(sample_vectors(maps, per, seed, v))
        chosen.append(v)
    if not chosen:
        raise CodecError(f"{src.root / key_dirname(*key)}: no readable video to fit {codec.name!r} on")
    return fit_pca(samples, codec.pca), chosen, sum(int(x.shape[0]) for x in samples)


def _bases(src: FeatureStore, dst: Path, codec: Codec, keys: list[Key], fit_videos: int, max_vectors: int,
           seed: int) -> tuple[dict[Key, Basis], dict]:
    """The basis of every key (fitted now, or the one already in ``dst``) and the manifest's fit record."""
    rec = (read_manifest(dst).get("codec") or {}) if (dst / "manifest.json").is_file() else {}
    old = rec.get("fit") if rec.get("spec") == codec.name else None  # a resumed run's record of this codec
    fit = {"method": FIT_METHOD, "fit_videos": fit_videos, "max_vectors": max_vectors, "seed": seed,
           "videos": {}, "vectors": {}, "explained_variance": {}}
    if isinstance(old, dict):
        for f in ("videos", "vectors", "explained_variance"):
            fit[f].update(old.get(f) or {})
    out = {}
    for key in keys:
        path, name = basis_path(dst, codec, *key), key_dirname(*key)
        if path.is_file():
            out[key] = load_basis(path, codec)
            continue
        basis, chosen, n = _fit_key(src, key, codec, fit_videos, max_vectors, seed)
        save_basis(path, basis, {"codec": codec.name, "key": name, "videos": chosen, "vectors": n, "seed": seed})
        fit["videos"][name], fit["vectors"][name], fit["explained_variance"][name] = chosen, n, basis.explained
        out[key] = basis
    return out, fit


def _check_request(src: FeatureStore, codec: Codec | None, out: Path | None, in_place: bool) -> Path:
    """The destination root, or a FeatureStoreError for a request that would mix codecs or touch the source."""
    name = codec.name if codec else None
    have = src.codec.name if src.codec else None
    conv = src.manifest.get("codec_conversion")
    if in_place:
        if out is not None:
            raise FeatureStoreError("give either an output store or in_place, not both")
        if conv and conv.get("to") != name:
            raise FeatureStoreError(f"{src.root}: an in-place conversion to {conv.get('to')!r} is unfinished; "
                                    "rerun it with that codec first")
        if have == name and not conv:
            raise FeatureStoreError(f"{src.root}: already encoded with {name or 'no codec'!r}; nothing to do")
        return src.root
    if out is None:
        raise FeatureStoreError("give an output store (--out NEW_STORE) or --in-place; the source is never changed otherwise")
    if conv:
        raise FeatureStoreError(f"{src.root}: an in-place conversion to {conv.get('to')!r} is unfinished; finish it first")
    if Path(out).resolve() == src.root.resolve():
        raise FeatureStoreError(f"--out {out} is the source store; use --in-place to convert it in place")
    return Path(out)


def compress_store(
    src: str | Path,
    codec: str | None,
    out: str | Path | None = None,
    in_place: bool = False,
    fit_videos: int = 16,
    max_vectors: int = 65536,
    seed: int = 0,
    progress: bool = True,
    note_source: bool = True,
) -> CompressSummary:
    """Encode every feature file of the store at ``src`` with ``codec`` (a spec, e.g. ``"pca:64+int8"``).

    Writes a new store at ``out`` or, with ``in_place``, converts ``src`` itself; resumable (see the module docs).
    ``note_source``: record ``src`` in the new store's manifest (``compressed_from``) and take its sources.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    spec = parse_codec(codec)
    if fit_videos < 1 or max_vectors < 1:
        raise CodecError(f"fit_videos and max_vectors must be >= 1, got {fit_videos} and {max_vectors}")
    source = FeatureStore(src)
    dst_root = _check_request(source, spec, None if out is None else Path(out), in_place)
    keys, storage = source.keys(), source.dtype_name
    conv = source.manifest.get("codec_conversion")  # a resumed in-place run: the files not yet converted
    old_codec = parse_codec(conv.get("from")) if conv else source.codec
    if not in_place:
        prepare_store(dst_root, source.settings, keys, codec=codec_record(spec, storage))
    if not in_place and note_source:
        update_manifest(dst_root, lambda m: m.update(sources=list(source.manifest.get("sources", [])),
                                                     compressed_from=str(source.root)))
    bases, fit = _bases(source, dst_root, spec, keys, fit_videos, max_vectors, seed) if spec and spec.pca else ({}, {})

    def mark(m: dict) -> None:
        m["codec"] = codec_record(spec, storage, fit or None)
        if in_place:
            m["codec_conversion"] = {"from": old_codec.name if old_codec else None, "to": spec.name if spec else None}
        if m["codec"] is None:
            m.pop("codec")

    update_manifest(dst_root, mark)
    reader = FeatureStore(source.root)  # in place: accepts the old and the new codec
    dst = reader if in_place else FeatureStore(dst_root)
    summary = CompressSummary(spec.name if spec else "none", source.root, dst_root, fit=fit)
    work = [(key, v) for key in keys for v in reader.videos(*key)]
    bar = tqdm(total=len(work), desc=f"compress {summary.codec}", unit="file", disable=not progress, dynamic_ncols=True)
    try:
        for key, v in work:
            _convert(reader, dst, key, v, spec, bases.get(key), summary)
            bar.update(1)
            bar.set_postfix(converted=summary.converted, already=summary.already, broken=len(summary.broken))
    finally:
        bar.close()
    if in_place and not summary.broken:
        update_manifest(dst_root, lambda m: m.pop("codec_conversion", None))
        if old_codec is not None and old_codec.pca:
            shutil.rmtree(dst_root / CODEC_DIR / old_codec.dirname, ignore_errors=True)
    summary.seconds = time.perf_counter() - t0
    return summary


def _convert(reader: FeatureStore, dst: FeatureStore, key: Key, video: str, codec: Codec | None, basis: Basis | None,
             summary: CompressSummary) -> None:
    """Encode one file unless its destination already carries the codec; a broken source is counted."""
    target = codec.name if codec else None
    try:
        if dst.has(video, *key) and (dst.header(video, *key).metadata.get("codec") or None) == target:
            summary.already += 1
            return
    except FeatureStoreError:
        pass  # an unreadable destination file is written again
    spath = reader.path(video, *key)
    try:
        meta = {k: v for k, v in reader.header(video, *key).metadata.items() if k not in OWN_META}
        maps, fi = reader.maps(video, *key)
        size_in = spath.stat().st_size
        written = write_feature_file(dst.path(video, *key), maps, fi, meta, reader.dtype_name,
                                     encoder=Encoder(codec, basis) if codec else None)
    except FeatureStoreError as e:
        summary.broken[str(spath)] = str(e)
        return
    summary.converted += 1
    summary.bytes_in += size_in
    summary.bytes_out += written
