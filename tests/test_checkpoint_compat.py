"""Runs checkpointed before the probe took VGGT's parameter names and shapes still load and resume."""

import torch

from vidprobe.probe.checkpoint import optimizer_from_tensors, optimizer_to_tensors


def test_optimizer_moments_of_a_reshaped_parameter_are_reshaped_on_load():
    p = torch.nn.Parameter(torch.randn(1, 1, 9))  # the camera head's empty pose, now [1, 1, 9] (was [9])
    q = torch.nn.Parameter(torch.randn(4))
    opt = torch.optim.AdamW([p, q], lr=1e-2)
    (p.square().sum() + q.sum()).backward()
    opt.step()
    tensors, meta = optimizer_to_tensors(opt)
    old = {k: (v.reshape(9) if k.startswith("0.") and v.numel() == 9 else v) for k, v in tensors.items()}
    assert any(v.shape == (9,) for v in old.values())  # the checkpoint as an old run wrote it
    fresh = torch.optim.AdamW([p, q], lr=1e-2)
    optimizer_from_tensors(fresh, old, meta)
    assert fresh.state[p]["exp_avg"].shape == p.shape
    torch.testing.assert_close(fresh.state[p]["exp_avg"], opt.state[p]["exp_avg"])
    fresh.zero_grad()
    (p.square().sum() + q.sum()).backward()
    fresh.step()  # would raise on a [9] moment against a [1, 1, 9] gradient
