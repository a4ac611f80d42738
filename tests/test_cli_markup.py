"""Square brackets survive rich: `pip install 'vidprobe[hf]'`, `[done]` and the like reach the reader (issue 15).

typer renders help texts as rich markup, where ``[hf]`` is a style tag and silently disappears; a help text keeps
a literal bracket as ``\\[`` (what rich.markup.escape writes). Error messages and `typer.echo` lines are never read
as markup. These tests render `--help` of every command and look for each bracketed word of its raw text.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
import typer
from typer.testing import CliRunner

from vidprobe import cli

_BRACKETED = re.compile(r"\[[^\[\]\n]*\]")


def _commands():
    def walk(cmd, path):
        yield path, cmd
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(cli.build_app()), []))


def _raw_texts(cmd) -> list[str]:
    """Help, epilog and every parameter's help, as written (a ``\\[`` unescaped: it shows as ``[``)."""
    texts = [cmd.help or "", cmd.epilog or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
    return [t.replace("\\[", "[") for t in texts]


def _flat(output: str) -> str:
    """Rendered help without rich's panel borders and line breaks (a long line wraps inside its panel)."""
    return re.sub(r"[\s│╭╮╰╯─]+", " ", output)


def _invoke(args):
    return CliRunner().invoke(cli.build_app(), args, env={"COLUMNS": "1000"})


COMMANDS = _commands()


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) or "vidprobe" for p, _ in COMMANDS])
def test_every_bracketed_word_of_a_help_text_survives_rendering(path, cmd):
    want = Counter(tok for text in _raw_texts(cmd) for tok in _BRACKETED.findall(" ".join(text.split())))
    r = _invoke([*path, "--help"])
    assert r.exit_code == 0, r.output
    shown = _flat(r.output)
    eaten = {tok: n for tok, n in want.items() if shown.count(tok) < n}
    assert not eaten, f"`vidprobe {' '.join(path)} --help` drops {eaten} (write \\\\[ in the help text)"


def test_the_known_cases_are_shown():
    assert "vidprobe[hf]" in _flat(_invoke(["backbones", "--help"]).output)
    assert "[done] ones marked" in _flat(_invoke(["sweep", "--help"]).output)


def test_the_check_catches_a_bracket_rich_would_eat():
    """The test above can fail: an unescaped tag in a help text is dropped by the renderer it checks."""
    app = typer.Typer()

    @app.command()
    def probe(extra: str = typer.Option("", help="install vidprobe[hf] first")) -> None:
        """Done marks: [done] and \\[kept]."""

    r = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "1000"})
    shown = _flat(r.output)
    assert "vidprobe[hf]" not in shown and "[done]" not in shown and "[kept]" in shown


def test_an_error_message_with_brackets_is_not_read_as_markup(tmp_path):
    r = _invoke(["extract", "-b", "[bold]nope[/bold]", "-d", str(tmp_path), "-o", str(tmp_path / "f")])
    assert r.exit_code == 2
    assert "[bold]nope[/bold]" in _flat(r.output)
