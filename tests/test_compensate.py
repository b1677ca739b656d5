"""A champion compensated for a regime that reverses actuators or permutes actions acts in that regime as the
champion did in nominal (sim/compensate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from srghn.controller.policy import PolicySpec
from srghn.safety.scenarios import run_scenarios
from srghn.sim.compensate import compensate, reversed_actions
from srghn.sim.envs import Regime
from srghn.sim.profiles import load_profile


def random_policy(spec: PolicySpec, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.5, spec.num_params).astype(np.float32)


def test_a_reversed_leg_negates_exactly_its_actuators_actions() -> None:
    ant = load_profile("ant")
    spec, params = ant.policy, random_policy(ant.policy, 1)
    assert reversed_actions(ant, ant.regime("invert_front_left")) == [2, 3]  # hip_1, ankle_1
    obs = np.random.default_rng(2).normal(0.0, 1.0, (64, spec.obs_dim)).astype(np.float32)
    before = spec.act(params[None].repeat(64, 0), obs)
    after = spec.act(compensate(ant, params, ant.regime("invert_front_left"))[None].repeat(64, 0), obs)
    np.testing.assert_allclose(after[:, [2, 3]], -before[:, [2, 3]], atol=1e-6)
    np.testing.assert_array_equal(np.delete(after, [2, 3], axis=1), np.delete(before, [2, 3], axis=1))
    everything = compensate(ant, params, ant.regime("invert_all"))
    np.testing.assert_allclose(spec.act(everything[None].repeat(64, 0), obs), -before, atol=1e-6)


@pytest.mark.parametrize("regime", [Regime(gain={"hip_1": 0.25}), Regime(payload={"torso": 2.0}), Regime()])
def test_what_an_action_cannot_undo_is_not_compensated(regime: Regime) -> None:
    ant = load_profile("ant")
    assert compensate(ant, random_policy(ant.policy, 3), regime) is None


def test_a_cart_pole_compensated_for_the_inverted_push_balances_there_as_it_did_in_nominal() -> None:
    from srghn.controller.onnx_policy import OnnxPolicy
    from srghn.deploy.daemon.champions import export_for_profile
    from srghn.sim.factory import load_factory

    cartpole = load_profile("cartpole")
    factory = load_factory(cartpole)
    compensated = compensate(cartpole, factory.params, cartpole.regime("inverted"))
    assert compensated is not None and compensate(cartpole, factory.params, cartpole.regime("nominal")) is None

    def scenarios(params: np.ndarray, regime: str):
        model = export_for_profile(cartpole, params, "cp", {}, factory.norm).model
        return run_scenarios(cartpole, OnnxPolicy(model), (regime,), 3, 0)[regime]

    nominal, inverted = scenarios(factory.params, "nominal"), scenarios(compensated, "inverted")
    assert nominal.mean_return == inverted.mean_return == 500.0
    assert scenarios(factory.params, "inverted").mean_return < 50  # what it undoes
