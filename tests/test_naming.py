"""One name per meaning (issue 15): `labels` everywhere, runs named after their features, each command its own flags."""

from __future__ import annotations

import re

import pytest
import torch
import yaml
from typer.testing import CliRunner

HW = (28, 56)


def _invoke(args):
    from vidprobe import cli

    return CliRunner().invoke(cli.build_app(), [str(a) for a in args], env={"COLUMNS": "1000"})


def _flat(text: str) -> str:
    return re.sub(r"[\s│╭╮╰╯─]+", " ", text)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """Three synthetic videos, a labels directory of other geometry for them, and stores of one and of two layers."""
    from vidprobe.data.labels import write_labels_from_clip
    from vidprobe.data.native import NativeDataset
    from vidprobe.data.synthetic import write_synthetic_dataset
    from vidprobe.features.extract import extract_dataset

    root = tmp_path_factory.mktemp("naming")
    data = write_synthetic_dataset(root / "data", 3, num_frames=9, hw=HW, seed=3, test_fraction=0.34, progress=False)
    ds = NativeDataset(data)
    labels = root / "labels"
    labels.mkdir()
    for vid in ds.videos():
        clip = ds.load(vid)
        clip.depth = clip.depth * 2.0  # a recognisable "pseudo-label": twice the true depth
        write_labels_from_clip(labels / f"{vid}.safetensors", clip, meta={"labeler": "test"})
    one, two = root / "one", root / "two"
    extract_dataset("pixels", data, one, [1], [None], backbone_kwargs={"height": HW[0], "width": HW[1]}, progress=False)
    extract_dataset("dinov2-small", data, two, [1, 2], [None], progress=False,
                    backbone_kwargs={"tiny": True, "height": HW[0], "width": HW[1]})
    return {"root": root, "data": data, "labels": labels, "one": one, "two": two}


def test_a_labels_directory_gives_the_ground_truth_of_a_synthetic_dataset_too(synth):
    from vidprobe.data.open import open_dataset

    vid = open_dataset(synth["data"]).videos("test")[0]
    own = open_dataset(synth["data"]).load(vid, [0, 4])
    lab = open_dataset(synth["data"], labels_dir=synth["labels"]).load(vid, [0, 4])
    assert torch.allclose(lab.depth, 2.0 * own.depth) and lab.frame_ids.tolist() == [0, 4]
    assert lab.meta["labels"].endswith(f"{vid}.safetensors")
    r = _invoke(["prepare", "check", synth["data"], "--labels", synth["labels"]])
    assert r.exit_code == 0 and "3 videos usable" in r.output, r.output
    r = _invoke(["prepare", "check", synth["data"], "--labels", synth["root"] / "nolabels"])
    assert r.exit_code == 1 and "nolabels" in r.output  # each video skipped, naming the missing file


def test_the_labels_flag_has_one_name():
    r = _invoke(["prepare", "check", ".", "--labels-dir", "x"])
    assert r.exit_code == 2 and "--labels" in _flat(r.output)  # click's did-you-mean points at the one name


def test_a_run_is_named_after_its_store_unless_the_config_names_it(synth, tmp_path):
    from vidprobe.probe.cli import run_name, run_name_defaults
    from vidprobe.probe.train import load_config

    assert run_name(str(synth["one"]), None, None) == "pixels_L1_Tnone"
    assert run_name(str(synth["two"]), 2, None) == "dinov2-small_L2_Tnone"
    assert run_name(str(synth["two"]), None, None) is None  # two layers: training refuses the choice, no guess
    assert run_name(str(tmp_path / "nostore"), None, None) is None
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({"features": str(synth["one"]), "dataset": str(synth["data"])}))
    cfg = load_config(cfg_path)
    assert run_name_defaults(cfg_path, [], cfg) == {"name": "pixels_L1_Tnone", "out": "runs/pixels_L1_Tnone"}
    assert run_name_defaults(cfg_path, ["name=mine"], load_config(cfg_path, ["name=mine"])) == {"out": "runs/mine"}
    assert run_name_defaults(cfg_path, ["name=a", "out=b"], cfg) == {}
    assert yaml.safe_load((__import__("pathlib").Path(__file__).parents[1] / "configs" / "example_train.yaml")
                          .read_text()).keys().isdisjoint({"name", "out"})  # the example is named by its store


def test_train_and_consistency_each_name_their_own_setting(synth, tmp_path):
    r = _invoke(["consistency", "-f", synth["two"], "-d", synth["data"]])
    assert r.exit_code == 2 and "error: --layer: " in r.output and "holds layers [1, 2]" in r.output, r.output
    assert "config" not in r.output
    r = _invoke(["consistency", "-f", synth["two"], "-d", synth["data"], "--layer", "7"])
    assert r.exit_code == 2 and "error: --layer: " in r.output and "has no layer 7" in r.output, r.output
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump({"features": str(synth["two"]), "dataset": str(synth["data"])}))
    r = _invoke(["train", cfg])
    assert r.exit_code == 2 and "config field 'layer' (or --set layer=...)" in r.output, r.output


def test_the_first_hour_config_loads_and_reads_the_readme_paths():
    from pathlib import Path

    from vidprobe.probe.train import load_config

    cfg = load_config(Path(__file__).parents[1] / "configs" / "synthetic_train.yaml")
    assert (cfg.features, cfg.dataset, cfg.labels) == ("feats/synth_dinov2", "data/synth", "data/synth_labels")
    assert cfg.compat == "clean" and cfg.probe["preset"] == "tiny" and cfg.name == "probe"  # name: derived by train
