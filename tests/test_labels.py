"""Ground-truth labels file: round trip, partial reads, validation errors, apply_labels."""

import json

import pytest
import torch
from safetensors.torch import save_file

from vidprobe.data.clip import Clip
from vidprobe.data.labels import (
    LABEL_KEYS,
    LabelsError,
    LabelsFile,
    apply_labels,
    write_labels,
    write_labels_from_clip,
)
from vidprobe.data.synthetic import generate_clip

T, H, W = 8, 12, 20


@pytest.fixture(scope="module")
def clip():
    c = generate_clip("orbit", 4, num_frames=T, hw=(H, W))
    g = torch.Generator().manual_seed(0)
    c.confidence = 1 + torch.rand(T, H, W, generator=g)  # something not all ones
    return c


def _arrays(clip):
    return dict(
        points=clip.points.clone(),
        depth=clip.depth.clone(),
        confidence=clip.confidence.clone(),
        valid=clip.valid.to(torch.uint8),
        intrinsics=clip.intrinsics.clone(),
        extrinsics=clip.extrinsics.clone(),
        frame_ids=clip.frame_ids.clone() + 100,
    )


def test_round_trip_and_metadata(tmp_path, clip):
    p = write_labels(tmp_path / "v" / "labels.safetensors",
                     **{k: v for k, v in _arrays(clip).items() if k != "valid"}, valid=clip.valid,
                     meta={"labeler": "exact", "scale": 2.5, "tags": ["a", "b"]})
    lf = LabelsFile(p)
    assert lf.num_frames == T and lf.hw == (H, W)
    assert lf.meta["labeler"] == "exact" and json.loads(lf.meta["scale"]) == 2.5 and json.loads(lf.meta["tags"]) == ["a", "b"]
    assert lf.meta["format"] == "vidprobe-labels" and lf.meta["version"] == "1"
    assert (lf.meta["height"], lf.meta["width"], lf.meta["num_frames"]) == (str(H), str(W), str(T))
    d = lf.read()
    assert set(d) == set(LABEL_KEYS)
    assert d["valid"].dtype == torch.bool and torch.equal(d["valid"], clip.valid)
    assert d["frame_ids"].dtype == torch.int64 and d["frame_ids"].tolist() == list(range(100, 100 + T))
    for k in ("points", "depth", "confidence", "intrinsics", "extrinsics"):
        assert torch.equal(d[k], getattr(clip, k)), k
    assert not list(p.parent.glob("*.tmp"))  # atomic: no temp files left


def test_partial_read_returns_exactly_those_frames(tmp_path, clip):
    p = write_labels_from_clip(tmp_path / "l.safetensors", clip)
    lf = LabelsFile(p)
    frames = [5, 2, 2, 7, 0]
    d = lf.read(frames)
    for k in ("points", "depth", "confidence", "intrinsics", "extrinsics"):
        assert torch.equal(d[k], getattr(clip, k)[frames]), k
    assert torch.equal(d["valid"], clip.valid[frames]) and d["frame_ids"].tolist() == frames
    assert lf.read([-1])["frame_ids"].tolist() == [T - 1]
    only = lf.read([3], keys=["frame_ids", "depth"])
    assert set(only) == {"frame_ids", "depth"}
    with pytest.raises(LabelsError, match="out of range"):
        lf.read([T])
    with pytest.raises(LabelsError, match="unknown labels field"):
        lf.read([0], keys=["normals"])


def test_partial_read_does_not_touch_other_frames(tmp_path, clip):
    """Frames 5 (NaN depth) and 6 (sheared rotation) are corrupt; reading others must not see them."""
    a = {k: v.contiguous() for k, v in _arrays(clip).items()}
    a["depth"][5, 3, 4] = float("nan")
    a["extrinsics"][6, 0, 1] += 0.3
    p = tmp_path / "corrupt.safetensors"
    save_file(a, str(p))  # raw write, bypassing the validating writer
    lf = LabelsFile(p)  # the header is fine
    d = lf.read([0, 1, 2, 3, 4, 7])
    assert torch.equal(d["depth"], clip.depth[[0, 1, 2, 3, 4, 7]])
    with pytest.raises(LabelsError, match=r"corrupt\.safetensors.*'depth'.*NaN.*frame 5"):
        lf.read([4, 5])
    with pytest.raises(LabelsError, match=r"'extrinsics'.*frame 6.*orthonormal"):
        lf.read([6])
    with pytest.raises(LabelsError, match="frame 5"):
        lf.validate()


def test_partial_read_reads_only_requested_slices(tmp_path, clip, monkeypatch):
    """Count the rows actually sliced out of the file."""
    import vidprobe.data.labels as L

    p = write_labels_from_clip(tmp_path / "l.safetensors", clip)
    lf = LabelsFile(p)
    rows = []
    real_open = L.safe_open

    class Spy:
        def __init__(self, *a, **k):
            self.f = real_open(*a, **k)

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def get_slice(self, key):
            sl = self.f.get_slice(key)

            class S:
                def __getitem__(_, idx):
                    out = sl[idx]
                    rows.append((key, out.shape[0]))
                    return out

            return S()

        def get_tensor(self, key):  # a whole-tensor read would defeat the purpose
            raise AssertionError("get_tensor must not be used")

    monkeypatch.setattr(L, "safe_open", Spy)
    lf.read([1, 2, 6])
    assert sum(n for k, n in rows if k == "points") == 3  # rows 1-2 as one slice, row 6 as another
    assert all(n <= 2 for _, n in rows)


def _raw(tmp_path, name, arrays, metadata=None):
    p = tmp_path / name
    save_file({k: v.contiguous() for k, v in arrays.items()}, str(p), metadata=metadata)
    return p


def test_file_level_errors(tmp_path, clip):
    good = write_labels_from_clip(tmp_path / "good.safetensors", clip)
    with pytest.raises(LabelsError, match="not found"):
        LabelsFile(tmp_path / "none.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(LabelsError, match=r"empty\.safetensors.*empty"):
        LabelsFile(tmp_path / "empty.safetensors")
    (tmp_path / "trunc.safetensors").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(LabelsError, match=r"trunc\.safetensors.*truncated or corrupt"):
        LabelsFile(tmp_path / "trunc.safetensors")
    a = _arrays(clip)
    del a["confidence"]
    with pytest.raises(LabelsError, match=r"missing\.safetensors: field 'confidence': missing"):
        LabelsFile(_raw(tmp_path, "missing.safetensors", a))
    a = _arrays(clip)
    a["intrinsics"] = torch.zeros(T, 3, 4)
    with pytest.raises(LabelsError, match=r"shape\.safetensors: field 'intrinsics': expected shape \[8, 3, 3\]"):
        LabelsFile(_raw(tmp_path, "shape.safetensors", a))
    a = _arrays(clip)
    a["valid"] = a["valid"][:-1]
    with pytest.raises(LabelsError, match="field 'valid': expected shape"):
        LabelsFile(_raw(tmp_path, "frames.safetensors", a))
    a = _arrays(clip)
    a["depth"] = a["depth"].to(torch.int32)
    with pytest.raises(LabelsError, match="field 'depth': expected a float dtype"):
        LabelsFile(_raw(tmp_path, "dtype.safetensors", a))
    with pytest.raises(LabelsError, match="metadata 'height'"):
        LabelsFile(_raw(tmp_path, "meta.safetensors", _arrays(clip), {"height": "99"}))
    with pytest.raises(LabelsError, match="metadata 'format'"):
        LabelsFile(_raw(tmp_path, "fmt.safetensors", _arrays(clip), {"format": "other"}))


def test_writer_validates_and_keeps_old_file_on_error(tmp_path, clip):
    p = write_labels_from_clip(tmp_path / "l.safetensors", clip)
    before = p.read_bytes()
    cases = {
        "points": (lambda a: a.update(points=a["points"][..., :2]), "field 'points': expected shape"),
        "depth_nan": (lambda a: a["depth"].__setitem__((1, 0, 0), float("inf")), "field 'depth': non-finite"),
        "extr_nan": (lambda a: a["extrinsics"].__setitem__((2, 1, 3), float("nan")), "field 'extrinsics': non-finite.*frame 2"),
        "rot": (lambda a: a["extrinsics"].__setitem__((3, 0, 0), 2.0), "field 'extrinsics': rotation of frame 3"),
        "reflect": (lambda a: a["extrinsics"].__setitem__((4, slice(None), 0), -a["extrinsics"][4, :, 0]), "frame 4"),
        "focal": (lambda a: a["intrinsics"].__setitem__((0, 0, 0), 0.0), "field 'intrinsics': focal"),
        "neg_depth": (lambda a: a["depth"].__setitem__((0, 0, 0), -1.0), "field 'depth': negative"),
        "valid": (lambda a: a["valid"].__setitem__((0, 0, 0), 3), "field 'valid': values must be 0 or 1"),
        "ids": (lambda a: a.update(frame_ids=a["frame_ids"].float()), "field 'frame_ids': expected an integer"),
    }
    for name, (mutate, msg) in cases.items():
        a = _arrays(clip)
        mutate(a)
        with pytest.raises(LabelsError, match=msg):
            write_labels(p, **a, meta={})
        assert p.read_bytes() == before, name
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_apply_labels(tmp_path, clip):
    lf = LabelsFile(write_labels_from_clip(tmp_path / "l.safetensors", clip))
    frames = [1, 4]
    lab = lf.read(frames)
    c = apply_labels(clip.images[frames], lab, meta={"dataset": "x", "source": "somewhere"})
    assert isinstance(c, Clip) and c.meta["dataset"] == "x"
    assert torch.equal(c.depth, clip.depth[frames]) and torch.equal(c.points, clip.points[frames])
    assert torch.equal(c.confidence, clip.confidence[frames]) and c.frame_ids.tolist() == frames
    # a Clip without ground truth (dummy geometry) gets the labels' geometry
    dummy = Clip(images=clip.images[frames], depth=torch.zeros(2, H, W), valid=torch.zeros(2, H, W, dtype=torch.bool),
                 intrinsics=torch.eye(3).expand(2, 3, 3).clone(), extrinsics=torch.eye(3, 4).expand(2, 3, 4).clone(),
                 frame_ids=torch.tensor(frames), meta={"sequence": "s"})
    c2 = apply_labels(dummy, lab)
    assert torch.equal(c2.extrinsics, clip.extrinsics[frames]) and c2.meta["sequence"] == "s"
    dummy.frame_ids = torch.tensor([1, 5])
    with pytest.raises(LabelsError, match="frame_ids"):
        apply_labels(dummy, lab)
    with pytest.raises(LabelsError, match="images"):
        apply_labels(clip.images[:3], lab)
    big = torch.nn.functional.interpolate(clip.images[frames], size=(2 * H, 2 * W))
    with pytest.raises(LabelsError, match="resize_images"):
        apply_labels(big, lab)
    c3 = apply_labels(big, lab, resize_images=True)
    assert c3.hw == (H, W) and (c3.images - clip.images[frames]).abs().mean() < 0.05
