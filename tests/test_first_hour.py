"""Issue 15, "the first hour": mistakes a new user makes are refused once, early, in the CLI's own words."""

from __future__ import annotations

import logging
import re
import types
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from vidprobe.data.base import DatasetError, VideoDataset

SAMPLER = {"num_frames": 2, "min_gap": 1, "max_frame": 5, "snap": 1}


@pytest.fixture
def app():
    from vidprobe import cli

    cli._load()
    return cli.app


def _invoke(app, args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "1000"})


def _flat(r) -> str:
    """The command's output with rich's error box and line wrapping taken out."""
    return re.sub(r"[\s│╭╮╰╯─]+", " ", r.output)


@pytest.fixture
def no_build(monkeypatch):
    """Registered specs kept, every factory replaced by one that records a build (none may happen)."""
    from vidprobe.backbones import base

    reg = base.registry()
    built: list[str] = []

    def boom(name):
        def factory(**kw):
            built.append(name)
            raise AssertionError(f"{name} was built")
        return factory

    for name in ("wan2.1-t2v-1.3b", "dinov2-small", "pixels"):
        monkeypatch.setitem(base._REGISTRY, name, (reg[name][0], boom(name)))
    return built


# ------------------------------------------------------------------ 1. fail up front, not per video
def test_layer_out_of_range_is_refused_before_the_model_loads(app, no_build, tmp_path):
    r = _invoke(app, ["extract", "-b", "wan2.1-t2v-1.3b", "-d", tmp_path / "nodata", "-o", tmp_path / "f",
                      "--layers", "10,99"])
    assert r.exit_code == 2, r.output
    assert "--layers 10,99: wan2.1-t2v-1.3b has blocks 1..30 (or -1" in _flat(r)
    assert no_build == [] and not (tmp_path / "f").exists()  # refused before the store or the model


def test_timestep_for_a_model_without_diffusion_time_is_refused(app, no_build, tmp_path):
    r = _invoke(app, ["extract", "-b", "dinov2-small", "-d", tmp_path / "nodata", "-o", tmp_path / "f",
                      "--timesteps", "249"])
    assert r.exit_code == 2, r.output
    out = _flat(r)
    assert "--timesteps 249: dinov2-small has no diffusion time" in out
    assert no_build == [] and not (tmp_path / "f").exists()


def test_layer_minus_one_and_none_timestep_still_pass_the_check():
    from vidprobe.backbones.base import registry
    from vidprobe.features.cli import check_request

    spec = registry()["wan2.1-t2v-1.3b"][0]
    check_request(spec, [1, 30, -1], [249], "1,30,-1", "249")  # no error
    check_request(registry()["dinov2-small"][0], [12], [None], "12", "none")


# ------------------------------------------------------------------ 2. did you mean
def test_unknown_backbone_names_the_closest(app, tmp_path):
    r = _invoke(app, ["extract", "-b", "wan2.1-t2v-13b", "-d", tmp_path, "-o", tmp_path / "f"])
    assert r.exit_code == 2
    out = _flat(r)
    assert "did you mean" in out and "'wan2.1-t2v-1.3b'" in out


def test_unknown_backbone_far_from_every_name_lists_them():
    from vidprobe.features.cli import unknown_backbone_message

    msg = unknown_backbone_message("zzzzqqq", ["alpha", "beta"])
    assert "did you mean" not in msg and "known: alpha, beta" in msg


def test_unknown_probe_preset_names_the_closest():
    from vidprobe.probe.config import ProbeConfig, ProbeConfigError

    with pytest.raises(ProbeConfigError, match=r"did you mean 'small'\?"):
        ProbeConfig.preset("smal")
    with pytest.raises(ProbeConfigError) as e:
        ProbeConfig.preset("qqqqqq")
    assert "did you mean" not in str(e.value) and "choose from" in str(e.value)


# ------------------------------------------------------------------ 3. upsampling warning
@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from vidprobe.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("fh_data") / "data"
    write_synthetic_dataset(root, 3, num_frames=5, hw=(28, 49), seed=0, test_fraction=0.34, progress=False)
    return root


def _resize_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "far above their native size" in r.getMessage()]


def test_extract_warns_once_when_it_upsamples_far(small_data, tmp_path, caplog):
    from vidprobe.features.extract import extract_dataset

    with caplog.at_level(logging.WARNING, logger="vidprobe.features"):
        s = extract_dataset("pixels", small_data, tmp_path / "f", layers=[1], progress=False)
    assert len(s.done) == 3
    warns = _resize_warnings(caplog)
    assert len(warns) == 1, warns  # once per run, not per video
    assert "28x49" in warns[0] and "420x728" in warns[0] and "--height/--width" in warns[0]


def test_extract_does_not_warn_at_the_native_size(small_data, tmp_path, caplog):
    from vidprobe.features.extract import extract_dataset

    with caplog.at_level(logging.WARNING, logger="vidprobe.features"):
        extract_dataset("pixels", small_data, tmp_path / "f", layers=[1], backbone_kwargs={"height": 28, "width": 56},
                        progress=False)
    assert _resize_warnings(caplog) == []


# ------------------------------------------------------------------ 4. check --deep finds a frame of the wrong size
def test_prepare_check_deep_finds_a_frame_of_the_wrong_size(app, tmp_path):
    from vidprobe.data.native import NativeDataset, frame_path, write_png
    from vidprobe.data.synthetic import write_synthetic_dataset

    root = tmp_path / "data"
    write_synthetic_dataset(root, 2, num_frames=5, hw=(16, 24), seed=0, test_fraction=0.5, progress=False)
    vid = NativeDataset(root).videos()[0]
    bad = frame_path(root / vid, 2)  # a middle frame: neither the first nor the last
    write_png(bad, torch.rand(3, 20, 24))
    r = _invoke(app, ["prepare", "check", root])
    assert r.exit_code == 0 and "2 videos usable, 0 skipped" in r.output  # the quick check: first and last frames
    r = _invoke(app, ["prepare", "check", root, "--deep"])
    assert r.exit_code == 0, r.output  # exit 1 only when no video is usable (unchanged)
    out = _flat(r)
    assert "1 videos usable, 1 skipped" in out and str(bad) in out and "(20, 24)" in out


class _Sized(VideoDataset):
    """In-memory videos; frame ``odd`` of every video has another size."""

    def __init__(self, odd: int):
        super().__init__("/mem")
        self.odd = odd

    def videos(self, split=None):
        return ["v0"]

    def num_frames(self, video_id):
        return 4

    def load(self, video_id, frames=None):
        """Only what a scan reads: ``images [T,3,H,W]``."""
        frames = list(range(4)) if frames is None else list(frames)
        hw = (10, 14) if frames == [self.odd] else (8, 12)
        return types.SimpleNamespace(images=torch.rand(len(frames), 3, *hw))


@pytest.mark.parametrize("odd", [0, 2])
def test_deep_scan_of_any_reader_names_the_odd_frame(odd):
    ds = _Sized(odd)
    assert ds.scan().ok == ["v0"]  # the quick scan reads one frame
    rep = ds.scan(deep=True)
    assert rep.ok == [] and f"frame {odd} is 10x14, the video's other frames are 8x12" in rep.skipped["v0"]
    with pytest.raises(DatasetError, match="frame 3 is 2x2"):
        ds.check_frame_sizes("v0", {0: (8, 12), 1: (8, 12), 2: (8, 12), 3: (2, 2)})


# ------------------------------------------------------------------ 5 and 6. training runs
@pytest.fixture(scope="module")
def finished_run(small_data, tmp_path_factory):
    """A finished tiny run (4 steps) written by `vidprobe train`, and its config file."""
    from vidprobe import cli
    from vidprobe.features.extract import extract_dataset

    root = tmp_path_factory.mktemp("fh_run")
    feats = root / "feats"
    extract_dataset("oracle", small_data, feats, layers=[1], backbone_kwargs={"height": 28, "width": 49},
                    progress=False)
    cfg = {"features": str(feats), "dataset": str(small_data), "out": str(root / "run"), "probe": {"preset": "tiny"},
           "epochs": 2, "batch_size": 1, "sampler": dict(SAMPLER), "seed": 3}
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cli._load()
    r = _invoke(cli.app, ["train", path, "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "trained 4 steps" in r.output
    return path, root / "run"


def test_resuming_a_finished_run_says_so(app, finished_run):
    cfg, run = finished_run
    r = _invoke(app, ["train", cfg, "--resume", "--no-progress"])
    assert r.exit_code == 0, r.output
    out = _flat(r)
    assert "already finished at step 4" in out and "nan" not in out
    r = _invoke(app, ["train", cfg, "--no-progress"])  # without --resume: refused, and the last step named
    assert r.exit_code == 2 and "the last at step 4" in _flat(r)


def test_a_corrupt_checkpoint_names_the_file(app, finished_run, tmp_path):
    import shutil

    cfg, run = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    conf = yaml.safe_load(cfg.read_text())
    conf["out"] = str(copy)
    cfg2 = tmp_path / "cfg.yaml"
    cfg2.write_text(yaml.safe_dump(conf))
    from vidprobe.probe.checkpoint import find_checkpoint

    weights = find_checkpoint(copy, "last") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    r = _invoke(app, ["train", cfg2, "--resume", "--no-progress"])
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    out = _flat(r)
    assert str(weights) in out and "corrupt" in out


def test_load_tensors_names_a_corrupt_or_missing_file(tmp_path):
    from vidprobe.probe.checkpoint import CheckpointError, load_tensors

    p = tmp_path / "model.safetensors"
    p.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="model.safetensors: corrupt"):
        load_tensors(p)
    with pytest.raises(CheckpointError, match="not found"):
        load_tensors(tmp_path / "missing.safetensors")


def test_evaluate_checks_the_database_before_evaluating(app, tmp_path):
    db = tmp_path / "results.db"
    db.write_bytes(b"this is not an sqlite database" * 100)
    r = _invoke(app, ["evaluate", tmp_path / "no_such_run", "--db", db, "--no-progress"])
    assert r.exit_code == 2, r.output
    out = _flat(r)
    assert f"--db {db}" in out and "no_such_run" not in out  # the database is refused before the run is read
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = _invoke(app, ["evaluate", tmp_path / "no_such_run", "--db", afile / "r.db", "--no-progress"])
    assert r.exit_code == 2 and "a regular file" in _flat(r)


def test_output_under_a_regular_file_is_refused(app, no_build, tmp_path):
    afile = tmp_path / "some_file"
    afile.write_text("x")
    r = _invoke(app, ["extract", "-b", "pixels", "-d", tmp_path, "-o", afile / "x"])
    assert r.exit_code == 2, r.output
    assert "lies under" in _flat(r) and "a regular file" in _flat(r)
    r = _invoke(app, ["extract", "-b", "pixels", "-d", tmp_path, "-o", afile])
    assert r.exit_code == 2 and "is a regular file" in _flat(r)
    r = _invoke(app, ["report", tmp_path / "none.db", "--out", afile / "x"])
    assert r.exit_code == 2, r.output
    assert "lies under" in _flat(r) and "a regular file" in _flat(r)
    assert no_build == []
