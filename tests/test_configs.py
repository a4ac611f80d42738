"""Every shipped experiment config parses, names registered backbones and valid TrainConfig fields, and plans cells."""

from pathlib import Path

import pytest
import yaml

from vidprobe.backbones.base import registry
from vidprobe.probe.config import MODE_SETTINGS
from vidprobe.probe.train import TrainConfig, load_config, warmup_steps
from vidprobe.pipeline.sweep import (
    SweepError,
    backbone_entries,
    cell_train_config,
    check_sweep,
    load_sweep,
    plan_cells,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SWEEPS = sorted((CONFIGS / "paper").glob("*.yaml")) + sorted((CONFIGS / "studies").glob("*.yaml")) + [CONFIGS / "demo_sweep.yaml"]
SWEEPS += sorted((CONFIGS / "new").glob("*.yaml"))  # models added after the paper (tests/test_new_families.py)
# Table 1 rows (plus WAN 1.3B for the scaling study): (registered name, reference layer, timestep, input H, W)
PAPER = {
    "wan2.1-t2v-1.3b": (21, 749, (480, 832)),
    "wan2.1-t2v-14b": (21, 749, (480, 832)),
    "opensora2": (40, 750, (480, 848)),
    "cogvideox-5b-i2v": (21, 749, (480, 720)),
    "aether": (21, 749, (480, 720)),
    "vjepa-vith16-384": (32, None, (480, 832)),  # the last block, before the final LayerNorm
    "dinov2-large": (-1, None, (420, 728)),
    "fast3r": (-1, None, (288, 512)),
}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_parses_and_plans(path):
    cfg = load_sweep(path)
    reg = registry()
    cells = plan_cells(cfg)
    assert cells
    for c in cells:
        assert c.entry.name in reg
        spec = reg[c.entry.name][0]
        assert c.layer == -1 or 1 <= c.layer <= spec.num_layers
        assert (c.timestep is None) == (spec.default_timestep is None)
        tc, h = cell_train_config(cfg, c)  # a complete, valid TrainConfig per cell
        assert isinstance(tc, TrainConfig) and tc.probe["preset"] == c.preset and tc.seed == c.seed and len(h) == 64
    raw = yaml.safe_load(path.read_text())
    assert set(raw["train"]) <= set(TrainConfig.__dataclass_fields__)
    assert len({cell_train_config(cfg, c)[0].out for c in cells}) == len(cells)  # one run dir per cell


@pytest.mark.parametrize("dataset,epochs", [("co3d", 75), ("dl3dv", 100)])
@pytest.mark.parametrize("model", sorted(PAPER))
def test_paper_configs_reproduce_the_reference_settings(model, dataset, epochs):
    cfg = load_sweep(CONFIGS / "paper" / f"{model}_{dataset}.yaml")
    (cell,) = plan_cells(cfg)  # one row = one cell
    layer, t, hw = PAPER[model]
    spec = registry()[model][0]
    assert (cell.layer, cell.timestep, cell.preset, cell.seed) == (layer, t, "reference", 42)
    assert (cell.layer, cell.timestep) == (spec.default_layer, spec.default_timestep)  # agrees with the adapter's spec
    assert (cell.entry.kwargs["height"], cell.entry.kwargs["width"]) == hw == spec.input_hw
    assert cfg["compat"] == "reference" and cfg["labels"]
    tc, _ = cell_train_config(cfg, cell)
    assert tc.compat == "reference"  # the sweep's compat reaches the cell's training config
    assert tc.epochs == epochs and tc.batch_size == 10 and tc.optim.lr == 1e-4 and tc.optim.betas == (0.9, 0.95)
    assert tc.optim.weight_decay == 0.05 and tc.optim.min_lr == 1e-6
    assert (tc.sampler.num_frames, tc.sampler.min_gap, tc.sampler.max_frame, tc.sampler.snap) == (4, 5, 76, 4)
    assert tc.out_hw == (294, 518)
    assert_reference_values(tc)
    # the release's warm-up: 10 of the run's epochs (configs/model/probe.yaml warmup_epochs 10, max_epochs = the
    # trainer's 75 or 100), i.e. 10/75 of the steps on CO3D and 10/100 on DL3DV
    total = 1000 * epochs
    assert warmup_steps(total, tc.optim, tc.epochs) == 10 * total // epochs


def assert_reference_values(tc: TrainConfig) -> None:
    """Every mode-dependent setting holds the release's value."""
    for st in MODE_SETTINGS:
        if st.section in ("probe", "loss"):
            have = getattr(tc, st.section)[st.field]
        else:
            have = getattr({"optim": tc.optim, "sampler": tc.sampler, "train": tc}[st.section], st.field)
        assert have == st.reference, f"{st.section}.{st.field}: {have!r}, the release: {st.reference!r}"


def test_example_train_config_is_the_release_and_each_sweep_passes_its_compat():
    tc = load_config(CONFIGS / "example_train.yaml")
    assert tc.compat == "reference" and tc.epochs == 75
    assert_reference_values(tc)
    for path in SWEEPS:
        cfg = load_sweep(path)
        tc, _ = cell_train_config(cfg, plan_cells(cfg)[0])
        assert tc.compat == cfg.get("compat", "clean"), path
    demo = load_sweep(CONFIGS / "demo_sweep.yaml")
    assert cell_train_config(demo, plan_cells(demo)[0])[0].compat == "clean"  # the demo stays in vidprobe's mode


def test_studies_cover_the_reference_studies():
    def names(study):
        return [(e.label, e.per_frame) for e in backbone_entries(load_sweep(CONFIGS / "studies" / f"{study}.yaml"))]

    heat = backbone_entries(load_sweep(CONFIGS / "studies" / "layer_timestep_heatmap.yaml"))
    assert {e.name for e in heat} == {"wan2.1-t2v-1.3b", "cogvideox-5b-i2v", "opensora2"}
    for e in heat:
        assert len(e.layers) >= 5 and len(e.timesteps) == 3 and registry()[e.name][0].default_layer in e.layers
    assert {n for n, _ in names("model_scaling")} == {"wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "cogvideox-2b", "cogvideox-5b"}
    tr = names("temporal_reasoning")
    assert ("dinov2-large", False) in tr and ("wan2.1-t2v-14b", False) in tr and ("wan2.1-t2v-14b+perframe", True) in tr
    assert len(load_sweep(CONFIGS / "studies" / "temporal_reasoning.yaml")["grid"]["seeds"]) >= 3
    assert load_sweep(CONFIGS / "studies" / "probe_size.yaml")["grid"]["presets"] == ["reference", "small"]
    assert {n for n, _ in names("finetune_3d")} == {"aether", "cogvideox-5b-i2v"}


def test_bad_sweep_configs_are_refused_with_the_field_named(tmp_path):
    base = {"dataset": "d", "out": "o", "grid": {"backbones": ["pixels"]}}
    cases = [
        ({**base, "grid": {"backbones": ["no-such-model"]}}, "no-such-model"),
        ({**base, "typo": 1}, "typo"),
        ({**base, "grid": {"backbones": ["pixels"], "layer": [1]}}, "layer"),
        ({**base, "train": {"epochz": 3}}, "epochz"),
        ({**base, "train": {"epochs": "many"}}, "epochs"),
        ({**base, "train": {"seed": 3}}, "seed"),  # set per cell by the grid
        ({**base, "grid": {"backbones": [{"name": "wan2.1-t2v-1.3b", "layers": [99]}]}}, "layer 99"),
        ({**base, "grid": {"backbones": [{"name": "wan2.1-t2v-1.3b", "timesteps": ["x"]}]}}, "timesteps"),
        ({**base, "grid": {"backbones": ["pixels", "pixels"]}}, "twice"),
        ({**base, "compat": "paper"}, "compat"),
        ({**base, "compat": "reference", "train": {"compat": "clean"}}, "train.compat"),
        ({**base, "train": {"optim": {"warmup_frac": 0.1, "warmup_epochs": 10}}}, "warmup"),
        ({**base, "train": {"sampler": {"method": "random"}}}, "sampler.method"),
        ({**base, "train": {"probe": {"preset": "small"}}}, "grid.presets"),
        ({k: v for k, v in base.items() if k != "dataset"}, "dataset"),
    ]
    for cfg, match in cases:
        p = tmp_path / "s.yaml"
        p.write_text(yaml.safe_dump(cfg))
        with pytest.raises(SweepError, match=match):
            plan_cells(load_sweep(p))
    with pytest.raises(SweepError, match="not found"):
        load_sweep(tmp_path / "missing.yaml")


def test_tau_timesteps_and_overrides(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"dataset": "d", "out": "o", "grid": {"backbones": ["wan2.1-t2v-1.3b", "pixels"], "timesteps": [0.25, 249]}}))
    cells = plan_cells(load_sweep(p, ["grid.seeds=[1,2]", "train.epochs=3"]))
    wan = sorted({c.timestep for c in cells if c.backbone == "wan2.1-t2v-1.3b"})
    assert wan == [249, 750]  # tau 0.25 -> index 750
    assert {c.timestep for c in cells if c.backbone == "pixels"} == {None}  # no timesteps for non-diffusion models
    assert {c.seed for c in cells} == {1, 2} and len(cells) == 2 * 2 + 2
    assert check_sweep(load_sweep(p, ["train.epochs=3"]))["train"]["epochs"] == 3
