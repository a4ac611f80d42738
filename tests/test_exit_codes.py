"""Issue 15: a job that skipped items exits non-zero unless --allow-skips, its last line counting them by reason;
two extractions into one store say what the other did; written files follow the umask."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from vidprobe.data.native import NativeDataset, frame_path
from vidprobe.features.extract import extract_dataset
from vidprobe.skips_cli import reason_group, skip_line

HW, FRAMES = (16, 24), 6
PIXELS = {"height": HW[0], "width": HW[1]}


def _invoke(args):
    from vidprobe import cli

    return CliRunner().invoke(cli.app, [str(a) for a in args], env={"COLUMNS": "1000"})


def _last(r) -> str:
    return r.output.strip().splitlines()[-1]


def _synthetic(root: Path, n: int = 4) -> Path:
    from vidprobe.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(root, n, num_frames=FRAMES, hw=HW, seed=0, test_fraction=0.5, progress=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4 videos (2 train, 2 test) and a store with features for all but one test video."""
    root = tmp_path_factory.mktemp("exit")
    ds = _synthetic(root / "data")
    test = NativeDataset(ds).videos("test")
    feats = root / "feats"
    have = [v for v in NativeDataset(ds).videos() if v != test[0]]
    extract_dataset("pixels", ds, feats, layers=[1], backbone_kwargs=PIXELS, videos=have, progress=False)
    return {"root": root, "data": ds, "feats": feats, "no_features": test[0], "test": test}


def test_reasons_are_grouped_by_kind():
    assert reason_group("load error: DatasetError: /d/v/frames/000.png: cannot decode") == "load error: DatasetError"
    assert reason_group("/s/L001_Tnone/v.safetensors: NaN/Inf in features") == "NaN/Inf in features"
    assert reason_group("NaN/Inf in features of (layer, timestep) (1, None)") == "NaN/Inf in features"
    assert reason_group("RuntimeError: CUDA out of memory") == "RuntimeError"
    line = skip_line({"a": "load error: DatasetError: x", "b": "load error: DatasetError: y",
                      "c": "no features in the store"})
    assert line == ("3 videos skipped (2 x load error: DatasetError, 1 x no features in the store): "
                    "exit 1; pass --allow-skips to exit 0")
    assert skip_line({"a": "RuntimeError: boom"}, allowed=True).endswith("allowed by --allow-skips")


# ------------------------------------------------------------------ extract
def test_extract_that_skipped_a_video_exits_1_unless_allowed(tmp_path):
    ds = _synthetic(tmp_path / "data", n=3)
    vid = NativeDataset(ds).videos()[1]
    frame_path(ds / vid, 3).unlink()  # a broken video
    args = ["extract", "-b", "pixels", "-d", ds, "-o", tmp_path / "f", "--layers", "1", "--height", HW[0],
            "--width", HW[1], "-q"]
    r = _invoke(args)
    assert r.exit_code == 1, r.output
    assert "2 extracted" in r.output and f"skipped {vid}: load error" in r.output
    assert _last(r).startswith("1 videos skipped (1 x load error: DatasetError)")
    assert _last(r).endswith("pass --allow-skips to exit 0")
    r = _invoke(args + ["--allow-skips"])  # resumes: the two are present, the broken one is skipped again
    assert r.exit_code == 0, r.output
    assert "2 already present" in r.output and _last(r).endswith("allowed by --allow-skips")
    r = _invoke(args + ["--max-videos", "1"])  # only the first video: nothing skipped, exit 0, no count line
    assert r.exit_code == 0 and "skipped (" not in r.output, r.output


def test_a_second_extraction_says_what_the_other_wrote_meanwhile(tmp_path):
    """While this run works on its first video, another run writes the other two: reported, not claimed."""
    ds = _synthetic(tmp_path / "data", n=3)
    vids = sorted(NativeDataset(ds).videos())  # the order extraction takes them in
    out = tmp_path / "f"

    class Racing(NativeDataset):
        def load(self, video_id, frames=None):
            if video_id == vids[0] and not (out / "L001_Tnone" / f"{vids[1]}.safetensors").exists():
                extract_dataset("pixels", NativeDataset(ds), out, layers=[1], backbone_kwargs=PIXELS,
                                videos=vids[1:], progress=False)  # the "other process"
            return super().load(video_id, frames)

    s = extract_dataset("pixels", Racing(ds), out, layers=[1], backbone_kwargs=PIXELS, progress=False)
    assert s.done == [vids[0]] and sorted(s.by_other) == vids[1:] and not s.skipped
    assert "2 videos were written by another process while this one ran" in s.format()
    again = extract_dataset("pixels", NativeDataset(ds), out, layers=[1], backbone_kwargs=PIXELS, progress=False)
    assert sorted(again.already_present) == vids and again.by_other == []  # present before this run began


# ------------------------------------------------------------------ train, evaluate, consistency
def _train_cfg(data, out: Path) -> Path:
    cfg = {"features": str(data["feats"]), "dataset": str(data["data"]), "out": str(out), "probe": {"preset": "tiny"},
           "epochs": 1, "batch_size": 2, "sampler": {"num_frames": 2, "min_gap": 1, "max_frame": FRAMES, "snap": 1},
           "seed": 0}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_and_evaluate_count_videos_without_features(data, tmp_path):
    vid = data["no_features"]
    r = _invoke(["train", _train_cfg(data, tmp_path / "run"), "--no-progress"])
    assert r.exit_code == 1, r.output
    assert "trained 1 steps" in r.output  # the run is complete; only the exit status says something was left out
    assert _last(r) == "1 videos skipped (1 x no features in the store): exit 1; pass --allow-skips to exit 0"
    r = _invoke(["train", _train_cfg(data, tmp_path / "run2"), "--no-progress", "--allow-skips"])
    assert r.exit_code == 0 and _last(r).startswith("1 videos skipped") and "allowed" in _last(r), r.output

    ev = ["evaluate", tmp_path / "run", "--no-progress", "--save-clips", "0", "--allow-failed-clips"]
    r = _invoke(ev)
    assert r.exit_code == 1, r.output
    assert _last(r) == "1 videos skipped (1 x no features in the store): exit 1; pass --allow-skips to exit 0"
    metrics = yaml.safe_load((tmp_path / "run" / "eval_last" / "metrics.json").read_text())
    assert metrics["missing_features"] == [vid] and metrics["metrics"]["num_clips"] == 1
    r = _invoke(ev + ["--allow-skips"])
    assert r.exit_code == 0 and "allowed by --allow-skips" in _last(r), r.output


def test_consistency_counts_failed_and_featureless_videos(data, tmp_path):
    ds = tmp_path / "data"
    shutil.copytree(data["data"], ds)
    frame_path(ds / NativeDataset(ds).videos("train")[0], 0).unlink()  # frame 0 is always read
    args = ["consistency", "-f", data["feats"], "-d", ds, "--frames", "2", "--max-frame", FRAMES, "--pairs", "1",
            "--max-queries", "20", "--no-progress", "--split", "train"]
    r = _invoke(args)
    assert r.exit_code == 1, r.output
    assert _last(r).startswith("1 videos skipped (1 x ") and _last(r).endswith("pass --allow-skips to exit 0")
    r = _invoke(args + ["--allow-skips"])
    assert r.exit_code == 0 and "allowed by --allow-skips" in _last(r), r.output
    r = _invoke([*args[:-1], "test"])  # one test video has no features
    assert r.exit_code == 1 and _last(r).startswith("1 videos skipped (1 x no features in the store)"), r.output


# ------------------------------------------------------------------ label, prepare co3d
def test_label_exits_1_when_a_video_failed(data, tmp_path, monkeypatch):
    import vidprobe.labels_cli as labels_cli

    class Fake:
        calls = 0

        def meta(self):
            return {"labeler": "fake"}

        def __call__(self, video):
            Fake.calls += 1
            if Fake.calls == 2:
                raise RuntimeError("CUDA out of memory")
            T, _, H, W = video.shape
            K = torch.tensor([[10.0, 0, W / 2], [0, 10.0, H / 2], [0, 0, 1]]).expand(T, 3, 3).clone()
            E = torch.cat([torch.eye(3), torch.zeros(3, 1)], 1).expand(T, 3, 4).clone()
            return {"points": torch.zeros(T, H, W, 3), "depth": torch.ones(T, H, W), "confidence": torch.ones(T, H, W),
                    "valid": torch.ones(T, H, W, dtype=torch.bool), "intrinsics": K, "extrinsics": E}

    monkeypatch.setattr(labels_cli, "build_labeler", lambda name, **kw: Fake())
    r = _invoke(["label", data["data"], "--out", tmp_path / "labels", "-q"])
    assert r.exit_code == 1, r.output
    assert "labelled 3" in r.output
    assert _last(r) == "1 videos skipped (1 x RuntimeError): exit 1; pass --allow-skips to exit 0"
    r = _invoke(["label", data["data"], "--out", tmp_path / "labels", "-q", "--allow-skips"])  # resumes: relabels it
    assert r.exit_code == 0 and "labelled 1, already done 3" in r.output and "skipped (" not in r.output, r.output


def test_prepare_co3d_counts_broken_sequences_not_rejections(tmp_path, monkeypatch):
    import vidprobe.data.co3d as co3d
    from vidprobe.data.co3d_prepare import PreprocessReport

    rep = PreprocessReport(kept=["car/1"], rejected={"car/2": "truncation: mean truncation 0.400 > 0.25",
                                                     "car/3": "error: DatasetError: /x/car/3/depths/1.png: truncated"},
                           skipped_categories={"bus": "already in /dst (pass overwrite=True to redo)",
                                               "toy": "/x/toy/frame_annotations.jgz: unreadable annotations"})
    monkeypatch.setattr(co3d, "preprocess_co3d", lambda *a, **kw: rep)
    r = _invoke(["prepare", "co3d", tmp_path, tmp_path / "dst", "--no-progress"])
    assert r.exit_code == 1, r.output
    assert _last(r) == ("2 sequences skipped (1 x error: DatasetError, 1 x unreadable annotations): "
                        "exit 1; pass --allow-skips to exit 0")
    r = _invoke(["prepare", "co3d", tmp_path, tmp_path / "dst", "--no-progress", "--allow-skips"])
    assert r.exit_code == 0, r.output
    rep.rejected.pop("car/3")
    rep.skipped_categories.pop("toy")
    r = _invoke(["prepare", "co3d", tmp_path, tmp_path / "dst", "--no-progress"])
    assert r.exit_code == 0 and "skipped (" not in r.output, r.output  # rules' rejections are not skips


# ------------------------------------------------------------------ umask
def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_written_files_follow_the_umask(data, tmp_path, mask):
    from vidprobe.probe.checkpoint import save_checkpoint
    from vidprobe.probe.train_config import TrainConfig
    from vidprobe.report.html import write_report
    from vidprobe.results import ResultsDB

    old = os.umask(mask)
    try:
        want = 0o666 & ~mask
        feats = tmp_path / "feats"
        extract_dataset("pixels", data["data"], feats, layers=[1], backbone_kwargs=PIXELS, max_videos=1, progress=False)
        files = [feats / "manifest.json", *sorted((feats / "L001_Tnone").iterdir())]
        model = torch.nn.Linear(2, 2)
        cfg = TrainConfig.from_dict({"features": str(feats), "dataset": str(data["data"]),
                                     "out": str(tmp_path / "run")})
        ck = save_checkpoint(tmp_path / "run", model, torch.optim.AdamW(model.parameters()), None, 1, 0, cfg, keep=2)
        files += sorted(ck.iterdir()) + [tmp_path / "run" / "checkpoints" / "last.json"]
        db = ResultsDB(tmp_path / "results.db")
        try:
            db.finish_run(db.add_run("probe", name="x"))
            files += [tmp_path / "results.db", tmp_path / "results.db-wal"]
            modes = {p.name: _mode(p) for p in files}
        finally:
            db.close()
        out = write_report(tmp_path / "results.db", tmp_path / "report")
        modes.update({p.name: _mode(p) for p in (out["html"], out["md"])})
    finally:
        os.umask(old)
    assert {"model.safetensors", "optimizer.safetensors", "results.db", "report.html", "manifest.json"} <= set(modes)
    assert modes == dict.fromkeys(modes, want), {k: oct(v) for k, v in modes.items()}
