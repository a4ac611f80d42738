"""Security: no pickle anywhere in src/, trust_remote_code only from the user, safetensors on disk, no path escapes.

Path escapes through annotation *file paths* are tested with the loaders
(test_co3d.py::test_bad_annotation_names_file_and_field: ``../`` and absolute
image/depth paths; test_dl3dv.py::test_bad_json_missing_and_escaping_images);
video ids with ``..`` or ``/`` in the feature store:
test_feature_store.py::test_bad_video_ids_refused. Here: a CO3D sequence
name that tries to steer the labels-file path out of the labels directory.
"""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SRC = Path(__file__).resolve().parents[1] / "src" / "vidprobe"
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def scan_source(text: str, name: str) -> list[str]:
    """Every unsafe deserialisation or forced remote code in one module's source."""
    bad = []
    tree = ast.parse(text, filename=name)
    for node in ast.walk(tree):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            bad += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            bad.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            fn = _dotted(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            if (fn.endswith("torch.load") or fn == "load" and "weights_only" in kw) and not _is_true(kw.get("weights_only")):
                bad.append(f"{where}: {fn}(...) without weights_only=True")
            if fn.endswith("torch.save"):
                bad.append(f"{where}: torch.save (pickle) - write safetensors")
            if fn.split(".")[-1] == "load" and _is_true(kw.get("allow_pickle")):
                bad.append(f"{where}: {fn}(allow_pickle=True)")
            if fn.endswith("yaml.load") and "Safe" not in ast.unparse(kw.get("Loader", ast.Constant(None))) or fn.endswith("yaml.unsafe_load"):
                bad.append(f"{where}: {fn} without a safe loader")
            for k in node.keywords:
                # a variable (the user's option) is fine; any literal other than False is not
                if k.arg == "trust_remote_code" and isinstance(k.value, ast.Constant) and k.value.value is not False:
                    bad.append(f"{where}: trust_remote_code={k.value.value!r} hard-coded")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + list(node.args.defaults) + list(node.args.kw_defaults)
            for a, d in zip(args, defaults):
                if a.arg == "trust_remote_code" and d is not None and not (isinstance(d, ast.Constant) and d.value in (False, None)):
                    bad.append(f"{where}: {node.name}(trust_remote_code=...) must default to False")
    return bad


def test_scanner_catches_each_pattern():
    cases = {
        "import pickle": 1,
        "from dill import loads": 1,
        "import torch\ntorch.load('x')": 1,
        "import torch\ntorch.load('x', weights_only=False)": 1,
        "import torch\ntorch.load('x', weights_only=True)": 0,
        "import torch\ntorch.save({}, 'x')": 1,
        "import numpy as np\nnp.load('x', allow_pickle=True)": 1,
        "import numpy as np\nnp.load('x')": 0,
        "import yaml\nyaml.load(s)": 1,
        "import yaml\nyaml.safe_load(s)": 0,
        "M.from_pretrained('x', trust_remote_code=True)": 1,
        "M.from_pretrained('x', trust_remote_code=False)": 0,
        "def f(trust_remote_code=False):\n    M.from_pretrained('x', trust_remote_code=trust_remote_code)": 0,
        "def f(trust_remote_code=True):\n    pass": 1,
    }
    for src, n in cases.items():
        assert len(scan_source(src, "t.py")) == n, (src, scan_source(src, "t.py"))


def test_no_pickle_or_forced_remote_code_in_src():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20, f"source tree not found at {SRC}"
    bad = [b for f in files for b in scan_source(f.read_text(), str(f.relative_to(SRC.parent)))]
    assert not bad, "unsafe patterns:\n" + "\n".join(bad)


def _not_torch_loadable(path: Path) -> None:
    """The bytes are the safetensors format (u64 header length + JSON header), not torch's zip or a raw pickle.

    (torch >= 2.13 ``torch.load`` reads safetensors files too, so "torch.load fails" is no test.)
    """
    raw = path.read_bytes()
    assert raw[:2] != b"PK" and raw[:1] != b"\x80", f"{path}: a torch zip/pickle file"
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert all("dtype" in v and "data_offsets" in v for k, v in header.items() if k != "__metadata__"), path


def test_files_on_disk_are_safetensors(tmp_path):
    from vidprobe.data.labels import LabelsFile, write_labels_from_clip
    from vidprobe.data.synthetic import generate_clip
    from vidprobe.features.store import write_feature_file
    from vidprobe.probe.train import TrainConfig, save_checkpoint

    feat = tmp_path / "f.safetensors"
    write_feature_file(feat, torch.randn(2, 3, 4, 8), torch.tensor([0, 1, 1]), {"video_id": "v"}, "fp16")
    assert set(load_file(str(feat))) == {"features", "frame_index"}
    _not_torch_loadable(feat)

    lab = write_labels_from_clip(tmp_path / "l.safetensors", generate_clip("orbit", 0, num_frames=2, hw=(6, 8)))
    assert "depth" in load_file(str(lab)) and LabelsFile(lab).num_frames == 2
    _not_torch_loadable(lab)

    model = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(1, 4)).sum().backward()
    opt.step()
    ck = save_checkpoint(tmp_path / "run", model, opt, None, 1, 0, TrainConfig(), keep=1)
    files = sorted(p for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert files and all(p.suffix in (".safetensors", ".json") for p in files), files
    for p in files:
        if p.suffix == ".safetensors":
            load_file(str(p))
            _not_torch_loadable(p)
        else:
            json.loads(p.read_text())
    assert torch.equal(load_file(str(ck / "model.safetensors"))["weight"], model.weight.detach())


def test_co3d_sequence_name_cannot_steer_the_labels_path(tmp_path):
    from vidprobe.data.co3d import Co3dDataset, write_co3d
    from vidprobe.data.labels import write_labels_from_clip
    from vidprobe.data.synthetic import generate_clip

    root = tmp_path / "co3d"
    clips = [generate_clip("orbit", seed=s, num_frames=2, hw=(24, 32)) for s in (7, 8)]
    write_co3d(clips, root, "cat", sequence_names=["s0", "s1"])
    ann_path = root / "cat" / "frame_annotations.jgz"
    ann = json.loads(gzip.decompress(ann_path.read_bytes()))
    for e in ann:
        if e["sequence_name"] == "s1":
            e["sequence_name"] = "../../evil"
    ann_path.write_bytes(gzip.compress(json.dumps(ann).encode()))
    labels = tmp_path / "labels"
    write_labels_from_clip(labels / "cat" / "s0.safetensors", clips[0])
    bait = labels / "cat" / "../../evil.safetensors"  # where a naive join would look
    write_labels_from_clip(bait, clips[1])
    ds = Co3dDataset(root, labels_dir=labels)
    evil = [v for v in ds.videos() if "evil" in v]
    for vid in evil:
        with pytest.raises(Exception, match="sequence|video id"):
            ds.load(vid, [0])
    rep = ds.scan()
    assert rep.ok == ["cat/s0"]
    assert all(v in rep.skipped for v in evil)
    assert ds.load("cat/s0", [0, 1]).frame_ids.tolist() == clips[0].frame_ids.tolist()
