"""The command line's own flags: a choice is listed by `--help`, and typer refuses any
other value before a command runs (exit code 2, like every usage error)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sweep.cli import app


def words(output: str) -> str:
    """`output` without rich's boxes and line wrapping."""
    return " ".join(output.replace("│", " ").split())


@pytest.mark.parametrize(("command", "choices"), [
    ("pareto", ("table", "csv", "json")),
    ("studies", ("table", "csv", "json")),
    ("best", ("table", "yaml", "json")),
])
def test_format_is_a_choice_help_lists_and_typer_refuses_otherwise(command: str, choices: tuple[str, ...]) -> None:
    runner = CliRunner()
    assert f"<{'|'.join(choices)}>" in runner.invoke(app, [command, "--help"]).output
    refused = runner.invoke(app, [command, "--format", "xml"])
    listed = ", ".join(f"'{choice}'" for choice in choices)
    assert refused.exit_code == 2 and "Invalid value for '--format'" in words(refused.output)
    assert f"'xml' is not one of {listed}" in words(refused.output), refused.output
