"""Feature codecs (issue 14): error bounds, the PCA fit and its record, partial reads of encoded stores,
extract --codec vs extract + compress, resumable and atomic compress, unknown codecs."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from typer.testing import CliRunner

from vidprobe.features import codec as C
from vidprobe.features.compress import compress_store, store_bytes
from vidprobe.features.store import FeatureStore, FeatureStoreError

KEY = (1, None)
ORACLE = {"height": 16, "width": 28, "patch": 4}  # 4 x 7 grid, 14 channels


def _fp16(x):
    return x.to(torch.float16)


def _lowrank(r=3, c=24, n=(5, 6, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(*n, r, generator=g)
    a = torch.randn(r, c, generator=g)
    return _fp16(z @ a + 3 * torch.randn(c, generator=g))


def _roundtrip(x, spec, basis=None):
    codec = C.parse_codec(spec)
    enc = C.encode(x, codec, basis)
    params = {k: v for k, v in enc.items() if k != "features"}
    return enc, C.decode(enc["features"], params, codec, basis, x.dtype)


def test_int8_and_fp8_error_bounds_on_random_data():
    g = torch.Generator().manual_seed(1)
    x = _fp16(torch.randn(4, 5, 6, 16, generator=g) * torch.logspace(-2, 2, 16) + torch.linspace(-50, 50, 16))
    xf = x.float().reshape(-1, 16)
    enc, y = _roundtrip(x, "int8")
    assert enc["features"].dtype == torch.int8 and enc["features"].shape == x.shape and y.dtype == torch.float16
    step = (xf.amax(0) - xf.amin(0)) / 254
    err = (y.float() - x.float()).abs().reshape(-1, 16)
    assert (err <= step / 2 + xf.abs() * 2**-10 + 1e-6).all()  # half a step, plus the fp16 rounding of the output
    # really quantised where the int8 step is above fp16's own resolution: the bound is not vacuous
    assert (err.amax(0)[-6:] > step[-6:] / 8).all()
    enc, y = _roundtrip(x, "fp8")
    assert enc["features"].dtype == torch.float8_e4m3fn and enc["fp8_scale"].shape == (16,)
    err = (y.float() - x.float()).abs().reshape(-1, 16)
    scale = xf.abs().amax(0) / C.FP8_MAX
    assert (err <= torch.maximum(xf.abs() * 2**-4, scale * 2**-10) + xf.abs() * 2**-10 + 1e-6).all()
    assert float((err / xf.abs().clamp_min(1e-3)).max()) > 2**-7  # 3 mantissa bits, not 10


def test_pca_on_low_rank_data_is_near_lossless_and_fewer_components_are_not():
    x = _lowrank(r=3)
    basis = C.fit_pca([x.reshape(-1, 24)], 3)
    comp = basis.components
    assert comp.shape == (24, 3) and torch.allclose(comp.T @ comp, torch.eye(3), atol=1e-5)
    assert basis.explained == pytest.approx(1.0, abs=1e-5)
    enc, y = _roundtrip(x, "pca:3", basis)
    assert enc["features"].shape == (5, 6, 7, 3) and enc["features"].dtype == torch.float16
    span = float(x.float().abs().max())
    assert float((y.float() - x.float()).abs().max()) < 0.01 * span
    enc, y8 = _roundtrip(x, "pca:3+int8", basis)
    assert enc["features"].dtype == torch.int8 and float((y8.float() - x.float()).abs().max()) < 0.03 * span
    b2 = C.fit_pca([x.reshape(-1, 24)], 2)
    _, y2 = _roundtrip(x, "pca:2", b2)
    assert float((y2.float() - x.float()).abs().max()) > 0.05 * span
    assert b2.explained < 0.99


def test_pca_on_random_data_loses_the_dropped_variance():
    g = torch.Generator().manual_seed(2)
    x = _fp16(torch.randn(6, 8, 8, 12, generator=g))
    flat = x.float().reshape(-1, 12)
    errs = []
    for k in (2, 6, 12):
        b = C.fit_pca([flat], k)
        _, y = _roundtrip(x, f"pca:{k}", b)
        mse = float(((y.float() - x.float()) ** 2).sum(-1).mean())
        cov = torch.cov(flat.double().T, correction=0)
        ev = torch.linalg.eigvalsh(cov).flip(0)
        assert mse == pytest.approx(float(ev[k:].sum()), rel=0.02, abs=1e-3)  # PCA's residual, measured
        errs.append(mse)
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-4


def test_codec_specs_parse_and_refuse():
    assert C.parse_codec("pca:8+int8") == C.Codec(8, "int8") and C.parse_codec("none") is None
    assert C.parse_codec(" PCA:4 ").name == "pca:4" and C.parse_codec("fp8").name == "fp8"
    for bad in ("zstd", "int8+pca:4", "pca:0", "pca:x", "int8+fp8", "pca:2+pca:3"):
        with pytest.raises(FeatureStoreError, match="codec"):
            C.parse_codec(bad)


def test_fp8_without_torch_support_is_a_clear_error(monkeypatch):
    monkeypatch.delattr(torch, "float8_e4m3fn")
    with pytest.raises(C.CodecError, match="float8_e4m3fn.*use int8"):
        C.parse_codec("pca:4+fp8")


# ------------------------------------------------------------------ stores
@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    from vidprobe.data.synthetic import write_synthetic_dataset
    from vidprobe.features.extract import extract_dataset

    root = tmp_path_factory.mktemp("codecs")
    data = write_synthetic_dataset(root / "data", 4, num_frames=9, hw=(16, 28), seed=3, progress=False)
    extract_dataset("oracle", data, root / "plain", layers=[1], backbone_kwargs=ORACLE, progress=False)
    return root


def _copy(plain, tmp_path, name="src"):
    shutil.copytree(plain / "plain", tmp_path / name)
    return tmp_path / name


def test_pca_basis_is_fitted_recorded_and_decoded_to_the_store_dtype(plain, tmp_path):
    out = tmp_path / "pca"
    s = compress_store(plain / "plain", "pca:3", out=out, fit_videos=2, progress=False)
    assert s.converted == 4 and not s.broken and s.bytes_out < s.bytes_in
    src, dst = FeatureStore(plain / "plain"), FeatureStore(out)
    vids = src.videos(*KEY)
    m = json.loads((out / "manifest.json").read_text())
    rec = m["codec"]
    assert rec["spec"] == "pca:3" and rec["storage_dtype"] == "fp16" and rec["params_dir"] == "codec/pca-3"
    assert rec["fit"]["videos"] == {"L001_Tnone": vids[:2]} and rec["fit"]["vectors"]["L001_Tnone"] == 2 * 9 * 28
    assert 0.5 < rec["fit"]["explained_variance"]["L001_Tnone"] <= 1.0
    assert m["settings"] == src.settings and m["compressed_from"] == str(plain / "plain")
    basis = C.load_basis(out / "codec" / "pca-3" / "L001_Tnone.safetensors", C.Codec(3))
    # the basis is the PCA of exactly the recorded sample: refitting on those two videos gives it again
    again = C.fit_pca([src.maps(v, *KEY)[0] for v in vids[:2]], 3)
    assert torch.allclose(basis.components, again.components, atol=1e-4)
    assert dst.header(vids[0], *KEY).features.shape[-1] == 3 and dst.channels(*KEY) == 14
    assert dst.info()["keys"][0]["shape"] == [9, 4, 7, 14] and dst.info()["codec"]["spec"] == "pca:3"
    x = dst.read(vids[0], *KEY, dtype=None)
    assert x.dtype == torch.float16 and x.shape == (9, 4, 7, 14)


@pytest.mark.parametrize("spec", ["int8", "fp8", "pca:3", "pca:2+int8"])
def test_partial_frame_reads_of_an_encoded_store_equal_the_decoded_full_read(plain, tmp_path, spec):
    out = tmp_path / "enc"
    compress_store(plain / "plain", spec, out=out, fit_videos=2, progress=False)
    src = FeatureStore(plain / "plain")
    for backend in ("pread", "mmap"):
        st = FeatureStore(out, backend=backend)
        for v in st.videos(*KEY):
            full = st.read(v, *KEY)
            assert full.shape == src.read(v, *KEY).shape
            frames = [7, 2, 2, 5]
            before = st.bytes_read
            part = st.read(v, *KEY, frames)
            assert torch.equal(part, full[frames])
            size = st.path(v, *KEY).stat().st_size
            if backend == "pread":
                assert st.bytes_read - before < size * 0.6  # only the maps asked for (and the header, cached)
    tol = {"int8": 0.02, "fp8": 0.07}.get(spec)
    if tol:  # no PCA: close to the plain features everywhere
        v = src.videos(*KEY)[0]
        a, b = src.read(v, *KEY), FeatureStore(out).read(v, *KEY)
        assert float((a - b).abs().max()) <= tol * float(a.abs().max())


def test_extract_codec_equals_extract_then_compress(plain, tmp_path):
    from vidprobe.cli import app

    data = plain / "data"
    common = ["extract", "-b", "oracle", "-d", str(data), "--height", "16", "--width", "28", "-a", "patch=4", "-q"]
    r = CliRunner().invoke(app, common + ["-o", str(tmp_path / "a"), "--codec", "pca:3+int8", "--fit-videos", "2"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["compress", str(plain / "plain"), "--codec", "pca:3+int8", "--fit-videos", "2",
                                 "--out", str(tmp_path / "b"), "-q"])
    assert r.exit_code == 0, r.output
    assert "4 files converted" in r.output and "bytes on disk" in r.output
    a, b = FeatureStore(tmp_path / "a"), FeatureStore(tmp_path / "b")
    assert a.codec == b.codec == C.Codec(3, "int8") and not (tmp_path / "a" / ".codec_fit").exists()
    assert a.manifest["codec"]["fit"]["videos"] == b.manifest["codec"]["fit"]["videos"]
    assert a.videos(*KEY) == b.videos(*KEY) and len(a.videos(*KEY)) == 4
    from safetensors.torch import load_file

    for v in a.videos(*KEY):
        ta, tb = load_file(str(a.path(v, *KEY))), load_file(str(b.path(v, *KEY)))
        assert set(ta) == set(tb) == {"features", "frame_index", "int8_scale", "int8_offset"}
        assert all(torch.equal(ta[k], tb[k]) for k in ta)
        assert torch.equal(a.read(v, *KEY), b.read(v, *KEY))
    # the store records its codec: adding plain features to it is refused, naming the field
    r = CliRunner().invoke(app, common + ["-o", str(tmp_path / "a")])
    assert r.exit_code != 0 and "codec" in r.output


def test_compress_resumes_counts_broken_files_and_never_touches_the_source(plain, tmp_path):
    from vidprobe.cli import app

    src = _copy(plain, tmp_path)
    vids = FeatureStore(src).videos(*KEY)
    bad = FeatureStore(src).path(vids[1], *KEY)
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    before = {p: p.read_bytes() for p in src.rglob("*.safetensors")}
    args = ["compress", str(src), "--codec", "int8", "--out", str(tmp_path / "out"), "-q"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1 and "3 files converted" in r.output and "1 broken" in r.output
    assert "1 files skipped" in r.output and str(bad) in r.output
    assert {p: p.read_bytes() for p in src.rglob("*.safetensors")} == before
    out = FeatureStore(tmp_path / "out")
    keep = out.path(vids[0], *KEY)
    mtime = keep.stat().st_mtime_ns
    out.path(vids[2], *KEY).unlink()  # as if the run had stopped before this file
    r = CliRunner().invoke(app, args + ["--allow-skips"])
    assert r.exit_code == 0 and "1 files converted, 2 already converted, 1 broken" in r.output
    assert keep.stat().st_mtime_ns == mtime and sorted(out.videos(*KEY)) == sorted(set(vids) - {vids[1]})
    r = CliRunner().invoke(app, ["compress", str(src), "--codec", "int8", "-q"])
    assert r.exit_code != 0 and "--in-place" in r.output
    r = CliRunner().invoke(app, ["compress", str(src), "--codec", "int8", "--out", str(src), "-q"])
    assert r.exit_code == 2 and "source store" in r.output


def test_in_place_replaces_each_file_only_after_its_encoded_version_and_resumes(plain, tmp_path, monkeypatch):
    src = _copy(plain, tmp_path)
    ref = FeatureStore(plain / "plain")
    vids = ref.videos(*KEY)
    real, calls = C.encode, []

    def crash_on_third(x, codec, basis=None):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(x, codec, basis)

    monkeypatch.setattr(C, "encode", crash_on_third)
    with pytest.raises(RuntimeError, match="killed"):
        compress_store(src, "pca:4+int8", in_place=True, fit_videos=2, progress=False)
    monkeypatch.setattr(C, "encode", real)
    m = json.loads((src / "manifest.json").read_text())
    assert m["codec"]["spec"] == "pca:4+int8" and m["codec_conversion"] == {"from": None, "to": "pca:4+int8"}
    st = FeatureStore(src)  # mid-conversion: every file readable, two encoded, two still plain
    codecs = [st.header(v, *KEY).metadata.get("codec") for v in vids]
    assert codecs == ["pca:4+int8", "pca:4+int8", None, None]
    assert torch.equal(st.read(vids[3], *KEY), ref.read(vids[3], *KEY))
    _, want = _roundtrip(ref.maps(vids[0], *KEY)[0], "pca:4+int8", st.basis(*KEY))
    assert torch.equal(st.maps(vids[0], *KEY)[0], want)  # the encoded file is the encoding of the original
    assert not [p for p in src.rglob("*") if p.name.endswith(".tmp")]
    with pytest.raises(FeatureStoreError, match="unfinished"):
        compress_store(src, "int8", in_place=True, progress=False)
    s = compress_store(src, "pca:4+int8", in_place=True, fit_videos=2, progress=False)
    assert (s.converted, s.already, s.broken) == (2, 2, {})
    m = json.loads((src / "manifest.json").read_text())
    assert "codec_conversion" not in m and m["codec"]["fit"]["videos"]["L001_Tnone"] == vids[:2]
    st = FeatureStore(src)
    assert all(st.header(v, *KEY).metadata["codec"] == "pca:4+int8" for v in vids)
    # in place again, to another codec: the old basis is used to decode, then removed
    s = compress_store(src, "int8", in_place=True, progress=False)
    assert s.converted == 4 and not (src / "codec" / "pca-4+int8").exists()
    assert FeatureStore(src).codec == C.Codec(None, "int8")
    with pytest.raises(FeatureStoreError, match="already encoded"):
        compress_store(src, "int8", in_place=True, progress=False)


def test_unknown_or_mismatched_codecs_are_clear_errors(plain, tmp_path):
    out = tmp_path / "enc"
    compress_store(plain / "plain", "int8", out=out, progress=False)
    man = out / "manifest.json"
    m = json.loads(man.read_text())
    m["codec"]["spec"] = "zstd:3"
    man.write_text(json.dumps(m))
    with pytest.raises(FeatureStoreError, match=r"manifest.json: field 'codec.spec': unknown codec 'zstd:3'"):
        FeatureStore(out)
    m["codec"]["spec"] = "fp8"  # the files say int8
    man.write_text(json.dumps(m))
    st = FeatureStore(out)
    v = st.videos(*KEY)[0]
    with pytest.raises(FeatureStoreError, match=r"encoded with codec 'int8' but the store's manifest says 'fp8'"):
        st.read(v, *KEY)
    assert store_bytes(out) > 0 and os.path.getsize(st.path(v, *KEY)) > 0


def test_storage_table_grids_are_the_protocols_and_bytes_follow_the_codec():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "storage_table.py"
    spec = importlib.util.spec_from_file_location("storage_table", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    # reference/protocol.md's grids (as in tests/test_fullsize_meta.py), times the clips of interleaved layouts
    assert mod.feature_grid("wan2.1-t2v-14b") == (21, 30, 52, 5120)
    assert mod.feature_grid("cogvideox-5b-i2v") == (2 * 13, 30, 45, 3072)
    assert mod.feature_grid("opensora2") == (21, 30, 53, 3072)
    assert mod.feature_grid("vjepa-vith16-384") == (5 * 8, 30, 52, 1280)
    assert mod.feature_grid("dinov2-large") == (77, 30, 52, 1024)
    row = next(r for r in mod.rows() if r["model"] == "wan2.1-t2v-1.3b")
    assert row["fp16"] == 21 * 30 * 52 * 1536 * 2 + 81 * 8  # bench_storage measured 100,639,632 with the header
    assert row["pca:256+int8"] == 21 * 30 * 52 * 256 + 2 * 4 * 256 + 81 * 8
    assert "| wan2.1-t2v-14b | 21 x 30 x 52 x 5120 | 319.9 |" in mod.markdown()
