"""Every example command of the docs runs as written on the built-in data (issue 15, "the first hour").

The examples are every line of README.md's shell code blocks and every `vidprobe ...` line after an "Example"
heading in a command's help text (the docstring / epilog that `--help` shows). Each one either runs, in process
through typer's CliRunner (faster than a subprocess: one import for all), and exits 0, or is listed in
:data:`NOT_RUNNABLE` with the reason (weights, a GPU, a download, a dataset we cannot make here). A new example that
is neither fails this test, and so does a listed one that no longer appears in the docs.

They run in one temporary directory that holds a link ``configs`` -> the repository's ``configs/`` (the docs run from
the repository root): README's lines first, in order, so the paths of its "first hour" block (``data/synth``,
``data/synth_labels``, ``feats/synth_dinov2``, ``runs/...``, ``results.db``) exist for the help examples, which use
the same paths. No other substitution is made; a trailing ``> FILE`` writes the command's standard output there, as
the shell would. An example that is too slow for this test is documentation that
is too slow for a user's first try: shorten the example, not this test.
"""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_WEIGHTS = "needs the real model's weights (a download) and, at full size, a GPU"
#: example -> why this test does not run it (the command as shlex splits it, joined by single spaces)
NOT_RUNNABLE: dict[str, str] = {
    "make demo": "the whole demo, about 10 minutes; tests/test_demo.py runs its quick plan",
    "make test": "the test suite itself",
    'pip install -e .[hf]': "installs packages from the network",
    "pip install vidprobe[hf]": "installs packages from the network",
    "vidprobe prepare co3d /data/co3d /data/co3d_ref": "needs the CO3Dv2 download (the converter is tested by round "
                                                      "trip in tests/test_co3d.py)",
    "vidprobe prepare check /data/co3d_ref": "reads the CO3Dv2 preparation of the line before",
    "vidprobe label /data/co3d_ref --out /data/co3d_labels --device cuda": "VGGT-1B: " + _WEIGHTS,
    "vidprobe extract -b wan2.1-t2v-14b -d /data/co3d_ref -o feats/wan14b --layers 11,21,31 --timesteps 249,749":
        "WAN2.1-14B: " + _WEIGHTS,
    "vidprobe train configs/example_train.yaml --set features=feats/wan14b --set layer=21 --set timestep=749":
        "reads the WAN2.1-14B features of the extraction before",
    "vidprobe evaluate runs/wan2.1-t2v-14b_L21_T749 --which both --db results.db": "reads the run of the line before",
    "vidprobe sweep configs/paper/wan2.1-t2v-14b_co3d.yaml": "WAN2.1-14B on CO3Dv2: " + _WEIGHTS,
    "vidprobe sweep configs/paper/wan2.1-t2v-14b_co3d.yaml --set dataset=/data/co3d_ref --set labels=/data/co3d_labels":
        "WAN2.1-14B on CO3Dv2: " + _WEIGHTS,
    "vidprobe extract -b hf:facebook/dinov2-small -d data/co3d -o feats/dinov2s --layers 6,-1":
        "downloads facebook/dinov2-small from the Hugging Face Hub",
    "vidprobe extract -b hf:./checkpoints/my-vit -d data/co3d -o feats/myvit -a dtype=fp32 -a resize=pil-bicubic":
        "the user's own checkpoint folder (tests/test_hf_auto.py runs tiny saved models)",
    "vidprobe extract -b hf:./my-vit -a random_init=true -d data/co3d -o feats/myvit_random":
        "the user's own checkpoint folder (tests/test_hf_auto.py runs tiny saved models)",
    "vidprobe run -b hf:facebook/dinov2-small -d data/synth -o runs/dinov2s":
        "downloads facebook/dinov2-small from the Hugging Face Hub",
    "vidprobe extract -b wan2.1-t2v-1.3b -d data/co3d_ref -o feats/wan --layers 11,21 --timesteps 249,749":
        "WAN2.1-1.3B: " + _WEIGHTS,
    "vidprobe check-backbone wan2.1-t2v-14b --device cuda": "WAN2.1-14B: " + _WEIGHTS,
    "vidprobe extract -b wan2.1-t2v-14b -d /data/co3d_ref -o feats/wan14b --layers 11,21,31 --timesteps 249,749 "
    "--launcher slurm --array 16 --partition gpu --gpus 1 --cpus 8 --mem 64G --time 4:00:00 --account myproj":
        "submits SLURM jobs (sbatch); WAN2.1-14B: " + _WEIGHTS,
    "vidprobe sweep configs/paper/wan2.1-t2v-14b_co3d.yaml --launcher slurm --partition gpu --gpus 1 --wait":
        "submits SLURM jobs (sbatch); WAN2.1-14B on CO3Dv2: " + _WEIGHTS,
    "vidprobe extract -b wan2.1-t2v-14b -d data/co3d -o feats/wan_pca --codec pca:256+int8": "WAN2.1-14B: " + _WEIGHTS,
    "vidprobe compress feats/wan --codec pca:256+int8 --out feats/wan_pca":
        "reads feats/wan, a WAN2.1 store (" + _WEIGHTS + ")",
    "vidprobe compress-check feats/wan feats/wan_pca -d data/co3d --seeds 0,1,2 -c train.yaml -o check.json":
        "reads the WAN2.1 store and its compressed copy of the line before, and the user's train.yaml",
    "vidprobe compress feats/wan --codec pca:256+int8 --out feats/wan_pca256":
        "reads feats/wan, the WAN2.1-1.3B store of `vidprobe extract --help` (" + _WEIGHTS + ")",
    "vidprobe compress-check feats/wan feats/wan_pca256 -d data/co3d --seeds 0,1,2 -o check.json":
        "reads the WAN2.1-1.3B store and its compressed copy of the examples before",
}

_SHELL_FENCE = re.compile(r"^```(?:bash|sh|shell|console)\s*\n(.*?)^```", re.M | re.S)
_EXAMPLE_HEADING = re.compile(r"^\s*Examples?\b[^:\n]*:(.*)$")


def normalized(line: str) -> str:
    """The command as shlex reads it (quotes and a trailing ``# comment`` gone), words joined by single spaces."""
    return " ".join(shlex.split(line, comments=True))


def readme_examples(text: str) -> list[str]:
    """The command lines of the shell code blocks, in order (comment lines and ``\\`` continuations handled)."""
    out = []
    for block in _SHELL_FENCE.findall(text):
        pending = ""
        for raw in block.splitlines():
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            line = line.removeprefix("$ ")
            if line and not line.startswith("#") and normalized(line):
                out.append(normalized(line))
    return out


def help_examples(text: str) -> list[str]:
    """``vidprobe ...`` lines from the first "Example(s)...:" heading of a help text on (the heading's own tail too)."""
    out, seen_heading = [], False
    for raw in text.splitlines():
        m = _EXAMPLE_HEADING.match(raw)
        if m:
            seen_heading = True
            raw = m.group(1)
        line = raw.strip().removeprefix("$ ")
        if seen_heading and line.startswith("vidprobe "):
            out.append(normalized(line))
    return out


def command_help_texts():
    """(command path, help + epilog text) of the root and of every command and group under it."""
    import typer

    from vidprobe import cli

    def walk(cmd, path):
        yield path, "\n\n".join(t for t in (cmd.help, cmd.epilog) if t)
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(cli.build_app()), ["vidprobe"]))


def all_examples() -> list[tuple[str, str]]:
    """(where, command) for README's examples in order, then the help examples command by command."""
    found = [("README.md", c) for c in readme_examples(README.read_text())]
    for path, text in command_help_texts():
        found += [(" ".join(path) + " --help", c) for c in help_examples(text)]
    return found


def test_the_extractors_find_examples_in_each_form():
    text = "Intro\n\n```bash\nvidprobe a x   # note\n# comment\nmake demo\nvidprobe b \\\n  --y 1\n```\n```\nnot shell\n```"
    assert readme_examples(text) == ["vidprobe a x", "make demo", "vidprobe b --y 1"]
    doc = ("Do it.\n\nvidprobe not-an-example (prose before any heading)\n\n"
           "Example:  vidprobe c --z 'q r'\n\nExamples (built-in data):\n  vidprobe d\n\n    vidprobe e")
    assert help_examples(doc) == ["vidprobe c --z q r", "vidprobe d", "vidprobe e"]


def test_every_command_has_help_that_renders():
    """Cheap and always on: each command's --help exits 0 (the slow test below runs the examples)."""
    from typer.testing import CliRunner

    from vidprobe import cli

    app = cli.build_app()
    for path, _ in command_help_texts():
        r = CliRunner().invoke(app, [*path[1:], "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0, (path, r.output)


@pytest.mark.slow
def test_every_documented_example_runs_or_is_listed(tmp_path, monkeypatch):
    import torch
    from typer.testing import CliRunner

    from vidprobe import cli

    examples = all_examples()
    commands = {c for _, c in examples}
    stale = sorted(set(NOT_RUNNABLE) - commands)
    assert not stale, f"NOT_RUNNABLE lists examples the docs no longer have: {stale}"
    (tmp_path / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    app, done, seconds, failed = cli.build_app(), set(), {}, []
    try:
        for where, command in examples:
            if command in NOT_RUNNABLE or command in done:
                continue
            done.add(command)
            words = shlex.split(command)
            if words[0] != "vidprobe":
                failed.append(f"{where}: `{command}` is neither a vidprobe command nor listed in NOT_RUNNABLE")
                continue
            words, into = (words[:-2], words[-1]) if len(words) > 2 and words[-2] == ">" else (words, None)
            t0 = time.perf_counter()
            r = CliRunner().invoke(app, words[1:], env={"COLUMNS": "200"})
            seconds[command] = round(time.perf_counter() - t0, 1)
            if r.exit_code != 0:
                failed.append(f"{where}: `{command}` exited {r.exit_code} (run it, shorten it, or list it in "
                              f"NOT_RUNNABLE with the reason):\n{r.output[-1500:]}")
            elif into:  # `... > FILE`: the shell's redirection of standard output
                Path(into).write_text(r.stdout)
    finally:
        torch.set_num_threads(threads)
    print("seconds per example:", seconds)
    assert not failed, "\n\n".join(failed)
    assert {"vidprobe train configs/synthetic_train.yaml", "vidprobe report results.db --out report/"} <= done
    assert (tmp_path / "runs" / "dinov2-small_Llast_Tnone" / "config.yaml").is_file()  # the derived run name
    assert (tmp_path / "report" / "report.html").is_file()
