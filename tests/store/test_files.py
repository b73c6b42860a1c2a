"""The store's file helpers: a write is whole or absent, and a file's sha256."""

from __future__ import annotations

import hashlib
import os

import pytest

from corral.store.files import atomic_write, file_sha256


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * (3 << 20) + b"tail")
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_atomic_write_replaces_the_file_with_the_mode_asked(tmp_path):
    target = tmp_path / "m.Modelfile"
    target.write_text("old")
    atomic_write(target, lambda f: f.write(b"new"), mode=0o600, suffix=".tmp")
    assert target.read_bytes() == b"new"
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["m.Modelfile"]


def test_a_failed_write_leaves_the_target_and_no_temp_file(tmp_path):
    target = tmp_path / "blob"
    target.write_bytes(b"kept")

    def half(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half, prefix=".corral-tmp-")
    assert target.read_bytes() == b"kept"
    assert os.listdir(tmp_path) == ["blob"]
