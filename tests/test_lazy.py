"""Lazy package exports: the names resolve on first use, unknown names fail as ordinary attributes do."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("package,name,module", [("vidprobe.data", "Clip", "vidprobe.data.clip"),
                                                 ("vidprobe.probe", "Probe", "vidprobe.probe.model"),
                                                 ("vidprobe.features", "FeatureStore", "vidprobe.features.store"),
                                                 ("vidprobe.backbones", "registry", "vidprobe.backbones.base")])
def test_an_export_is_imported_on_first_use_only(package, name, module):
    code = (f"import sys, {package} as p\nassert {module!r} not in sys.modules\nobj = p.{name}\n"
            f"assert {module!r} in sys.modules and obj is getattr(sys.modules[{module!r}], {name!r})\n"
            f"assert {name!r} in dir(p)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_unknown_name_raises_attribute_error():
    import vidprobe.probe as p

    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        p.Nope  # noqa: B018
    assert not hasattr(p, "Nope")
