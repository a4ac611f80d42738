"""`vidprobe backbones`: every registered backbone with its layers, input, frame layout and extras."""

from __future__ import annotations

import json

import typer

app = typer.Typer()

COLUMNS = ("name", "family", "layers", "default", "input HxW", "frames", "frame layout", "extras")


def backbone_rows(family: str | None = None) -> list[dict]:
    """One dict per registered backbone (sorted by family, then name)."""
    from vidprobe.backbones import PLUGIN_SOURCES
    from vidprobe.backbones.base import registry

    rows = []
    for name, (spec, _) in registry().items():
        if family and spec.family != family:
            continue
        default = "last" if spec.default_layer == -1 else str(spec.default_layer)
        if spec.default_timestep is not None:
            default += f" @ t={spec.default_timestep}"
        rows.append({
            "name": name,
            "family": spec.family,
            "layers": f"1..{spec.num_layers}",
            "default": default,
            "input HxW": f"{spec.input_hw[0]}x{spec.input_hw[1]}",
            "frames": "any" if spec.num_frames is None else str(spec.num_frames),
            "frame layout": spec.frame_layout,
            "extras": spec.extras or "-",
            "model_id": spec.model_id,
            "description": spec.description,
            "source": f"plugin {PLUGIN_SOURCES[name]}" if name in PLUGIN_SOURCES else "vidprobe",
        })
    return sorted(rows, key=lambda r: (r["family"] == "control", r["family"], r["name"]))


def format_table(rows: list[dict], columns=COLUMNS) -> str:
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in columns}
    line = lambda vals: "  ".join(str(v).ljust(widths[c]) for c, v in zip(columns, vals)).rstrip()  # noqa: E731
    out = [line(columns), line(["-" * widths[c] for c in columns])]
    out += [line([r[c] for c in columns]) for r in rows]
    return "\n".join(out)


@app.command()
def backbones(
    family: str = typer.Option(None, "--family", "-f", help="Only this family (dinov2, vjepa, vjepa2, videomae, control, ...)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (with model ids and descriptions) instead of a table."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Add the model id / checkpoint and a description."),
) -> None:
    """List the registered backbones: layers, input size, frame layout, default layer/timestep, extras.

    Layers are 1-based block outputs; `-1` (the default "last") is the model's
    final output after its final norm. Extras name the pip extra to install
    (`pip install 'vidprobe\\[hf]'`).

    Example:  vidprobe backbones --family dinov2 --verbose
    """
    rows = backbone_rows(family)
    if not rows:
        raise typer.BadParameter(f"no backbone of family {family!r}", param_hint="--family")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    cols = COLUMNS + (("model_id", "source", "description") if verbose else ())
    typer.echo(format_table(rows, cols))
    from vidprobe.backbones import PLUGIN_ERRORS

    for label, why in PLUGIN_ERRORS.items():
        typer.echo(f"skipped backbone plugin {label}: {why}", err=True)
