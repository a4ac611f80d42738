"""VGGT parity with upstream (facebookresearch/vggt) through the golden fixture.

``tests/fixtures/parity/vggt.safetensors`` was written by
``tools/parity/vggt.py`` from upstream's own ``VGGT`` at vidprobe's ``TINY``
config with seeded weights (see its metadata). vidprobe's model is loaded from
the fixture's weights through the same path as the official checkpoint
(``build_model(<dir with model.safetensors>)``: strict key matching), run on
the fixture's frames, and every saved output must agree to 1e-5 relative
(fp32). The release's label post-processing and image preprocessing are
pinned the same way. No upstream code is needed here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vidprobe.backbones import vggt
from vidprobe.nn.dpt import ResidualConvUnit

FIXTURE = Path(__file__).parent / "fixtures" / "parity" / "vggt.safetensors"
NOT_WEIGHTS = ("input.", "output.", "preprocess.")
RTOL = 1e-5


def _read():
    with safe_open(str(FIXTURE), "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


META, TENSORS = _read()
REF = {k[len("output."):]: v for k, v in TENSORS.items() if k.startswith("output.")}
IMAGES = TENSORS["input.images"]  # [1, S, 3, H, W] in [0, 1]


def check(ours: torch.Tensor, ref: torch.Tensor, name: str, rtol: float = RTOL) -> None:
    """Agreement to ``rtol`` relative: elementwise rtol plus an absolute floor of rtol * max|ref|."""
    assert tuple(ours.shape) == tuple(ref.shape), f"{name}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    torch.testing.assert_close(ours.float(), ref.float(), rtol=rtol, atol=rtol * float(ref.abs().max()),
                               msg=lambda m: f"{name}: {m}")


def _config() -> vggt.VGGTConfig:
    cfg = json.loads(META["config"])
    tiny = asdict(vggt.TINY)
    diff = {k: (v, tiny[k]) for k, v in cfg.items() if (list(tiny[k]) if isinstance(tiny[k], tuple) else tiny[k]) != v}
    assert not diff, f"fixture config differs from vggt.TINY (fixture, ours): {diff}"
    # the labeler's resize target = the fixture's width, so its frames enter unresized
    return replace(vggt.TINY, input_width=int(IMAGES.shape[-1]))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("vggt_ckpt")
    save_file({k: v for k, v in TENSORS.items() if not k.startswith(NOT_WEIGHTS)}, str(ckpt / "model.safetensors"))
    return vggt.build_model(str(ckpt), config=_config(), device="cpu")  # the official-checkpoint path, strict


def _outputs(model: vggt.VGGTModel) -> dict[str, torch.Tensor]:
    """vidprobe's counterpart of every fixture output, under the fixture's names."""
    out: dict[str, torch.Tensor] = {}
    agg = model.aggregator
    with torch.no_grad():
        x = ((IMAGES - agg._mean) / agg._std).reshape(-1, *IMAGES.shape[2:])
        out["patch_embed.x_norm_patchtokens"] = agg.patch_embed(x)
        for i, t in enumerate(agg(IMAGES)):
            out[f"aggregator.{i}"] = t
        pred = model(IMAGES)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            for i, t in enumerate(agg(IMAGES)):
                out[f"autocast_bf16.aggregator.{i}"] = t
        # the labeler's bf16 path: aggregator under autocast, heads in fp32
        lowp = model(IMAGES, autocast_dtype=torch.bfloat16)
        for k in ("pose_enc", "depth", "depth_conf"):
            out[f"autocast_bf16.{k}"] = lowp[k]
    for i, p in enumerate(pred["pose_enc_list"]):
        out[f"camera_head.pose_enc.{i}"] = p
    for k in ("depth", "depth_conf", "world_points", "world_points_conf"):
        out[k] = pred[k]
    lab = vggt.VGGTLabeler(model, torch.device("cpu"), None, points_from="depth")(IMAGES[0])
    out["labels.extrinsic"] = lab["extrinsics"]
    out["labels.intrinsic"] = lab["intrinsics"]
    out["labels.world_points_from_depth"] = lab["points"]
    return out


@pytest.fixture(scope="module")
def ours(model):
    return _outputs(model)


def test_fixture_is_upstreams_at_vidprobes_tiny_config():
    assert META["upstream_commit"] == "44b3afbd1869d8bde4894dd8ea1e293112dd5eba"
    assert "plain PyTorch" in META["attention"]
    _config()
    assert FIXTURE.stat().st_size < 2_000_000


def test_fixture_weights_load_strictly(model):
    sd = model.state_dict()
    weights = {k: v for k, v in TENSORS.items() if not k.startswith(NOT_WEIGHTS)}
    assert sorted(sd) == sorted(weights)
    for k, v in weights.items():
        assert torch.equal(sd[k], v), k


@pytest.mark.parametrize("name", sorted(k for k in REF if not k.startswith("autocast_")))
def test_output_matches_upstream(ours, name):
    check(ours[name], REF[name], name)


@pytest.mark.parametrize("name", sorted(k for k in REF if k.startswith("autocast_")))
def test_bf16_autocast_matches_upstream(ours, name):
    # the same ops in the same dtypes as upstream's (fp32 residual stream, fp32 DINO tokens + position
    # table under autocast; heads in fp32 on the aggregator's outputs)
    check(ours[name], REF[name], name)


def test_bf16_labeler_runs_the_heads_in_fp32(model):
    lab = vggt.VGGTLabeler(model, torch.device("cpu"), torch.bfloat16, points_from="depth")(IMAGES[0])
    check(lab["depth"], REF["autocast_bf16.depth"][0, ..., 0], "bf16 labels.depth")
    check(lab["confidence"], REF["autocast_bf16.depth_conf"][0], "bf16 labels.confidence")
    # and bf16 differs from fp32 here, so the comparison above does tell the two paths apart
    assert float((REF["autocast_bf16.depth"] - REF["depth"]).abs().max()) > 1e-3 * float(REF["depth"].abs().max())


def test_labeler_depth_and_confidence_are_the_heads(ours, model):
    lab = vggt.VGGTLabeler(model, torch.device("cpu"), None, points_from="depth")(IMAGES[0])
    check(lab["depth"], REF["depth"][0, ..., 0], "labels.depth")
    check(lab["confidence"], REF["depth_conf"][0], "labels.confidence (depth_conf, as the release's confmaps)")
    assert bool(lab["valid"].all())


@pytest.mark.parametrize("name", sorted(REF))
def test_a_perturbed_output_is_detected(ours, name):
    ref = REF[name]
    bad = ref + 1e-3 * ref.abs().max() * torch.where(ref >= 0, 1.0, -1.0)
    with pytest.raises(AssertionError):
        check(ours[name], bad, name)
    one = ref.clone().reshape(-1)
    one[one.abs().argmax()] *= 1 + 1e-3  # a single element, 1e-3 relative
    with pytest.raises(AssertionError):
        check(ours[name], one.reshape(ref.shape), name)


def _old_rcu_forward(self, x):  # the former skip: adds the raw x (upstream adds relu(x), its in-place ReLU)
    return self.conv2(torch.relu(self.conv1(torch.relu(x)))) + x


def test_raw_x_skip_in_residual_conv_unit_would_fail(model, monkeypatch):
    monkeypatch.setattr(ResidualConvUnit, "forward", _old_rcu_forward)
    with torch.no_grad():
        pred = model(IMAGES)
    for name in ("depth", "depth_conf", "world_points", "world_points_conf"):
        ref = REF[name]
        rel = float((pred[name] - ref).abs().max() / ref.abs().max())
        assert rel > 1e-2, f"{name}: raw-x skip differs by only {rel:.2e} relative: the fixture would not pin it"
        with pytest.raises(AssertionError):
            check(pred[name], ref, name)
    check(pred["pose_enc_list"][-1], REF["camera_head.pose_enc.3"], "camera head (no DPT)")


def _old_dino_forward(self, x):  # the former token assembly: cls / position table cast to the patch dtype
    N, _, H, W = x.shape
    h, w = H // self.patch_size, W // self.patch_size
    t = self.patch_embed(x)
    t = torch.cat([self.cls_token.expand(N, -1, -1).to(t.dtype), t], dim=1) + self._pos(h, w, t.dtype)
    t = torch.cat([t[:, :1], self.register_tokens.expand(N, -1, -1).to(t.dtype), t[:, 1:]], dim=1)
    for blk in self.blocks:
        t = blk(t)
    return self.norm(t)[:, 1 + self.num_register_tokens:]


def test_bf16_token_assembly_in_patch_dtype_would_fail(model, monkeypatch):
    monkeypatch.setattr(vggt.DinoViT, "forward", _old_dino_forward)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        last = model.aggregator(IMAGES)[-1]
    with pytest.raises(AssertionError):
        check(last, REF["autocast_bf16.aggregator.3"], "bf16 aggregator with bf16 position table")
    with torch.no_grad():  # fp32 is unaffected by the casts
        check(model.aggregator(IMAGES)[-1], REF["aggregator.3"], "fp32 aggregator")


def _preprocess_cases():
    if "preprocess" not in META:
        return []
    return sorted(json.loads(META["preprocess"])["result_shapes"])


@pytest.mark.parametrize("case", _preprocess_cases())
def test_preprocess_matches_release_load_and_preprocess_images(case):
    info = json.loads(META["preprocess"])
    src = TENSORS[f"preprocess.{case}.source"]  # [h, w, 3] uint8
    video = src.permute(2, 0, 1)[None].float() / 255.0
    got = vggt.preprocess(video, 518, 14)[0]
    assert list(got.shape) == info["result_shapes"][case]
    s = int(info["stride"])
    q = torch.round(got * 255.0)
    torch.testing.assert_close(q / 255.0, got, rtol=0, atol=1e-7)  # 8-bit values, like ToTensor of a PIL image
    want = TENSORS[f"preprocess.{case}.result"]
    sub = q[:, ::s, ::s]
    assert torch.equal(sub.to(torch.uint8), want), f"{case}: max 8-bit diff {(sub - want.float()).abs().max()}"
