"""Robot profiles: one TOML file per robot, validated into a frozen :class:`RobotProfile` on load.

A profile names a gymnasium environment and its kwargs, declares the regimes the robot can be in (as changes of
its MuJoCo model or permutations of its discrete actions) and what the parametric twin may fit, and gives the
observation and action spaces (action bounds included), the policy architecture, the GHN settings, the evolution
defaults and the safety gates. Built-in profiles live beside this module (``cartpole``, ``lunarlander``, ``ant``);
any other ``.toml`` path loads the same way. Every error names the file and the offending field. The whole format
is documented in ``docs/profiles.md``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import gymnasium as gym
import numpy as np

from srghn import ConfigError
from srghn.controller.baselines import BASELINES
from srghn.controller.configs import EvolutionConfig, GHNConfig
from srghn.controller.normalizer import NormConfig
from srghn.controller.policy import PolicySpec
from srghn.sim.envs import NOMINAL, Regime, check_regime, parse_regimes
from srghn.sim.gate_config import GateConfig, parse_gates
from srghn.sim.repertoire_config import RepertoireConfig, parse_repertoire
from srghn.sim.twin_config import TwinConfig, parse_twin

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

PROFILE_DIR = Path(__file__).parent


@dataclass(frozen=True)
class RobotProfile:
    """Everything srghn needs to know about one robot."""

    name: str
    """Short name used on the command line (``--robot NAME``)."""
    env_id: str
    """Gymnasium id of the simulated robot (``module:Id`` imports ``module`` first, which may register it)."""
    regimes: tuple[str, ...]
    """Names of the regimes this robot can be in; ``nominal`` first."""
    switch_regime: str
    """Regime that ``--switch-at`` switches to."""
    policy: PolicySpec
    """Policy architecture, observation size and action bounds."""
    ghn: GHNConfig
    """SR-GHN architecture and variation settings."""
    evolution: EvolutionConfig
    """Population settings."""
    episodes: int
    """Episodes per evaluation of an individual (fitness is their mean)."""
    generations: int
    """Default number of generations for ``evolve``."""
    reward_offset: float = 0.0
    """Subtracted from every step's reward to form fitness (Ant: the healthy reward)."""
    solved_fitness: float | None = None
    """Fitness that counts as solved; an absolute recovery target in summaries."""
    description: str = ""
    env_kwargs: typing.Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Extra keyword arguments for ``gymnasium.make``."""
    source: str = ""
    """File the profile was loaded from."""
    gates: GateConfig = GateConfig()
    """Safety gate thresholds (the ``[gates]`` table)."""
    safe_action: tuple[float, ...] = ()
    """What the live server sends before any champion is live (``action.safe``): an action index for discrete
    robots, one value per actuator for continuous ones. Default: action 0 / zero (clipped into the bounds)."""
    observation: NormConfig = NormConfig()
    """Observation normalization (the ``[observation]`` table's ``normalize``, ``clip``, ``std_floor``)."""
    baselines: typing.Mapping[str, typing.Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    """Per-baseline settings (``[baselines.openes]``, ...), on top of the budget-matched population size."""
    regime_defs: typing.Mapping[str, Regime] = field(default_factory=lambda: MappingProxyType({NOMINAL: Regime()}))
    """What each regime changes (the ``[regimes.<name>]`` tables); its keys include every name of ``regimes``."""
    twin: TwinConfig | None = None
    """The model parameters the parametric twin fits (the ``[twin]`` table); None: declared regimes only."""
    repertoire: RepertoireConfig | None = None
    """How the robot's behaviour repertoire is organised and built (the ``[repertoire]`` table); None: it has
    none."""

    def __post_init__(self) -> None:
        missing = [name for name in self.regimes if name not in self.regime_defs]
        if missing:
            raise ConfigError(f"profile {self.name!r}: regime(s) {missing} have no definition in regime_defs")

    def regime(self, name: str) -> Regime:
        """What regime ``name`` changes (:class:`~srghn.UnknownRegime` if the profile has no such regime)."""
        return self.regime_defs[check_regime(name, self.regimes, f"robot {self.name!r}")]

    def with_regime(self, name: str, regime: Regime) -> RobotProfile:
        """A copy that also has regime ``name`` (an identified fault, say), last in ``regimes``."""
        names = self.regimes if name in self.regimes else (*self.regimes, name)
        return dataclasses.replace(self, regimes=names,
                                   regime_defs=MappingProxyType({**self.regime_defs, name: regime}))

    def to_dict(self) -> dict:
        """JSON-ready copy (stored with every run)."""
        return {
            "name": self.name, "env_id": self.env_id, "regimes": list(self.regimes),
            "switch_regime": self.switch_regime, "policy": self.policy.to_dict(), "ghn": self.ghn.to_dict(),
            "evolution": self.evolution.to_dict(), "episodes": self.episodes, "generations": self.generations,
            "reward_offset": self.reward_offset, "solved_fitness": self.solved_fitness,
            "description": self.description, "env_kwargs": dict(self.env_kwargs), "source": self.source,
            "gates": self.gates.to_dict(), "observation": dataclasses.asdict(self.observation),
            "baselines": {name: dict(values) for name, values in self.baselines.items()},
            "regime_params": {name: self.regime_defs[name].to_dict() for name in self.regimes},
            "twin": self.twin.to_dict() if self.twin is not None else None,
        }


def available_profiles() -> list[str]:
    """Names of the built-in profiles."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> RobotProfile:
    """Load a built-in profile by name, or a profile file by path."""
    path = Path(name_or_path)
    if str(name_or_path) in available_profiles():
        path = PROFILE_DIR / f"{name_or_path}.toml"
    elif path.suffix == ".toml" and not path.is_file():
        raise ConfigError(f"profile file {path} " + ("is not a file" if path.exists() else "does not exist")
                          + f" (built-in profiles: {', '.join(available_profiles())})")
    elif path.suffix != ".toml":
        raise ConfigError(f"unknown robot {str(name_or_path)!r}: built-in profiles are "
                          f"{', '.join(available_profiles())}, or give the path of a .toml profile")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read profile {path}: {exc}") from exc
    try:
        return parse_profile(data, source=str(path))
    except ConfigError as exc:
        raise ConfigError(f"profile {path}: {exc}") from exc


def parse_profile(data: dict, source: str = "") -> RobotProfile:
    """Validate a parsed TOML document into a profile; errors name the field."""
    known = {"name", "description", "env_id", "regimes", "switch_regime", "solved_fitness", "reward_offset",
             "env_kwargs", "observation", "action", "policy", "ghn", "evolution", "gates", "baselines", "twin",
             "repertoire"}
    _no_unknown(data, known, "")
    name = _get(data, "name", str)
    env_id = _check_env_id(_get(data, "env_id", str))
    if "regimes" not in data:
        raise ConfigError("missing field 'regimes' (a [regimes.nominal] table, then one table per fault)")
    solved = data.get("solved_fitness")
    if solved is not None:
        solved = _get(data, "solved_fitness", float)

    observation = _table(data, "observation")
    _no_unknown(observation, {"dim", "normalize", "clip", "std_floor"}, "observation")
    norm = build_config(NormConfig, {k: v for k, v in observation.items() if k != "dim"}, "observation")
    policy, safe_action = _policy(data, observation)
    regime_defs = parse_regimes(data["regimes"], policy.discrete, policy.act_dim)
    regimes = tuple(regime_defs)
    if len(regimes) < 2:
        raise ConfigError("field 'regimes' declares only 'nominal'; declare at least one fault to switch to")
    switch_regime = _get(data, "switch_regime", str)
    if switch_regime not in regimes or switch_regime == NOMINAL:
        raise ConfigError(f"field 'switch_regime' must be one of the non-nominal regimes {list(regimes[1:])}, "
                          f"got {switch_regime!r}")
    evolution = dict(_table(data, "evolution"))
    episodes = int(_pop_typed(evolution, "episodes", int, "evolution"))
    generations = int(_pop_typed(evolution, "generations", int, "evolution"))
    if episodes < 1 or generations < 1:
        raise ConfigError(f"fields 'evolution.episodes' and 'evolution.generations' must be >= 1, "
                          f"got {episodes} and {generations}")
    return RobotProfile(
        name=name, env_id=env_id, regimes=regimes, switch_regime=switch_regime, policy=policy,
        ghn=build_config(GHNConfig, _table(data, "ghn"), "ghn"),
        evolution=build_config(EvolutionConfig, evolution, "evolution"),
        episodes=episodes, generations=generations,
        reward_offset=_get(data, "reward_offset", float) if "reward_offset" in data else 0.0,
        solved_fitness=solved, description=str(data.get("description", "")),
        env_kwargs=MappingProxyType(dict(_table(data, "env_kwargs"))), source=source,
        gates=_wrap(lambda: parse_gates(_table(data, "gates"), regimes), "gates"), safe_action=safe_action,
        observation=norm, baselines=_baselines(_table(data, "baselines")),
        regime_defs=MappingProxyType(regime_defs), twin=parse_twin(data.get("twin")),
        repertoire=parse_repertoire(data.get("repertoire"), policy.obs_dim),
    )


def _policy(data: dict, observation: dict) -> tuple[PolicySpec, tuple[float, ...]]:
    """The ``[action]`` and ``[policy]`` tables (with the observation's ``dim``) as the policy's spec, and the safe
    action."""
    action = _table(data, "action")
    kind = _get(action, "type", str, "action")
    if kind == "discrete":
        _no_unknown(action, {"type", "n", "safe"}, "action")
        act = {"act_dim": _get(action, "n", int, "action"), "discrete": True}
    elif kind == "continuous":
        _no_unknown(action, {"type", "low", "high", "safe"}, "action")
        low = tuple(float(v) for v in _get(action, "low", list, "action"))
        high = tuple(float(v) for v in _get(action, "high", list, "action"))
        act = {"act_dim": len(low), "discrete": False, "action_low": low, "action_high": high}
    else:
        raise ConfigError(f"field 'action.type' must be 'discrete' or 'continuous', got {kind!r}")
    policy_table = _table(data, "policy")
    _no_unknown(policy_table, {"hidden", "output_scale"}, "policy")
    hidden = tuple(_get(policy_table, "hidden", list, "policy"))
    if not all(isinstance(h, int) and not isinstance(h, bool) for h in hidden):
        raise ConfigError(f"field 'policy.hidden' must be a list of integers, got {list(hidden)}")
    scale = _get(policy_table, "output_scale", float, "policy") if "output_scale" in policy_table else 1.0
    policy = _wrap(lambda: PolicySpec(obs_dim=_get(observation, "dim", int, "observation"), hidden=hidden,
                                      output_scale=scale, **act), "policy/action")
    return policy, _safe_action(action, policy)


def _baselines(table: dict) -> typing.Mapping[str, typing.Mapping[str, Any]]:
    """``[baselines.<method>]`` tables, each checked against that baseline's settings (its population size is
    always the budget-matched one, so it cannot be set here)."""
    _no_unknown(table, set(BASELINES), "baselines")
    out = {}
    for method, values in table.items():
        where = f"baselines.{method}"
        if not isinstance(values, dict):
            raise ConfigError(f"field {where!r} must be a table, got {values!r}")
        if "popsize" in values:
            raise ConfigError(f"field '{where}.popsize' cannot be set: every method evaluates as many individuals "
                              "per generation as SR-GHN (set evolution.population instead)")
        build_config(BASELINES[method][1], values, where)  # validates names, types and ranges
        out[method] = MappingProxyType(dict(values))
    return MappingProxyType(out)


def _check_env_id(env_id: str) -> str:
    """``env_id`` if gymnasium knows it (after importing the module of a ``module:Id`` id), else a ConfigError
    suggesting the nearest registered ids."""
    module, _, bare = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"field 'env_id' {env_id!r}: cannot import module {module!r}: {exc}") from exc
    if bare not in gym.registry:
        near = difflib.get_close_matches(bare, list(gym.registry), n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(f"field 'env_id': unknown environment {env_id!r}{hint}")
    return env_id


def _safe_action(action: dict, policy: PolicySpec) -> tuple[float, ...]:
    """``action.safe``, validated against the action space (default: index 0, or zero clipped into the bounds)."""
    if policy.discrete:
        index = _get(action, "safe", int, "action") if "safe" in action else 0
        if not 0 <= index < policy.act_dim:
            raise ConfigError(f"field 'action.safe' must be an action index in 0..{policy.act_dim - 1}, got {index}")
        return (float(index),)
    if "safe" not in action:
        return tuple(float(np.clip(0.0, lo, hi)) for lo, hi in zip(policy.action_low, policy.action_high, strict=True))
    values = _get(action, "safe", list, "action")
    if len(values) != policy.act_dim or not all(_check_type(v, float, "action.safe") is not None for v in values):
        raise ConfigError(f"field 'action.safe' must list {policy.act_dim} numbers, got {values}")
    safe = tuple(float(v) for v in values)
    if any(not lo <= v <= hi for v, lo, hi in zip(safe, policy.action_low, policy.action_high, strict=True)):
        raise ConfigError(f"field 'action.safe' {list(safe)} is outside the action bounds")
    return safe


def build_config(cls: type, table: dict, where: str) -> Any:
    """A frozen config dataclass from a TOML table: unknown keys and wrong types are errors naming the field."""
    fields = {f.name for f in dataclasses.fields(cls)}
    _no_unknown(table, fields, where)
    hints = typing.get_type_hints(cls)
    values = {key: _check_type(value, hints[key], f"{where}.{key}") for key, value in table.items()}
    return _wrap(lambda: cls(**values), where)


def _check_type(value: Any, kind: type, where: str) -> Any:
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value),
        str: isinstance(value, str),
        list: isinstance(value, list),
    }.get(kind, True)
    if not ok:
        raise ConfigError(f"field {where!r} must be {kind.__name__}, got {value!r}")
    return float(value) if kind is float else value


def _get(table: dict, key: str, kind: type, where: str = "") -> Any:
    path = f"{where}.{key}" if where else key
    if key not in table:
        raise ConfigError(f"missing field {path!r}")
    return _check_type(table[key], kind, path)


def _pop_typed(table: dict, key: str, kind: type, where: str) -> Any:
    value = _get(table, key, kind, where)
    del table[key]
    return value


def _table(data: dict, key: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"field {key!r} must be a table, got {value!r}")
    return value


def _no_unknown(table: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown field(s) {', '.join(prefix + u for u in unknown)}; "
                          f"known: {', '.join(sorted(known))}")


def _wrap(build: typing.Callable[[], Any], where: str) -> Any:
    try:
        return build()
    except ConfigError as exc:
        raise ConfigError(f"[{where}] {exc}") from exc
