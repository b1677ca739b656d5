"""Shared fixtures for the champions tests: a real exported policy (once per session) and tmp registries."""

from __future__ import annotations

from pathlib import Path

import pytest
from champion_helpers import cartpole_controller

from srghn.deploy.registry import Registry
from srghn.sim.profiles import load_profile


@pytest.fixture(scope="session")
def cartpole_model() -> bytes:
    """One real exported CartPole policy (exporting takes about a second, so once per session)."""
    from srghn.deploy.champions import export_for_profile

    return export_for_profile(load_profile("cartpole"), cartpole_controller((0, 0, 1, 1)), "cp-model").model


@pytest.fixture
def registry(tmp_path: Path):
    """A fresh registry in a tmp state directory."""
    reg = Registry.open(tmp_path / "state", create=True)
    yield reg
    reg.close()
