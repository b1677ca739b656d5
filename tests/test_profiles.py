"""Robot profiles: the built-ins load, and every kind of bad profile is an error naming its field."""

from __future__ import annotations

import pytest
import tomllib

from srghn import ConfigError
from srghn.sim.profiles import PROFILE_DIR, available_profiles, load_profile, parse_profile


def test_builtin_profiles_load():
    assert available_profiles() == ["ant", "cartpole", "lunarlander"]
    ant = load_profile("ant")
    assert ant.env_id == "srghn/AntSwitch-v0" and ant.reward_offset == 0.5 and ant.ghn.update_clip == 0.1
    assert not ant.policy.discrete and ant.policy.action_low == (-1.0,) * 8
    cart = load_profile("cartpole")
    assert cart.regimes == ("nominal", "inverted") and cart.evolution.population == 10


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
    ("regimes", ["nominal", "upside_down"], False, "'upside_down'.*valid: nominal, inverted"),
    ("regimes", ["inverted"], False, "must start with 'nominal'"),
    ("switch_regime", "nominal", False, "switch_regime"),
    ("env_id", "srghn/Nothing-v0", False, "unknown environment"),
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


def test_profile_does_not_match_its_environment(tmp_path):
    from srghn.sim.evaluator import make_env

    profile = parse_profile(edited("observation.dim", 5))
    with pytest.raises(ConfigError, match="observation.dim is 5"):
        make_env(profile)
