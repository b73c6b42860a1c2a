"""The repository stands alone: no file in it names a path outside the checkout.

A fresh clone has nothing beside it (no `shared/` folder, no sibling checkout), so a test, a script
or a doc that reaches there works only on the machine it was written on.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# A relative path written in a file: one or more `../` steps, then a name.
RELATIVE = re.compile(r"(?<![\w.])((?:\.\./)+)([\w.-]+)")
# `Path(__file__)` climbed past the repository root: `.parents[N]` or a chain of `.parent`.
PARENTS_INDEX = re.compile(r"Path\(__file__\)\.resolve\(\)\.parents\[(\d+)\]")
PARENT_CHAIN = re.compile(r"Path\(__file__\)\.resolve\(\)((?:\.parent)+)")
# The repository root's own parent, as conftest-style constants name the root.
ROOT_PARENT = re.compile(r"\b\w*(?:REPO|ROOT)\w*\.parent\b")
SIBLING = "shared"  # the folder beside the checkout that developers have and users do not


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    files = []
    for name in listed.decode().split("\0"):
        path = REPO / name
        if not name or not path.is_file() or path.is_symlink():
            continue
        head = path.read_bytes()[:8192]
        if b"\0" not in head:  # text, not a binary file
            files.append(path)
    return files


def escapes(path: Path, text: str) -> list[str]:
    """The spots in `text` (the content of `path`) that point outside the repository."""
    found = []
    depth = len(path.relative_to(REPO).parts) - 1  # folders between the repository root and the file
    # Tests hold hostile names such as '../../etc/passwd' on purpose: there only the sibling folder
    # counts as a reference; elsewhere any relative path that climbs above the root does.
    is_test = path.relative_to(REPO).parts[0] == "tests"
    for match in RELATIVE.finditer(text):
        if match.group(2) == SIBLING or (not is_test and match.group(1).count("../") > depth):
            found.append(match.group(0))
    found += ROOT_PARENT.findall(text)
    for match in PARENTS_INDEX.finditer(text):
        if int(match.group(1)) > depth:  # parents[depth] is the repository root itself
            found.append(match.group(0))
    for match in PARENT_CHAIN.finditer(text):
        if match.group(1).count(".parent") > depth + 1:
            found.append(match.group(0))
    return found


# This file's own table below spells escapes out on purpose; it is the one file not scanned.
FILES = [p for p in tracked_text_files() if p != Path(__file__).resolve()]


def test_the_scan_sees_the_whole_tree():
    names = {p.relative_to(REPO).as_posix() for p in FILES}
    assert {"README.md", ".ci/run", "pyproject.toml", "tests/conftest.py"} <= names


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(REPO).as_posix() for p in FILES])
def test_no_file_names_a_path_outside_the_repository(path: Path):
    assert escapes(path, path.read_text(encoding="utf-8", errors="replace")) == []


@pytest.mark.parametrize("where, text, expected", [
    ("tests/conftest.py", "open('../" + SIBLING + "/README.md')", ["../" + SIBLING]),
    ("tests/conftest.py", "SHARED = REPO" + ".parent / 'x'", ["REPO" + ".parent"]),
    ("bench/plan.py", "see ../../outside/file", ["../../outside"]),
    ("bench/plan.py", "see ../cli/main.py", []),
    ("tests/runtime/test_names.py", "Digest('../../../../etc/passwd')", []),
    ("README.md", "see ../neighbour", ["../neighbour"]),
    ("tests/conftest.py", "Path(__file__).resolve().parents[2]", ["Path(__file__).resolve().parents[2]"]),
    ("tests/cli/test_x.py", "Path(__file__).resolve().parents[2]", []),
    ("tests/conftest.py", "Path(__file__).resolve().parent.parent", []),
    ("tests/conftest.py", "Path(__file__).resolve().parent.parent.parent",
     ["Path(__file__).resolve().parent.parent.parent"]),
], ids=["sibling-folder", "root-parent", "above-the-root", "inside", "hostile-name-in-a-test", "readme", "parents-index",
        "parents-index-inside", "parent-chain-inside", "parent-chain-outside"])
def test_the_scan_finds_what_escapes(where: str, text: str, expected: list[str]):
    assert escapes(REPO / where, text) == expected
