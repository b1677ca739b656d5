"""Damage suites: named faults of a robot, kept in a TOML file (``benchmarks/damage/``).

::

    robot = "ant"
    [damage.dead_front_left]
    gain = { hip_1 = 0.0, ankle_1 = 0.0 }

Each ``[damage.<name>]`` table is a regime (:class:`~srghn.sim.envs.Regime`: gain, payload, friction, damping),
checked against the robot's MuJoCo model when the suite loads, so a misspelt joint fails at once, naming it. Most
are faults the profile does not declare; one it declares (under the same name and change) is measured as declared.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from srghn import ConfigError
from srghn.sim.envs import Regime
from srghn.sim.profiles import RobotProfile, load_profile

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib


def load_suite(path: Path) -> tuple[RobotProfile, dict[str, Regime]]:
    """The suite's robot and its damages by name, in file order."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read damage suite {path}: {exc}") from exc
    unknown = sorted(set(data) - {"robot", "damage"})
    if unknown or not isinstance(data.get("robot"), str) or not isinstance(data.get("damage"), dict):
        raise ConfigError(f"damage suite {path}: needs robot = \"NAME\" and [damage.<name>] tables only"
                          + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    profile = load_profile(data["robot"])
    damages = {}
    for name, table in data["damage"].items():
        if not isinstance(table, dict):
            raise ConfigError(f"damage suite {path}: damage.{name} must be a table")
        damages[name] = Regime.from_dict({"description": f"damage {name}", **table}, f"damage.{name}")
        # a damage the profile declares since (a factory champion ships for it) stays in the suite, measured as the
        # declared fault it is; under its name, only the same change of the model
        if name in profile.regimes and not same_change(damages[name], profile.regime_defs[name]):
            raise ConfigError(f"damage suite {path}: {name!r} is a declared regime of {profile.name} with another "
                              "definition; give the damage another name")
    check_damages(profile, damages, str(path))
    return profile, damages


def same_change(a: Regime, b: Regime) -> bool:
    """Whether two regimes change the model (or the actions) alike, whatever their descriptions say."""
    return dataclasses.replace(a, description="") == dataclasses.replace(b, description="")


def declared(profile: RobotProfile, damages: dict[str, Regime]) -> set[str]:
    """The suite's damages the profile declares (robots ship a champion for them: answered as declared faults)."""
    return {name for name in damages if name in profile.regimes}


def check_damages(profile: RobotProfile, damages: dict[str, Regime], where: str) -> None:
    """Every damage's element names exist in the robot's model (one environment is built)."""
    from srghn.sim.envs.model_params import ModelParams
    from srghn.sim.evaluator import make_env

    env = make_env(profile)
    try:
        params = ModelParams(env.unwrapped.model, profile.env_id)
        for name, regime in damages.items():
            params.regime_values(regime, f"{where}: damage.{name}")
    finally:
        env.close()


__all__ = ["check_damages", "declared", "load_suite", "same_change"]
