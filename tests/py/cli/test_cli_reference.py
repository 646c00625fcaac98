"""docs/reference/cli.md shows the real --help of every command.

Each command's help sits in the document between ``<!-- help: NAME -->`` and
``<!-- /help -->``.  After changing a command, regenerate those blocks with
``PGFLOW_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/py/cli/test_cli_reference.py``
(a command without a block gets a new section at the end) and review the diff.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import click
from click.testing import CliRunner

from pgflow.cli import main
from pgflow.cli.build import build

DOC = Path(__file__).resolve().parents[3] / "docs" / "reference" / "cli.md"
BLOCK = re.compile(
    r"<!-- help: (?P<name>[a-z -]+) -->\n```text\n(?P<text>.*?)```\n<!-- /help -->", re.S
)
UPDATE = os.environ.get("PGFLOW_UPDATE_GOLDEN") == "1"


def commands() -> Iterator[tuple[str, click.Command, list[str], str]]:
    """(name, command, arguments, program name) of every documented command."""
    yield "pgflow-build", build, [], "pgflow-build"
    yield "pgflow", main, [], "pgflow"
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        if main.get_command(ctx, name) is not build:  # `pgflow build` is pgflow-build
            yield f"pgflow {name}", main, [name], "pgflow"


def help_of(command: click.Command, args: list[str], prog: str) -> str:
    result = CliRunner().invoke(command, [*args, "--help"], prog_name=prog)
    assert result.exit_code == 0, result.output
    return result.stdout


def block(name: str, text: str) -> str:
    return f"<!-- help: {name} -->\n```text\n{text}```\n<!-- /help -->"


def test_every_command_has_its_current_help_in_the_reference() -> None:
    doc = DOC.read_text(encoding="utf-8")
    helps = {name: help_of(cmd, args, prog) for name, cmd, args, prog in commands()}
    if UPDATE:
        doc = BLOCK.sub(lambda m: block(m["name"], helps.get(m["name"], m["text"])), doc)
        for name, text in helps.items():
            if f"<!-- help: {name} -->" not in doc:
                doc = doc.rstrip("\n") + f"\n\n## `{name}`\n\n{block(name, text)}\n"
        DOC.write_text(doc, encoding="utf-8")
    documented = {m["name"]: m["text"] for m in BLOCK.finditer(doc)}
    assert sorted(documented) == sorted(helps), "commands and documented commands differ"
    for name, text in helps.items():
        assert documented[name] == text, f"the --help of {name} changed: update {DOC.name}"


def test_pgflow_build_is_also_pgflow_build_subcommand() -> None:
    assert main.get_command(click.Context(main), "build") is build
