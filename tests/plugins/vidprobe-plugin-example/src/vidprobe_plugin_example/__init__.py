"""An in-house model, registered with vidprobe from outside it (entry point group ``vidprobe.backbones``).

``register_backbones`` is the whole contract: it registers a :class:`~vidprobe.backbones.base.BackboneSpec`
and its builder, here through vidprobe's :class:`~vidprobe.backbones.builder.Family` skeleton, so the
backbone takes the standard build options (``device``, ``height``, ``width``, ``seed``) plus its own.
"""

from dataclasses import dataclass

import torch

from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.backbones.builder import BuildContext, Family
from vidprobe.backbones.common import per_frame_index, resize_video, start_extract
from vidprobe.backbones.loading import freeze


@dataclass(frozen=True)
class PluginConvOptions:
    channels: int = 8


class PluginConv:
    def __init__(self, spec, net, input_hw, device):
        self.spec, self.net, self.input_hw, self.device = spec, net, input_hw, device
        self.num_layers = len(net)

    @torch.inference_mode()
    def extract(self, video, layers, timesteps=(None,), clip=None) -> FeatureSet:
        resolved = start_extract(self, video, layers, timesteps)
        x, outs = resize_video(video.to(self.device), self.input_hw), []
        for block in self.net:
            x = torch.relu(block(x))
            outs.append(x)
        maps = {(req, None): outs[b - 1].permute(0, 2, 3, 1).float().cpu() for req, b in resolved}
        info = {"input_hw": self.input_hw, "grid": tuple(outs[-1].shape[-2:]), "layout": self.spec.frame_layout,
                "model_id": None}
        return FeatureSet(maps, per_frame_index(video.shape[0]), info)


def _make(ctx: BuildContext, own: PluginConvOptions) -> PluginConv:
    with ctx.seeded():
        net = torch.nn.Sequential(torch.nn.Conv2d(3, own.channels, 4, 4), torch.nn.Conv2d(own.channels, 16, 2, 2))
    return PluginConv(ctx.spec, freeze(net.to(ctx.device)), ctx.input_hw(), ctx.device)


FAMILY = Family("plugin-conv", _make, options=("device", "height", "width", "seed"), own=PluginConvOptions)


def register_backbones() -> None:
    FAMILY.register(BackboneSpec(name="plugin-conv", family="plugin-conv", model_id=None, num_layers=2,
                                 default_layer=-1, input_hw=(32, 48), num_frames=None, frame_layout="per-frame",
                                 description="example third-party backbone (tests/plugins)"))
