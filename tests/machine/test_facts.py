"""A crash of llama.cpp's repacked CPU weights is learnt once per machine, not once per process."""

from __future__ import annotations

import pytest

from corral.machine import facts as machine_facts


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def test_unknown_until_remembered(cache):
    assert machine_facts.repack_crashes() is False
    machine_facts.remember_repack_crashes()
    assert machine_facts.repack_crashes() is True
    assert [p.parent for p in cache.rglob("cpu-repack-crashes-*")] == [cache / "corral"]


@pytest.mark.parametrize("forced, crashes", [("off", True), ("on", False)])
def test_the_users_setting_overrides(forced, crashes):
    """CORRAL_CPU_REPACK (Settings.cpu_repack) comes in as `forced`."""
    machine_facts.remember_repack_crashes()
    assert machine_facts.repack_crashes(forced) is crashes
