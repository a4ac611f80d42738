from typer.testing import CliRunner

import torch
import torch.nn.functional as F

from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.cli import _load, app
from vidprobe.consistency import consistency_scores
from vidprobe.data.synthetic import write_synthetic_dataset
from vidprobe.features.extract import extract_dataset
from vidprobe.results import ResultsDB


class WorldPointCode:
    """Features that ARE the ground truth: a Fourier code of each patch's world point (perfectly view-consistent)."""

    spec = BackboneSpec(name="worldcode", family="test", model_id=None, num_layers=1, default_layer=1,
                        input_hw=(56, 98), num_frames=None, frame_layout="per-frame")

    def extract(self, video, layers, timesteps=(None,), clip=None):
        pts = F.avg_pool2d(clip.world_points().permute(0, 3, 1, 2), 7).permute(0, 2, 3, 1)  # [T,8,14,3]
        freqs = torch.tensor([1.0, 2.0, 4.0, 8.0])
        ang = pts[..., None] * freqs
        code = torch.cat([ang.sin(), ang.cos()], -1).flatten(-2)
        return FeatureSet({(1, None): code}, torch.arange(video.shape[0]))


def test_ground_truth_features_are_more_consistent_than_random(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data", 4, num_frames=25, hw=(56, 98), progress=False, test_fraction=0.5)
    hw = {"height": 56, "width": 98}
    extract_dataset(WorldPointCode(), data, tmp_path / "f_oracle", [1], [None], progress=False)
    extract_dataset("random-dinov2", data, tmp_path / "f_rand", [1], [None], backbone_kwargs={**hw, "tiny": True}, progress=False)
    o = consistency_scores(tmp_path / "f_oracle", data, max_frame=25, progress=False)
    r = consistency_scores(tmp_path / "f_rand", data, max_frame=25, progress=False)
    assert o["backbone"] == "worldcode" and o["videos"] == 2
    assert o["metrics"]["corr_err_px"] < 0.5 * r["metrics"]["corr_err_px"]
    _load()
    res = CliRunner().invoke(app, ["consistency", "-f", str(tmp_path / "f_oracle"), "-d", str(data), "--db", str(tmp_path / "r.db"),
                                   "--out", str(tmp_path / "c.json")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c.json").exists()
    with ResultsDB(tmp_path / "r.db") as db:
        (run,) = db.runs(kind="consistency", status="done")
        assert db.get_metrics(run["run_id"])["corr_err_px"] == o["metrics"]["corr_err_px"]
