"""What a run's features came from: the ``weights`` label every report row carries.

A label is derived from the feature store's manifest settings
(:func:`vidprobe.features.manifest.store_settings`: ``backbone``,
``model_id``, ``revision``, ``backbone_kwargs`` with ``tiny`` /
``random_init``), never from what a caller says:

=================  ==============================================  ===========================================
kind               label                                           when
=================  ==============================================  ===========================================
``control``        ``control (<backbone>)``                        ``pixels``, ``oracle``, ``random-<arch>``
``tiny``           ``tiny random``                                 ``backbone_kwargs.tiny`` is true
``random_init``    ``random init``                                 ``backbone_kwargs.random_init`` is true
``pretrained``     ``pretrained <model_id>@<revision|unpinned>``   otherwise
``unknown``        ``weights unknown``                             nothing recorded to tell
=================  ==============================================  ===========================================

:func:`weights_from_settings` is what ``vidprobe evaluate`` records in the
run's config JSON (``config["weights"]``); :func:`weights_of_run` reads it
back, and for runs recorded before the field existed infers it from what the
run recorded (the feature store named by its training config, if still
readable; a control's backbone name), else ``weights unknown``.

Which runs make one report row, and the facts it states (used by
:func:`vidprobe.report.html.benchmark_table`): :func:`pick_seeds` keeps one
evaluation per training run (its ``last`` checkpoint, else ``best``) and one
training run per seed, so two checkpoints of one run are never two seeds;
:func:`untrained_notes` adds the computed facts "camera head: AUC@30 = 0" and
"Point Err not below the pixels control" (same dataset), and states
"untrained at this budget" when both hold; :func:`weights_notice` is the
notice shown whenever a row is not a pretrained model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["CONTROL_NAMES", "KINDS", "MIN_CLIPS", "UNKNOWN", "is_control", "n_clips", "pick_seeds", "untrained_notes",
           "weights_from_settings", "weights_notice", "weights_of_run"]

#: the controls by name (``random-<arch>`` too); ``tests/test_report_honesty.py`` checks these against the registry
CONTROL_NAMES = frozenset({"pixels", "oracle"})
KINDS = ("pretrained", "random_init", "tiny", "control", "unknown")
MIN_CLIPS = 10  # fewer test clips than this: the row says so (its interval rests on very few clips)
UNKNOWN = {"kind": "unknown", "label": "weights unknown", "model_id": None, "revision": None, "source": "not recorded"}


def is_control(backbone: str | None) -> bool:
    """``pixels``, ``oracle`` and ``random-<arch>`` are controls (no pretrained model)."""
    b = str(backbone or "")
    return b in CONTROL_NAMES or b.startswith("random-")


def _true(v: Any) -> bool:
    return v is True or (isinstance(v, str) and v.strip().lower() in ("1", "true", "yes"))


def weights_from_settings(settings: dict[str, Any] | None, source: str = "store manifest") -> dict[str, Any]:
    """``{"kind", "label", "model_id", "revision", "source"}`` from a store manifest's ``settings`` mapping."""
    if not isinstance(settings, dict) or not settings:
        return dict(UNKNOWN)
    backbone = settings.get("backbone")
    kw = settings.get("backbone_kwargs") or {}
    kw = kw if isinstance(kw, dict) else {}
    model_id, revision = settings.get("model_id"), settings.get("revision")
    base = {"model_id": model_id, "revision": revision, "source": source}
    if is_control(backbone):
        return {"kind": "control", "label": f"control ({backbone})", **base}
    if _true(kw.get("tiny")):
        return {"kind": "tiny", "label": "tiny random", **base}
    if _true(kw.get("random_init")):
        return {"kind": "random_init", "label": "random init", **base}
    if not model_id:
        return {**dict(UNKNOWN), "source": f"{source} (no model_id)"}
    return {"kind": "pretrained", "label": f"pretrained {model_id}@{revision or 'unpinned'}", **base}


def _from_store(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    from vidprobe.features.manifest import read_manifest

    try:
        m = read_manifest(Path(path))
    except Exception:  # noqa: BLE001 - a moved or broken store only means "unknown"
        return None
    return weights_from_settings(m.get("settings"), source=f"inferred from {path}/manifest.json")


def weights_of_run(run: dict[str, Any]) -> dict[str, Any]:
    """The weights record of a results-DB run: the recorded one, else inferred, else ``weights unknown``."""
    cfg = run.get("config") if isinstance(run.get("config"), dict) else {}
    w = cfg.get("weights")
    if isinstance(w, dict) and w.get("kind") in KINDS and w.get("label"):
        return w
    train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    got = _from_store(train.get("features"))
    if got is not None and got["kind"] != "unknown":
        return got
    if is_control(run.get("backbone")):
        return {"kind": "control", "label": f"control ({run['backbone']})", "model_id": None, "revision": None,
                "source": "inferred from the backbone name"}
    return dict(UNKNOWN)


# -- which runs make a report row, and the facts the row states -----------------------------------------


def _training_run(r: dict):
    """What identifies a run's training run: the evaluated run directory, else its checkpoint's, else its name."""
    ev = (r.get("config") or {}).get("eval") if isinstance(r.get("config"), dict) else None
    if isinstance(ev, dict) and ev.get("run_dir"):
        return str(ev["run_dir"])
    if r.get("checkpoint"):
        return str(Path(r["checkpoint"]).parent.parent)
    return r.get("name") or r.get("run_id")


def pick_seeds(rs: list[dict]) -> list[dict]:
    """One evaluation per seed: per training run its ``last`` checkpoint's (else ``best``), latest first;
    per seed the latest training run. Two checkpoints of one training run are never two seeds."""
    chosen = []
    by_train: dict = {}
    for r in rs:
        by_train.setdefault(_training_run(r), []).append(r)
    for group in by_train.values():
        last = [g for g in group if (g.get("checkpoint_kind") or "last") == "last"] or group
        chosen.append(max(last, key=lambda g: g.get("run_id") or 0))
    by_seed: dict = {}
    for r in chosen:
        k = r.get("seed")
        if k not in by_seed or (r.get("run_id") or 0) > (by_seed[k].get("run_id") or 0):
            by_seed[k] = r
    return sorted(by_seed.values(), key=lambda g: g.get("run_id") or 0)


def n_clips(r: dict) -> int | None:
    n = (r.get("metrics") or {}).get("num_clips")
    if n is not None:
        return int(n)
    return len(r["clips"]) if r.get("clips") else None


def untrained_notes(rows: list[dict]) -> None:
    """Add the computed 'untrained head' facts: AUC@30 = 0, Point Err not below the pixels control."""
    pixels = {ds: e.get("point_err") for r in rows if r["backbone"] == "pixels" for ds, e in r["estimates"].items()}
    for row in rows:
        for ds, e in row["estimates"].items():
            facts = []
            if e.get("auc_30") is not None and e["auc_30"] <= 0.0:
                facts.append("camera head: AUC@30 = 0")
            ref = pixels.get(ds)
            if row["backbone"] != "pixels" and ref is not None and e.get("point_err") is not None and e["point_err"] >= ref:
                facts.append(f"Point Err {e['point_err'] * 10:.3f} not below the pixels control's {ref * 10:.3f}")
            if len(facts) == 2:
                facts.insert(0, "untrained at this budget")
            row["notes"].setdefault(ds, []).extend(facts)


def weights_notice(rows: list[dict]) -> str | None:
    """The notice computed from the data: which rows are not pretrained models (None when all are)."""
    odd = [r for r in rows if r["group"] != "pretrained"]
    if not odd:
        return None
    kinds: dict[str, list[str]] = {}
    for r in odd:
        kinds.setdefault(r["weights"]["label"], []).append(str(r["backbone"]))
    what = "; ".join(f"{k}: {', '.join(sorted(set(v)))}" for k, v in kinds.items())
    return (f"{len(odd)} of {len(rows)} table rows are not pretrained models ({what}). Their numbers describe "
            "those weights only, not any pretrained or published model of the same name.")
