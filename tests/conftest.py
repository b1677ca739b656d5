"""Shared fixtures: built-in profiles, small SR-GHN populations, a real exported policy and tmp registries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from champion_helpers import cartpole_controller

from srghn.controller.ghn import SRGHN, GHNConfig
from srghn.deploy.registry.store import Registry
from srghn.sim.profiles import available_profiles, load_profile


@pytest.fixture(autouse=True)
def isolated_state_dir(tmp_path_factory, monkeypatch):
    """No test (nor a subprocess it starts) writes to the user's real state directory."""
    monkeypatch.setenv("SRGHN_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(autouse=True)
def keeps_pytest_priority():
    """A test that runs daemon code in-process must not leave pytest reniced (the daemon lowers its own priority):
    the rest of the suite would then starve under any normal-priority load."""
    before = os.nice(0)
    yield
    assert os.nice(0) == before, f"the test left pytest at nice {os.nice(0)} (was {before})"


@pytest.fixture(params=available_profiles())
def profile(request):
    """Each built-in robot profile."""
    return load_profile(request.param)


@pytest.fixture
def cartpole():
    return load_profile("cartpole")


@pytest.fixture
def make_population():
    """Factory: an SR-GHN for a profile and ``n`` freshly initialised individuals."""

    def make(profile, n: int = 4, seed: int = 0, **ghn_overrides):
        config = GHNConfig(**{**profile.ghn.to_dict(), **ghn_overrides})
        ghn = SRGHN(profile.policy, config, basis_seed=seed)
        return ghn, ghn.init_params(n, torch.Generator().manual_seed(seed))

    return make


@pytest.fixture(scope="session")
def cartpole_model() -> bytes:
    """One real exported CartPole policy (exporting takes about a second, so once per session)."""
    from srghn.deploy.daemon.champions import export_for_profile

    return export_for_profile(load_profile("cartpole"), cartpole_controller((0, 0, 1, 1)), "cp-model").model


@pytest.fixture
def registry(tmp_path: Path):
    """A fresh registry in a tmp state directory."""
    reg = Registry.open(tmp_path / "state", create=True)
    yield reg
    reg.close()


@pytest.fixture(autouse=True)
def no_process_left_behind(request):
    """A test that fails half-way may leave a server (whose supervisor outlives daemons by design) running: stop
    whatever still runs on this test's temporary directory afterwards."""
    marker = str(request.getfixturevalue("tmp_path")) if "tmp_path" in request.fixturenames else None
    yield
    if marker is None:
        return
    import os
    import signal

    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
