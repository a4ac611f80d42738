"""`vidprobe run`: a model the registry has never heard of, from a local folder to a report in one command."""

from __future__ import annotations

import sqlite3

import pytest
import torch
from typer.testing import CliRunner

tf = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from vidprobe.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, num_videos=4, num_frames=25, hw=(32, 48), seed=0, test_fraction=0.25, progress=False)
    return root


def test_run_probes_an_unregistered_model_and_its_random_twin_into_a_report(tmp_path, synth):
    from vidprobe.cli import app

    torch.manual_seed(0)
    model = tmp_path / "my-vit"
    tf.ViTModel(tf.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             image_size=32, patch_size=8)).save_pretrained(model)
    out = tmp_path / "run"
    args = ["run", "-b", f"hf:{model}", "-d", str(synth), "-o", str(out), "--quick", "--layers", "1,-1",
            "--set", "max_steps=3", "--set", "batch_size=2", "--set", "out_hw=[16,24]", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    html = out / "report" / "report.html"
    assert html.is_file() and f"report: {html}" in res.output
    with sqlite3.connect(out / "results.db") as db:
        rows = db.execute("SELECT backbone, layer FROM runs WHERE kind = 'probe'").fetchall()
    label = f"hf-{str(model).replace('/', '--')}"
    assert set(rows) == {(b, layer) for b in (label, f"{label}-random-init") for layer in (1, -1)}, rows
    page = html.read_text()
    assert "random init" in page  # the twin's weights, read from its store manifest, are named in the report
    # a rerun resumes: nothing left to do
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "0 trained, 4 already in the DB" in again.output


def test_run_refuses_a_bad_request_before_any_work(tmp_path, synth):
    from vidprobe.cli import app

    res = CliRunner().invoke(app, ["run", "-b", "dinov2-smal", "-d", str(synth), "-o", str(tmp_path / "x"), "--quick"])
    assert res.exit_code != 0
    assert "dinov2-small" in res.output  # did you mean
    assert not (tmp_path / "x" / "results.db").exists()
