"""Controls: pixels, random-<arch>, oracle."""

from __future__ import annotations

import math

import pytest
import torch

from vidprobe.backbones import get_backbone, registry
from vidprobe.backbones.controls import ORACLE_CHANNELS, RANDOM_OF, patchify
from vidprobe.data.clip import Clip


def test_pixels_patchify_exact():
    T, p = 2, 14
    v = torch.rand(T, 3, 28, 42)
    fs = get_backbone("pixels", height=28, width=42).extract(v, [1, -1])
    f = fs.maps[(1, None)]
    assert f.shape == (T, 2, 3, 3 * p * p)
    assert fs.frame_index.tolist() == [0, 1]
    # patch (i, j) of frame t is the flattened [3, 14, 14] block of pixels
    for t, i, j in [(0, 0, 0), (1, 1, 2), (0, 1, 1)]:
        block = v[t, :, i * p : (i + 1) * p, j * p : (j + 1) * p].reshape(-1)
        torch.testing.assert_close(f[t, i, j], block, rtol=0, atol=0)
    torch.testing.assert_close(fs.maps[(-1, None)], f)


def test_pixels_default_grid_and_other_patch():
    v = torch.rand(1, 3, 54, 96)
    assert get_backbone("pixels").extract(v, [1]).maps[(1, None)].shape == (1, 30, 52, 588)  # the DINOv2 grid
    f = get_backbone("pixels", patch=8, height=32, width=48).extract(v, [1]).maps[(1, None)]
    assert f.shape == (1, 4, 6, 192)
    with pytest.raises(ValueError, match="out of range"):
        get_backbone("pixels").extract(v, [2])
    with pytest.raises(ValueError, match="multiple"):
        patchify(torch.zeros(1, 3, 10, 14), 14)


@pytest.mark.parametrize("family", sorted(RANDOM_OF))
def test_random_arch_controls(family):
    name = f"random-{family}"
    spec = registry()[name][0]
    base = registry()[RANDOM_OF[family]][0]
    assert (spec.num_layers, spec.input_hw, spec.frame_layout) == (base.num_layers, base.input_hw, base.frame_layout)
    kw = dict(tiny=True)
    if family == "dinov2":
        kw.update(height=28, width=42)
    if family == "vjepa":
        kw.update(height=32, width=48)
    v = torch.rand(5, 3, 32, 48)
    a = get_backbone(name, **kw)
    assert a.spec.name == name
    fa = a.extract(v, [1])
    fb = get_backbone(name, **kw).extract(v, [1])  # same seed -> same weights -> same features
    fc = get_backbone(name, seed=1, **kw).extract(v, [1])
    torch.testing.assert_close(fa.maps[(1, None)], fb.maps[(1, None)], rtol=0, atol=0)
    assert not torch.allclose(fa.maps[(1, None)], fc.maps[(1, None)])
    assert fa.frame_index.numel() == 5 and fa.maps[(1, None)].dim() == 4


def make_clip(H=28, W=42, depth0=2.0, depth1=4.0):
    """Two frames: frame 0 at the origin looking down +z; frame 1 moved to (1,0,0) and yawed 90 degrees."""
    K = torch.tensor([[20.0, 0, (W - 1) / 2], [0, 20.0, (H - 1) / 2], [0, 0, 1]])
    c, s = math.cos(math.pi / 2), math.sin(math.pi / 2)
    R1 = torch.tensor([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # world -> cam 1
    C1 = torch.tensor([1.0, 0, 0])
    ext = torch.stack([torch.eye(3, 4), torch.cat([R1, (-R1 @ C1)[:, None]], 1)])
    depth = torch.stack([torch.full((H, W), depth0), torch.full((H, W), depth1)])
    valid = torch.ones(2, H, W, dtype=torch.bool)
    valid[0, :14, :14] = False  # patch (0,0) of frame 0 has no depth
    depth[0, :14, :14] = 0
    return Clip(images=torch.rand(2, 3, H, W), depth=depth, valid=valid, intrinsics=K.expand(2, 3, 3).clone(),
                extrinsics=ext, frame_ids=torch.arange(2))


def test_oracle_channels_from_ground_truth():
    clip = make_clip()
    bb = get_backbone("oracle", height=28, width=42)
    fs = bb.extract(clip.images, [1], clip=clip)
    f = fs.maps[(1, None)]
    assert f.shape == (2, 2, 3, len(ORACLE_CHANNELS)) == (2, 2, 3, 14)
    assert fs.frame_index.tolist() == [0, 1]
    # the scale: mean distance of frame 0's valid points to its camera
    pts0 = clip.world_points()[0][clip.valid[0]]
    scale = float(pts0.norm(dim=-1).mean())
    # depth stats of a fully valid patch of a constant-depth frame
    torch.testing.assert_close(f[0, 1, 1, 0:4], torch.tensor([2 / scale, 2 / scale, 2 / scale, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(f[1, 0, 0, 0:3], torch.full((3,), 4 / scale), atol=1e-5, rtol=0)
    # the patch without depth: valid fraction 0, depth and point channels 0
    assert float(f[0, 0, 0, 4]) == 0.0 and f[0, 0, 0, [0, 1, 2, 3, 8, 9, 10]].abs().max() == 0
    assert float(f[0, 1, 1, 4]) == 1.0
    # camera centres in frame-0 coordinates, scaled
    torch.testing.assert_close(f[0, 0, 0, 11:14], torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(f[1, 1, 2, 11:14], torch.tensor([1.0, 0, 0]) / scale, atol=1e-5, rtol=0)
    # rays: unit length; on average along each camera's optical axis R^T z, in frame-0 axes
    rays = f[..., 5:8]
    torch.testing.assert_close(rays.norm(dim=-1), torch.ones(2, 2, 3), atol=1e-5, rtol=0)
    R1 = clip.extrinsics[1, :3, :3]
    axis1 = R1.T @ torch.tensor([0.0, 0, 1])
    mean_ray1 = torch.nn.functional.normalize(rays[1].reshape(-1, 3).mean(0), dim=0)
    assert float(mean_ray1 @ axis1) > 0.97
    mean_ray0 = torch.nn.functional.normalize(rays[0].reshape(-1, 3).mean(0), dim=0)
    assert float(mean_ray0 @ torch.tensor([0.0, 0, 1])) > 0.97
    # mean point of a full patch = mean of its world points / scale
    pts1 = clip.world_points()[1, 14:28, 28:42].reshape(-1, 3).mean(0) / scale
    torch.testing.assert_close(f[1, 1, 2, 8:11], pts1, atol=1e-5, rtol=0)


def test_oracle_needs_clip():
    clip = make_clip()
    bb = get_backbone("oracle", height=28, width=42)
    with pytest.raises(ValueError, match="needs the clip"):
        bb.extract(clip.images, [1])
    with pytest.raises(ValueError, match="'clip'"):
        bb.extract(clip.images[:1], [1], clip=clip)
