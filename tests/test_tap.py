"""`vidprobe extract --tap PATH`: a submodule inside each block, read through the same hooks as the block."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from vidprobe.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, num_videos=2, num_frames=3, hw=(28, 42), seed=0, progress=False)
    return root


def _extract(synth, out, *extra):
    from vidprobe.cli import app

    args = ["extract", "-b", "dinov2-small", "--tiny", "--height", "28", "--width", "42", "-d", str(synth),
            "-o", str(out), "--quiet", *extra]
    return CliRunner().invoke(app, args)


def test_a_tap_reads_the_submodule_inside_the_block(synth, tmp_path):
    from vidprobe.backbones.base import get_backbone
    from vidprobe.data.open import open_dataset
    from vidprobe.features.store import FeatureStore

    out = tmp_path / "tap"
    res = _extract(synth, out, "--layers", "1,2", "--tap", "attention")
    assert res.exit_code == 0, res.output
    store = FeatureStore(out)
    assert store.settings["tap"] == "attention"
    # what the attention of block 2 outputs, hooked by hand on the same tiny model
    bb = get_backbone("dinov2-small", tiny=True, height=28, width=42)
    ds = open_dataset(synth)
    vid = sorted(ds.videos())[0]
    video = ds.load_images(vid)
    seen = {}
    attn = bb.model.encoder.layer[1].attention

    def keep(_module, _inputs, output):  # returns None: the model's output is left as it is
        seen["t"] = output[0] if isinstance(output, tuple) else output

    handle = attn.register_forward_hook(keep)
    with torch.inference_mode():
        bb.model(pixel_values=bb.preprocess(video))
    handle.remove()
    h, w = bb.grid
    want = seen["t"][:, bb.num_prefix:].reshape(video.shape[0], h, w, -1)
    got = store.read(vid, 2, None, list(range(video.shape[0]))).float()
    torch.testing.assert_close(got, want.half().float())
    # and it is not the block's output
    plain = tmp_path / "plain"
    assert _extract(synth, plain, "--layers", "2").exit_code == 0
    assert not torch.allclose(FeatureStore(plain).read(vid, 2, None, [0]).float(), got[:1])
    # the store holds one kind of tensor: resuming it without the tap is refused, naming the setting
    again = _extract(synth, out, "--layers", "1,2")
    assert again.exit_code == 2 and "tap" in again.output


def test_a_wrong_path_is_refused_at_once_with_the_blocks_submodules(synth, tmp_path):
    res = _extract(synth, tmp_path / "bad", "--layers", "1", "--tap", "atention")
    assert res.exit_code == 2
    assert "did you mean 'attention'" in res.output and "mlp" in res.output
    assert not list((tmp_path / "bad").glob("L*/*.safetensors"))


def test_a_backbone_without_block_hooks_and_the_final_layer_are_refused(synth, tmp_path):
    from vidprobe.cli import app

    res = CliRunner().invoke(app, ["extract", "-b", "pixels", "-d", str(synth), "-o", str(tmp_path / "px"),
                                   "--quiet", "--tap", "conv"])
    assert res.exit_code == 2 and "does not read its layers through block hooks" in res.output
    res = _extract(synth, tmp_path / "last", "--layers", "-1", "--tap", "attention")
    assert res.exit_code == 2 and "layer -1" in res.output
    assert not (tmp_path / "last" / "manifest.json").exists()  # refused before the store is made
