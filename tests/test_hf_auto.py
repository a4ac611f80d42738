"""``hf:<repo-or-path>``: any transformers vision / video encoder through AutoModel (backbones/hf_auto.py).

Each architecture is a tiny random config of a REAL transformers class saved with ``save_pretrained`` into
tmp_path (no download); the expected maps are the model's own ``hidden_states`` computed here, from the model
loaded directly with its class, with the prefix count and token layout written out per architecture in this test
(not read from the adapter).
"""

from __future__ import annotations

import json

import pytest
import torch

tf = pytest.importorskip("transformers")

from vidprobe.backbones.base import get_backbone, registry  # noqa: E402
from vidprobe.backbones.hf_auto import UnsupportedModelError  # noqa: E402

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2)


def _configs():
    """name -> (config, model class, prefix tokens, tubelet or None, grid side)."""
    vit = dict(SMALL, intermediate_size=64, image_size=32, patch_size=8)
    return {
        "vit": (tf.ViTConfig(**vit), tf.ViTModel, 1, None, 4),
        "deit": (tf.DeiTConfig(**vit), tf.DeiTModel, 2, None, 4),  # CLS + distillation token
        "beit": (tf.BeitConfig(**vit), tf.BeitModel, 1, None, 4),
        "dinov2-reg": (tf.Dinov2WithRegistersConfig(**SMALL, mlp_ratio=2, image_size=28, patch_size=14,
                                                    num_register_tokens=4), tf.Dinov2WithRegistersModel, 5, None, 2),
        "siglip": (tf.SiglipVisionConfig(**vit), tf.SiglipVisionModel, 0, None, 4),
        "clip": (tf.CLIPVisionConfig(**vit), tf.CLIPVisionModel, 1, None, 4),
        "videomae": (tf.VideoMAEConfig(**vit, num_frames=4, tubelet_size=2), tf.VideoMAEModel, 0, 2, 4),
        "vjepa2": (tf.VJEPA2Config(**SMALL, mlp_ratio=2, crop_size=32, patch_size=8, frames_per_clip=4, tubelet_size=2,
                                   pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=2),
                   tf.VJEPA2Model, 0, 2, 4),
    }


CONFIGS = _configs()
SIGLIP_NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def save(tmp_path, name):
    cfg, cls, *_ = CONFIGS[name]
    torch.manual_seed(0)
    d = tmp_path / name
    cls(cfg).save_pretrained(d)
    if name == "siglip":  # a preprocessor config: its mean/std must be used instead of ImageNet's
        (d / "preprocessor_config.json").write_text(json.dumps(
            {"image_processor_type": "SiglipImageProcessor", "image_mean": SIGLIP_NORM[0],
             "image_std": SIGLIP_NORM[1]}))
    return d


def expected(name, d, video):
    """{1: map, -1: map} from the model itself: hidden_states[1] / last_hidden_state, prefix dropped, reshaped."""
    cfg, cls, prefix, tubelet, side = CONFIGS[name]
    model = cls.from_pretrained(d).eval()
    mean, std = SIGLIP_NORM if name == "siglip" else IMAGENET
    size = 28 if name == "dinov2-reg" else 32
    x = torch.nn.functional.interpolate(video, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        if tubelet is None:
            outs = [model(pixel_values=x, output_hidden_states=True)]
        else:  # clips of 4 frames: [0,1,2,3] and [4,4,4,4] (padded with the last frame)
            key = "pixel_values_videos" if name == "vjepa2" else "pixel_values"
            extra = {"skip_predictor": True} if name == "vjepa2" else {}
            outs = [model(**{key: c[None]}, output_hidden_states=True, **extra)
                    for c in (x[:4], x[[4, 4, 4, 4]])]

    def grid(toks):
        toks = toks[:, prefix:]
        return toks.reshape(-1, side, side, toks.shape[-1])

    res = {1: torch.cat([grid(o.hidden_states[1]) for o in outs]), -1: torch.cat([grid(o.last_hidden_state) for o in outs])}
    if tubelet is not None:  # 2 maps per clip; the second clip's second map serves only padding
        res = {k: v[:3] for k, v in res.items()}
    return res


@pytest.fixture(scope="module")
def video():
    g = torch.Generator().manual_seed(0)
    return torch.rand(5, 3, 32, 32, generator=g)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hf_model_maps_equal_its_own_hidden_states(tmp_path, name, video):
    d = save(tmp_path, name)
    assert not any(n.startswith("hf:") for n in registry())  # never registered one by one
    bb = get_backbone(f"hf:{d}", random_init=False, device="cpu", dtype="fp32")
    fs = bb.extract(video, [1, -1])
    want = expected(name, d, video)
    for layer in (1, -1):
        torch.testing.assert_close(fs.maps[(layer, None)], want[layer], rtol=1e-5, atol=1e-5)
    tubelet = CONFIGS[name][3]
    assert fs.frame_index.tolist() == ([0, 0, 1, 1, 2] if tubelet else [0, 1, 2, 3, 4])
    assert fs.info["model_id"] == str(d) and "revision" in fs.info
    assert bb.spec.frame_layout == fs.info["layout"]


def test_hooked_early_stop_equals_full_pass(tmp_path, video):
    d = save(tmp_path, "vit")
    bb = get_backbone(f"hf:{d}", device="cpu")
    assert bb.blocks is not None  # ViT's encoder.layer outputs are its hidden states
    hooked = bb.extract(video, [1, 2]).maps
    bb.blocks = None  # force the full pass
    full = bb.extract(video, [1, 2]).maps
    for k in hooked:
        torch.testing.assert_close(hooked[k], full[k], rtol=0, atol=0)


def test_random_init_is_the_architecture_with_other_weights(tmp_path, video):
    d = save(tmp_path, "vit")
    a = get_backbone(f"hf:{d}", device="cpu").extract(video, [-1]).maps[(-1, None)]
    bb = get_backbone(f"hf:{d}", device="cpu", random_init=True, seed=1)
    b = bb.extract(video, [-1]).maps[(-1, None)]
    assert a.shape == b.shape and not torch.allclose(a, b)
    assert bb.extract(video, [-1]).info["model_id"] is None


def test_unexplained_token_count_is_refused(tmp_path):
    """Swin's stages downsample: its hidden states are not patch grids of the config's patch size."""
    cfg = tf.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 1], window_size=2)
    tf.SwinModel(cfg).save_pretrained(tmp_path / "swin")
    with pytest.raises(UnsupportedModelError, match=r"hidden_states\[1\].*prefix token.*cannot be derived"):
        get_backbone(f"hf:{tmp_path / 'swin'}", device="cpu")


def test_convolutional_feature_maps_are_refused(tmp_path):
    """ConvNeXt has a patch_size (its stem) but its hidden states are [B, C, H, W] stages, not token sequences."""
    cfg = tf.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32)
    tf.ConvNextModel(cfg).save_pretrained(tmp_path / "convnext")
    with pytest.raises(UnsupportedModelError, match=r"hidden_states\[1\] has shape \(1, 8, 8, 8\)"):
        get_backbone(f"hf:{tmp_path / 'convnext'}", device="cpu")


def test_missing_patch_size_is_refused(tmp_path):
    cfg = tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
    tf.ResNetModel(cfg).save_pretrained(tmp_path / "resnet")
    with pytest.raises(UnsupportedModelError, match="cannot derive the patch size.*'patch_size'"):
        registry()[f"hf:{tmp_path / 'resnet'}"]


def test_unknown_option_and_remote_code_default(tmp_path):
    d = save(tmp_path, "vit")
    with pytest.raises(TypeError, match="tiny"):
        get_backbone(f"hf:{d}", tiny=True)
    assert registry()[f"hf:{d}"][0].options["trust_remote_code"] is False


def test_cli_extract_hf(tmp_path):
    from typer.testing import CliRunner

    from vidprobe.cli import app
    from vidprobe.data.synthetic import write_synthetic_dataset

    d = save(tmp_path, "vit")
    data = write_synthetic_dataset(tmp_path / "data", num_videos=2, num_frames=3, hw=(32, 32), progress=False)
    out = tmp_path / "feats"
    res = CliRunner().invoke(app, ["extract", "-b", f"hf:{d}", "-d", str(data), "-o", str(out), "--layers", "1,-1",
                                   "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    assert len(list(out.rglob("*.safetensors"))) == 4  # 2 videos x 2 layers
    bad = CliRunner().invoke(app, ["extract", "-b", f"hf:{tmp_path / 'nope'}", "-d", str(data), "-o",
                                   str(tmp_path / "f2")])
    assert bad.exit_code != 0 and "cannot resolve backbone" in bad.output
