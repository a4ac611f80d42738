"""How a long job that skipped items ends: one last line with the count and the grouped reasons, and its exit status.

Every command that skips and counts broken items (`extract`, `train`, `evaluate`, `consistency`, `label`,
`prepare co3d`) ends with :func:`finish`: nothing skipped, nothing printed; otherwise the line
``3 videos skipped (2 x load error: DatasetError, 1 x NaN/Inf in features): exit 1; pass --allow-skips to exit 0``
on stderr and exit status 1, or, with ``--allow-skips``, the same count ending ``allowed by --allow-skips``
and status 0. A cli module (imports only typer): the commands import it at module level.
"""

from __future__ import annotations

import re
from typing import Mapping

import typer

__all__ = ["ALLOW_SKIPS_HELP", "EXIT_SKIPPED", "finish", "reason_group", "skip_line"]

ALLOW_SKIPS_HELP = "Exit 0 even when some items were skipped (they are counted and listed either way)."
EXIT_SKIPPED = 1
_EXC = re.compile(r"^[A-Z][A-Za-z0-9_.]*(Error|Exception|Timeout|Interrupt|Exit)$")


def reason_group(reason: str) -> str:
    """The kind of a skip reason: its head without a leading file path, keeping an exception type after it.

    ``"load error: DatasetError: /d/v/rgb.mp4: cannot decode"`` -> ``"load error: DatasetError"``;
    ``"/f/L001/v.safetensors: NaN/Inf in features"`` -> ``"NaN/Inf in features"``.
    """
    parts = [p.strip() for p in str(reason).split(": ")]
    while len(parts) > 1 and parts[0] and not re.search(r"\s", parts[0]) and ("/" in parts[0] or "\\" in parts[0]):
        parts = parts[1:]  # a path (no spaces, a separator) says where, not why
    head = parts[0]
    if len(parts) > 1 and _EXC.match(parts[1]) and not _EXC.match(head):
        head = f"{head}: {parts[1]}"
    head = re.sub(r"\s*[\(\[].*$", "", head)  # details in brackets: layers, shapes, frame lists
    head = re.sub(r"\s+(of|at|for|in|to)$", "", head)
    return head or str(reason)[:60]


def skip_line(skipped: Mapping[str, str], what: str = "videos", allowed: bool = False) -> str:
    """``N <what> skipped (k x reason, ...)`` and how the command exits."""
    groups: dict[str, int] = {}
    for r in skipped.values():
        g = reason_group(r)
        groups[g] = groups.get(g, 0) + 1
    why = ", ".join(f"{n} x {g}" for g, n in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0])))
    tail = "allowed by --allow-skips" if allowed else f"exit {EXIT_SKIPPED}; pass --allow-skips to exit 0"
    return f"{len(skipped)} {what} skipped ({why}): {tail}"


def finish(skipped: Mapping[str, str], allow: bool, what: str = "videos") -> None:
    """End a command that skipped ``skipped`` (item -> reason): the count line last, exit 1 unless ``allow``."""
    if not skipped:
        return
    typer.echo(skip_line(skipped, what, allowed=allow), err=True)
    if not allow:
        raise typer.Exit(EXIT_SKIPPED)
