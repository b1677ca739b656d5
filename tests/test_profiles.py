"""Robot profiles: the built-ins load, and every kind of bad profile is an error naming its field."""

from __future__ import annotations

import pytest
import tomllib

from srghn import ConfigError
from srghn.sim.profiles import PROFILE_DIR, available_profiles, load_profile, parse_profile


def test_builtin_profiles_load():
    assert available_profiles() == ["ant", "cartpole", "lunarlander"]
    ant = load_profile("ant")
    assert ant.env_id == "Ant-v5" and ant.reward_offset == 0.5 and ant.ghn.update_clip == 0.03
    assert dict(ant.env_kwargs) == {"include_cfrc_ext_in_observation": False}
    assert ant.regimes[:3] == ("nominal", "invert_all", "invert_back_right") and len(ant.regimes) == 13
    assert dict(ant.regime("weak_back_left").gain) == {"hip_3": 0.25, "ankle_3": 0.25}
    assert ant.twin is not None and ant.twin.bounds["gain"]["all"] == (-1.5, 1.5)
    assert not ant.policy.discrete and ant.policy.action_low == (-1.0,) * 8
    cart = load_profile("cartpole")
    assert cart.regimes == ("nominal", "inverted") and cart.evolution.population == 10
    assert cart.regime("inverted").permutation == (1, 0) and cart.twin is None
    assert load_profile("lunarlander").regime("swapped").permutation == (0, 3, 2, 1)


def test_profile_loads_from_a_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text((PROFILE_DIR / "cartpole.toml").read_text().replace('name = "cartpole"', 'name = "mine"'))
    assert load_profile(str(path)).name == "mine"


def base() -> dict:
    return tomllib.loads((PROFILE_DIR / "cartpole.toml").read_text())


def edited(path: str, value=None, delete: bool = False) -> dict:
    data = base()
    *parents, key = path.split(".")
    table = data
    for parent in parents:
        table = table[parent]
    if delete:
        del table[key]
    else:
        table[key] = value
    return data


@pytest.mark.parametrize(("path", "value", "delete", "message"), [
    ("env_id", None, True, "missing field 'env_id'"),
    ("evolution.population", "ten", False, "'evolution.population' must be int"),
    ("evolution.population", 0, False, "population must be >= 1"),
    ("evolution.mutation", 0.1, False, "unknown field.*evolution.mutation"),
    ("ghn.rate_reduce", "median", False, "rate_reduce must be one of"),
    ("ghn.sigma_max", -1.0, False, "sigma_max must be > 0"),
    ("regimes", ["nominal", "inverted"], False, "'regimes' must be a table of regimes"),
    ("regimes", None, True, "missing field 'regimes'"),
    ("regimes", {"inverted": {"permutation": [1, 0]}, "nominal": {}}, False, "must start with 'nominal'"),
    ("regimes", {"nominal": {}}, False, "declares only 'nominal'"),
    ("regimes.nominal", {"permutation": [1, 0]}, False, "'regimes.nominal' is the unmodified environment"),
    ("regimes.inverted.permutation", [1, 1], False, "'regimes.inverted.permutation' must list each action"),
    ("regimes.inverted.permutation", [2, 1, 0], False, "'regimes.inverted.permutation' must list 2 actions"),
    ("regimes.inverted.colour", "red", False, "unknown field.*regimes.inverted.colour"),
    ("regimes.inverted.payload", {"pole": -1.0}, False, "'regimes.inverted.payload.pole' must be >= 0"),
    ("regimes.inverted.gain", {"all": "strong"}, False, "'regimes.inverted.gain.all' must be a finite number"),
    ("regimes.inverted.payload", {"all": 1.0}, False, "cannot use 'all'"),
    ("switch_regime", "nominal", False, "switch_regime"),
    ("switch_regime", "sideways", False, "switch_regime"),
    ("env_id", "srghn/Nothing-v0", False, "unknown environment"),
    ("env_id", "CartPole-v9", False, "unknown environment 'CartPole-v9'; did you mean CartPole-v"),
    ("env_id", "no_such_module:CartPole-v1", False, "cannot import module 'no_such_module'"),
    ("twin", {"gain": {"all": [1.5, -1.5]}}, False, "'twin.gain.all' must be \\[low, high\\]"),
    ("twin", {"payload": {"pole": [-1.0, 1.0]}}, False, "'twin.payload.pole' must not go below 0"),
    ("twin", {"tolerance": {"gain": 0.1}}, False, "names no parameter to fit"),
    ("twin", {"gain": {"all": [0.0, 1.0]}, "tolerance": {"gain": 0}}, False, "'twin.tolerance.gain' must be"),
    ("twin", {"gain": {"all": [0.0, 1.0]}, "max_transitions": 1}, False, "'twin.max_transitions'"),
    ("action.type", "analog", False, "'action.type' must be 'discrete' or 'continuous'"),
    ("action.n", 1, False, "at least 2 actions"),
    ("policy.hidden", [32, "wide"], False, "policy.hidden"),
    ("evolution.episodes", 0, False, "evolution.episodes"),
    ("reward_offset", float("nan"), False, "'reward_offset' must be float"),
    ("colour", "blue", False, "unknown field.*colour"),
])
def test_bad_profiles_name_the_field(path, value, delete, message):
    with pytest.raises(ConfigError, match=message):
        parse_profile(edited(path, value, delete))


def test_unknown_robot_and_unreadable_file_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="unknown robot 'spot'.*ant, cartpole, lunarlander"):
        load_profile("spot")
    broken = tmp_path / "broken.toml"
    broken.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="cannot read profile"):
        load_profile(broken)


def test_continuous_robots_take_gains_not_permutations():
    data = tomllib.loads((PROFILE_DIR / "ant.toml").read_text())
    data["regimes"]["invert_all"] = {"permutation": [1, 0, 2, 3, 4, 5, 6, 7]}
    with pytest.raises(ConfigError, match="'regimes.invert_all.permutation' needs discrete actions"):
        parse_profile(data)


def test_profile_does_not_match_its_environment(tmp_path):
    from srghn.sim.evaluator import make_env

    profile = parse_profile(edited("observation.dim", 5))
    with pytest.raises(ConfigError, match="observation.dim is 5"):
        make_env(profile)


def test_docs_profiles_md_documents_every_field():
    """docs/profiles.md is the reference of the format: every field a profile may hold is named there."""
    import dataclasses
    import re

    from srghn.controller.evolution import EvolutionConfig
    from srghn.controller.ghn import GHNConfig
    from srghn.controller.normalizer import NormConfig
    from srghn.sim.envs import KINDS
    from srghn.sim.gate_config import GateConfig

    text = (PROFILE_DIR.parents[1] / "docs" / "profiles.md").read_text()
    documented = set(re.findall(r"`\[?(?:[a-z_]+\.)?([a-z_0-9]+)", text))
    fields = {"name", "description", "env_id", "switch_regime", "reward_offset", "solved_fitness", "env_kwargs",
              "dim", "type", "n", "low", "high", "safe", "hidden", "episodes", "generations", "floors",
              "permutation", "tolerance", "max_transitions", "output_scale", *KINDS}
    for cls in (GHNConfig, EvolutionConfig, GateConfig, NormConfig):
        fields |= {f.name for f in dataclasses.fields(cls)}
    assert sorted(fields - documented) == []
