"""Shared fixtures: built-in profiles and small SR-GHN populations."""

from __future__ import annotations

import pytest
import torch

from srghn.controller.ghn import SRGHN, GHNConfig
from srghn.sim.profiles import available_profiles, load_profile


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
