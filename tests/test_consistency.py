"""`vidprobe consistency`: GT-derived features are far more view-consistent than random ones; results land in the DB."""

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from vidprobe.backbones.base import BackboneSpec, FeatureSet
from vidprobe.cli import _load, app
from vidprobe.pipeline.consistency import consistency_scores, record_consistency
from vidprobe.data.synthetic import write_synthetic_dataset
from vidprobe.features.extract import extract_dataset
from vidprobe.results import ResultsDB


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class WorldPointCode:
    """Features that ARE the ground truth: a Fourier code of each patch's world point (perfectly view-consistent)."""

    spec = BackboneSpec(name="worldcode", family="test", model_id=None, num_layers=1, default_layer=1,
                        input_hw=(56, 98), num_frames=None, frame_layout="per-frame")

    def extract(self, video, layers, timesteps=(None,), clip=None):
        pts = F.avg_pool2d(clip.world_points().permute(0, 3, 1, 2), 7).permute(0, 2, 3, 1)  # [T,8,14,3]
        ang = pts[..., None] * torch.tensor([1.0, 2.0, 4.0, 8.0])
        code = torch.cat([ang.sin(), ang.cos()], -1).flatten(-2)
        return FeatureSet({(1, None): code}, torch.arange(video.shape[0]))


class RandomCode(WorldPointCode):
    spec = BackboneSpec(name="randcode", family="test", model_id=None, num_layers=1, default_layer=1,
                        input_hw=(56, 98), num_frames=None, frame_layout="per-frame")

    def extract(self, video, layers, timesteps=(None,), clip=None):
        g = torch.Generator().manual_seed(int(video.sum() * 1000) % 2**31)
        return FeatureSet({(1, None): torch.randn(video.shape[0], 8, 14, 24, generator=g)}, torch.arange(video.shape[0]))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cons")
    data = write_synthetic_dataset(tmp / "data", 4, num_frames=25, hw=(56, 98), progress=False, test_fraction=0.5)
    extract_dataset(WorldPointCode(), data, tmp / "f_oracle", [1], [None], progress=False)
    extract_dataset(RandomCode(), data, tmp / "f_rand", [1], [None], progress=False)
    return tmp, data


def test_ground_truth_features_are_more_consistent_than_random(stores):
    tmp, data = stores
    o = consistency_scores(tmp / "f_oracle", data, max_frame=25, max_queries=200, progress=False)
    r = consistency_scores(tmp / "f_rand", data, max_frame=25, max_queries=200, progress=False)
    assert o["backbone"] == "worldcode" and r["backbone"] == "randcode" and o["videos"] == 2 and not o["failed"]
    assert o["metrics"]["corr_err_px"] < 0.3 * r["metrics"]["corr_err_px"]
    assert o["metrics"]["pck_5px"] > 2 * r["metrics"]["pck_5px"]
    m = o["metrics"]
    assert m["num_pairs"] == 2 * 12 and m["num_queries"] > 0  # every ordered pair of the 4 views of 2 videos
    pcks = [m[f"pck_{t}px"] for t in (1, 2, 5, 10, 20)]
    assert pcks == sorted(pcks) and 0 <= pcks[0] and pcks[-1] <= 1  # PCK grows with the threshold
    # pooled over all queries: the per-video means weighted by their query counts give the pooled mean
    pv = o["per_video"].values()
    assert m["corr_err_px"] == pytest.approx(sum(v["corr_err_px"] * v["num_queries"] for v in pv) / sum(v["num_queries"] for v in pv))
    few = consistency_scores(tmp / "f_oracle", data, max_frame=25, max_queries=200, pairs=3, progress=False)
    assert few["metrics"]["num_pairs"] == 2 * 3


def test_cli_writes_json_and_a_consistency_run_and_skips_it_next_time(stores):
    tmp, data = stores
    _load()
    db = tmp / "r.db"
    args = ["consistency", "-f", str(tmp / "f_oracle"), "-d", str(data), "--db", str(db), "--out", str(tmp / "c.json"),
            "--max-frame", "25", "--max-queries", "200", "--pairs", "4", "--no-progress"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    js = json.loads((tmp / "c.json").read_text())
    assert js["backbone"] == "worldcode" and js["metrics"]["num_pairs"] == 2 * 4
    with ResultsDB(db) as rdb:
        (run,) = rdb.runs(kind="consistency", status="done")
        assert (run["backbone"], run["layer"], run["timestep"]) == ("worldcode", 1, None)  # the probe runs' cell columns
        assert rdb.get_metrics(run["run_id"])["corr_err_px"] == pytest.approx(js["metrics"]["corr_err_px"])
        assert set(rdb.clip_metrics(run["run_id"], "corr_err_px")) == set(js["per_video"])
    opts = {"max_queries": 200, "max_videos": None, "frames": 4, "max_frame": 25, "pairs": 4}
    rid = record_consistency(db, tmp / "f_oracle", data, skip_done=True, progress=False, **opts)
    assert rid == run["run_id"]  # same store and options: not recomputed
    rid2 = record_consistency(db, tmp / "f_oracle", data, skip_done=True, progress=False, **{**opts, "pairs": 2})
    assert rid2 != rid
    bad = CliRunner().invoke(app, ["consistency", "-f", str(tmp / "f_oracle"), "-d", str(data), "--split", "nope"])
    assert bad.exit_code == 2 and "nope" in bad.output
