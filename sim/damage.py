"""Damage suites: named faults a robot's profile does not declare, kept in a TOML file (``benchmarks/damage/``).

::

    robot = "ant"
    [damage.dead_front_left]
    gain = { hip_1 = 0.0, ankle_1 = 0.0 }

Each ``[damage.<name>]`` table is a regime (:class:`~srghn.sim.envs.Regime`: gain, payload, friction, damping),
checked against the robot's MuJoCo model when the suite loads, so a misspelt joint fails at once, naming it.
"""

from __future__ import annotations

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
        if name in profile.regimes:
            raise ConfigError(f"damage suite {path}: {name!r} is a declared regime of {profile.name}")
        if not isinstance(table, dict):
            raise ConfigError(f"damage suite {path}: damage.{name} must be a table")
        damages[name] = Regime.from_dict({"description": f"damage {name}", **table}, f"damage.{name}")
    check_damages(profile, damages, str(path))
    return profile, damages


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


__all__ = ["check_damages", "load_suite"]
