"""Named resize kernels (vidprobe.backbones.resize) against PIL and torch themselves."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vidprobe.backbones.resize import RESIZE_KERNELS, resize_video


def _frames(T=2, H=21, W=34, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (T, 3, H, W), generator=g).float() / 255  # exact 8-bit values, as decoded files


@pytest.mark.parametrize("kernel,flt", [("pil-lanczos", Image.LANCZOS), ("pil-bicubic", Image.BICUBIC),
                                        ("pil-bilinear", Image.BILINEAR)])
def test_pil_kernels_equal_pil_on_the_decoded_files(kernel, flt):
    v = _frames()
    out = resize_video(v, (13, 20), kernel)
    for t in range(v.shape[0]):
        u8 = (v[t].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        ref = np.asarray(Image.fromarray(u8).resize((20, 13), resample=flt)).astype(np.float32) / 255
        np.testing.assert_array_equal(out[t].permute(1, 2, 0).numpy(), ref)


def test_torch_kernels():
    v = _frames()
    ref = F.interpolate(v, size=(13, 20), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(resize_video(v, (13, 20)), ref, rtol=0, atol=0)
    noaa = F.interpolate(v, size=(13, 20), mode="bilinear", align_corners=False, antialias=False)
    torch.testing.assert_close(resize_video(v, (13, 20), "bilinear-noaa"), noaa, rtol=0, atol=0)
    assert not torch.equal(ref, noaa)
    assert float(resize_video(v, (13, 20), "bicubic").min()) >= 0


def test_kernels_differ_and_identity_at_same_size():
    v = _frames()
    outs = {k: resize_video(v, (13, 20), k) for k in RESIZE_KERNELS}
    assert len({o.numpy().tobytes() for o in outs.values()}) == len(RESIZE_KERNELS)
    for k in RESIZE_KERNELS:
        assert resize_video(v, (21, 34), k) is v


def test_unknown_kernel_is_named():
    with pytest.raises(ValueError, match="unknown resize kernel 'nearest'"):
        resize_video(_frames(), (4, 4), "nearest")
