"""Damage suites (sim/damage.py): the shipped suite loads, a damage the profile declares since is measured as declared,
and a suite that contradicts the profile or the model is refused, naming the damage."""

from __future__ import annotations

from pathlib import Path

import pytest

from srghn import ConfigError
from srghn.sim.damage import declared, load_suite

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "damage" / "ant.toml"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "suite.toml"
    path.write_text('robot = "ant"\n' + body)
    return path


def test_the_ant_suite_loads_and_names_the_damages_its_profile_declares():
    profile, damages = load_suite(SUITE)
    assert len(damages) == 14 and list(damages)[0] == "dead_front_left"
    assert declared(profile, damages) == {name for name in damages if name in profile.regimes}
    assert "short_front_left_foot" not in declared(profile, damages)


def test_a_declared_damage_is_accepted_only_with_the_profiles_own_change(tmp_path):
    same = write(tmp_path, "[damage.weak_front_left]\ngain = { hip_1 = 0.25, ankle_1 = 0.25 }\n")
    profile, damages = load_suite(same)
    assert declared(profile, damages) == {"weak_front_left"}
    other = write(tmp_path, "[damage.weak_front_left]\ngain = { hip_1 = 0.5, ankle_1 = 0.5 }\n")
    with pytest.raises(ConfigError, match="'weak_front_left' is a declared regime of ant with another definition"):
        load_suite(other)


def test_a_damage_naming_a_joint_the_model_lacks_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="knee"):
        load_suite(write(tmp_path, "[damage.limp]\ngain = { knee = 0.5 }\n"))
