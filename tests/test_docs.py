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


def _settings_table() -> str:
    """The README's table under `### Settings`."""
    section = README.split("### Settings", 1)[1].split("\n#", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def test_every_setting_is_documented_in_the_settings_table():
    from corral.config.settings import variables

    table = _settings_table()
    missing = [v for v in variables() if f"| `{v}` |" not in table]
    assert missing == [], f"README's settings table lacks {missing}"


def test_the_settings_table_names_only_settings():
    from corral.config.settings import variables

    documented = re.findall(r"^\| `((?:CORRAL|HF)_[A-Z_]+)` \|", _settings_table(), re.M)
    assert sorted(documented) == sorted(variables())


def test_no_corral_variable_is_read_outside_settings():
    """Nothing but corral.config.settings reads a CORRAL_* variable (the CLI passes values down)."""
    import tomllib

    repo = Path(__file__).resolve().parent.parent
    folders = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values()
    readers = re.compile(r"""(environ|getenv)\b[^\n]*["']CORRAL_""")
    found = [f"{path.relative_to(repo)}:{number}"
             for folder in sorted(set(folders)) if folder != "."
             for path in sorted((repo / folder).glob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if readers.search(line)]
    assert found == []


def test_readme_opens_with_the_demo_then_the_test_command():
    commands = re.findall(r"```bash\n(.+?)\n```", README, re.S)
    assert commands[0].startswith("pip install -e '.[serve]' && corral demo && corral run smollm2")
    assert commands[1] == "pip install -e '.[test]' && python -m pytest -q"
