"""A policy played before export (:func:`policy_fitness`, how the daemon ranks candidates for release and for a
stand-in) scores on the gates' episodes what its exported artifact scores there."""

from __future__ import annotations

import pytest
from champion_helpers import cartpole_controller

from srghn.deploy.daemon.champions import export_for_profile
from srghn.safety.regime_trial import policy_fitness, regime_fitness
from srghn.sim.factory import load_factory
from srghn.sim.profiles import load_profile


@pytest.mark.parametrize("gains", [(0.0, 0.0, 1.0, 1.0), (0.7, 1.0, 1.0, 1.0), (0.0, 0.0, -1.0, -1.0)])
def test_a_cartpole_policy_scores_what_its_export_scores_in_every_regime(gains: tuple) -> None:
    profile, params = load_profile("cartpole"), cartpole_controller(gains)
    model = export_for_profile(profile, params, "played", norm=None).model
    gates = profile.gates
    for regime in profile.regimes:
        assert (policy_fitness(profile, params, None, regime, gates.episodes, gates.seed, gates.max_steps)
                == regime_fitness(profile, model, regime, gates.episodes, gates.seed, gates.max_steps))


def test_the_ant_factory_champion_is_played_with_its_normalizer_as_its_export_is() -> None:
    profile = load_profile("ant")
    factory, gates = load_factory(profile), profile.gates
    model = export_for_profile(profile, factory.params, "played", norm=factory.norm).model
    episodes = (gates.episodes, gates.seed, gates.max_steps)
    exported = regime_fitness(profile, model, "nominal", *episodes)
    played = policy_fitness(profile, factory.params, factory.norm, "nominal", *episodes)
    raw = policy_fitness(profile, factory.params, None, "nominal", *episodes)
    # float32 rounding apart from ONNX Runtime moves a whole Ant episode's score by about one per cent (2279
    # against 2258 on the gates' two episodes); without its normalizer the same policy only stands (501).
    assert abs(played - exported) < 0.1 * abs(exported)
    assert raw < 0.5 * played
