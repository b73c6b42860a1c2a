"""A crash of llama.cpp's repacked CPU weights is learnt once per machine, not once per process."""

from __future__ import annotations

import pytest

from corral.machine import facts as machine_facts


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CORRAL_CPU_REPACK", raising=False)


def test_unknown_until_remembered():
    assert machine_facts.repack_crashes() is False
    machine_facts.remember_repack_crashes()
    assert machine_facts.repack_crashes() is True


@pytest.mark.parametrize("forced, crashes", [("off", True), ("on", False), ("OFF", True)])
def test_the_environment_overrides(monkeypatch, forced, crashes):
    machine_facts.remember_repack_crashes()
    monkeypatch.setenv("CORRAL_CPU_REPACK", forced)
    assert machine_facts.repack_crashes() is crashes
