from pathlib import Path

import pytest
import yaml

import vidprobe.probe.train as train_mod
from vidprobe.data.synthetic import write_synthetic_dataset
from vidprobe.probe.train import TrainConfig
from vidprobe.results import ResultsDB
from vidprobe.sweep import SweepError, load_sweep, plan_cells, run_sweep, sweep_table

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "paper").glob("*.yaml")) + sorted((CONFIGS / "studies").glob("*.yaml")) + [CONFIGS / "demo_sweep.yaml"], ids=lambda p: p.name)
def test_every_config_parses_and_plans(path):
    cfg = load_sweep(path)
    cells = plan_cells(cfg)  # names registered backbones, or raises
    assert cells
    base = dict(cfg.get("train") or {})
    base.pop("probe", None)
    TrainConfig.from_dict({**base, "features": "x", "dataset": "y"})  # every train field is a TrainConfig field


def test_paper_configs_cover_the_published_table():
    names = {p.stem for p in (CONFIGS / "paper").glob("*.yaml")}
    for bb in ("wan2.1-t2v-14b", "opensora2", "cogvideox-5b-i2v", "aether", "vjepa-vith16-384", "dinov2-large", "fast3r"):
        assert {f"{bb}_co3d", f"{bb}_dl3dv"} <= names
    wan = load_sweep(CONFIGS / "paper" / "wan2.1-t2v-14b_co3d.yaml")
    assert plan_cells(wan)[0].layer == 21 and plan_cells(wan)[0].timestep == 749


def test_bad_sweep_config_is_refused(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"dataset": "d", "out": "o", "grid": {"backbones": ["no-such-model"]}}))
    with pytest.raises(SweepError, match="no-such-model"):
        plan_cells(load_sweep(p))
    p.write_text(yaml.safe_dump({"dataset": "d", "out": "o", "grid": {"backbones": ["pixels"]}, "typo": 1}))
    with pytest.raises(SweepError, match="typo"):
        load_sweep(p)


def test_tiny_sweep_runs_skips_done_cells_and_survives_a_failing_cell(tmp_path, monkeypatch):
    data = write_synthetic_dataset(tmp_path / "data", 5, num_frames=25, hw=(32, 56), progress=False, test_fraction=0.4)
    hw = {"height": 32, "width": 56}
    cfg = {
        "dataset": str(data), "out": str(tmp_path / "sw"),
        "grid": {"backbones": [{"name": "oracle", "kwargs": hw}, {"name": "pixels", "kwargs": hw}], "presets": ["tiny"], "seeds": [1, 2]},
        "train": {"epochs": 100, "max_steps": 3, "batch_size": 2, "out_hw": [16, 28], "device": "cpu",
                  "sampler": {"num_frames": 4, "min_gap": 5, "max_frame": 25, "snap": 4}},
    }
    calls = []
    real_train = train_mod.train

    def counting_train(c, *a, **k):
        calls.append(c.name)
        if c.name.startswith("pixels") and c.seed == 2:
            raise RuntimeError("injected failure")
        return real_train(c, *a, **k)

    monkeypatch.setattr(train_mod, "train", counting_train)
    s = run_sweep(cfg, progress=False, echo=lambda *a: None)
    assert len(s.done) == 3 and len(s.failed) == 1 and "injected failure" in next(iter(s.failed.values()))
    with ResultsDB(tmp_path / "sw" / "results.db") as db:
        assert len(db.runs(status="done", kind="probe")) == 3
    # the second invocation trains only the failed cell again
    calls.clear()
    monkeypatch.setattr(train_mod, "train", real_train)
    s2 = run_sweep(cfg, progress=False, echo=lambda *a: None)
    assert sorted(s2.skipped) == sorted(s.done) and s2.done == ["pixels_L1_Tnone_tiny_s2"]
    rows = sweep_table(tmp_path / "sw" / "results.db")
    by_bb = {r["backbone"]: r for r in rows}
    assert by_bb["oracle"]["seeds"] == 2 and by_bb["pixels"]["seeds"] == 2
    lo, hi = by_bb["oracle"]["point_err_ci"]
    assert lo <= by_bb["oracle"]["point_err"] <= hi
