"""The README documents what the code does (Datasette-style: a new setting without docs fails)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from corral.dsl.parameters import DEPRECATED, PARAMETERS
from corral.dsl.syntax import COMMANDS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_every_parameter_is_documented(name):
    assert f"`{name}`" in README


@pytest.mark.parametrize("name", sorted(DEPRECATED - {"mirostat_tau", "mirostat_eta"}))
def test_every_deprecated_parameter_is_documented(name):
    assert f"`{name}" in README


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_documented(command):
    assert re.search(rf"`{command}\b", README)


def marked_block(name: str) -> str:
    """The command between `<!-- name -->` and `<!-- /name -->`, as .ci/run reads it."""
    match = re.search(rf"<!-- {name} -->\n```bash\n(.+?)\n```\n<!-- /{name} -->", README, re.S)
    assert match, f"README.md has no {name} block"
    return match.group(1)


def test_ci_runs_the_readme_demo_then_the_test_command():
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert ci.index("block demo-command") < ci.index("block test-command")
    assert marked_block("demo-command").startswith("pip install -e '.[serve]' && corral demo")
    assert marked_block("test-command") == "pip install -e '.[test]' && python -m pytest -q"


def test_every_server_setting_is_documented():
    from corral.config.settings import Settings

    for name in Settings.model_fields:
        assert f"`CORRAL_{name.upper()}`" in README, name


def test_readme_opens_with_the_demo_then_the_test_command():
    commands = re.findall(r"```bash\n(.+?)\n```", README, re.S)
    assert commands[0].startswith("pip install -e '.[serve]' && corral demo && corral run smollm2")
    assert commands[1] == "pip install -e '.[test]' && python -m pytest -q"
