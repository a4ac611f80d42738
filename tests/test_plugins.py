"""Third-party backbones through the ``vidprobe.backbones`` entry-point group.

The example plugin under tests/plugins/ is pip-installed (its own pyproject, built by setuptools) into a
temporary site directory, and vidprobe run in a subprocess with that directory on its path finds it by its
entry point alone: listed, extracted into a store, refused when broken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = Path(__file__).parent / "plugins" / "vidprobe-plugin-example"


def _install(src: Path, target: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
           "--target", str(target), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def _vidprobe(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "vidprobe.cli", *args], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    _install(PLUGIN, target)
    return target


def test_an_installed_plugin_is_listed_with_its_source(site):
    done = _vidprobe(site, "backbones", "--json")
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)}
    assert rows["plugin-conv"]["source"] == "plugin vidprobe-plugin-example"
    assert rows["plugin-conv"]["layers"] == "1..2"
    assert rows["dinov2-small"]["source"] == "vidprobe"
    # without the plugin on the path, the name is unknown
    bare = subprocess.run([sys.executable, "-m", "vidprobe.cli", "backbones", "--json"], capture_output=True, text=True)
    assert "plugin-conv" not in {r["name"] for r in json.loads(bare.stdout)}


def test_a_plugin_backbone_is_probed_like_a_builtin_one(site, tmp_path):
    from vidprobe.data.synthetic import write_synthetic_dataset
    from vidprobe.features.store import FeatureStore

    data = tmp_path / "synth"
    write_synthetic_dataset(data, num_videos=2, num_frames=4, hw=(32, 48), seed=0, progress=False)
    out = tmp_path / "store"
    done = _vidprobe(site, "extract", "-b", "plugin-conv", "-d", str(data), "-o", str(out), "--layers", "1,2",
                     "-a", "channels=4", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    store = FeatureStore(out)
    assert sorted(store.keys()) == [(1, None), (2, None)]
    vid = store.videos(2, None)[0]
    feats = store.read(vid, 2, None, [0, 1, 2, 3])
    assert feats.shape == (4, 4, 6, 16)  # 32x48 input, stride 4 then 2: a 4x6 grid of 16 channels
    assert store.channels(1, None) == 4  # the plugin's own option reached its builder


def test_a_broken_plugin_is_skipped_and_named_without_hiding_the_others(site, tmp_path):
    broken = tmp_path / "broken"
    (broken / "src" / "vidprobe_broken_plugin").mkdir(parents=True)
    (broken / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "vidprobe-broken-plugin"
        version = "0.0.1"
        [project.entry-points."vidprobe.backbones"]
        broken = "vidprobe_broken_plugin:register_backbones"
        [tool.setuptools.packages.find]
        where = ["src"]
    '''))
    (broken / "src" / "vidprobe_broken_plugin" / "__init__.py").write_text(
        "def register_backbones():\n    raise RuntimeError('needs a licence server')\n")
    target = tmp_path / "site2"
    _install(broken, target)
    env_site = Path(os.pathsep.join([str(target), str(site)]))
    done = _vidprobe(env_site, "backbones", "--json")
    assert done.returncode == 0, done.stderr
    names = {r["name"] for r in json.loads(done.stdout)}
    assert "plugin-conv" in names and "dinov2-small" in names
    assert "vidprobe-broken-plugin" in done.stderr and "needs a licence server" in done.stderr
