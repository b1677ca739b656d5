"""Factory populations: the nominal controller a robot ships with, evolved beforehand at a larger budget.

A factory file is a policy file (:mod:`srghn.controller.checkpoint`) holding the champion GHN of a pretraining
run, the policy it writes, the observation normalizer that policy was scored with, the run's observation
statistics, and its provenance (command, seeds, env steps, wall time, machine, measured return). It lives beside
its profile: ``<profile>.factory.npz`` (built-in robots: package data in ``srghn/sim/profiles/``). A daemon with
no saved population, and ``evolve --init factory``, grow their first population from it with the GHN's own
stochastic head.

A robot may also ship a champion for a fault it is known to meet: ``<profile>.factory.<regime>.npz``, built the
same way from a run evolved in that regime and measured there. A daemon registers and gates it in its regime when
it starts (once per state directory), so a robot identified in that regime is served it at once instead of
waiting for evolution.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from pathlib import Path

import numpy as np

from srghn import CheckpointError, ConfigError
from srghn.controller.checkpoint import PolicyFile, PopulationFile, load_policy, load_population, save_policy
from srghn.controller.ghn import SRGHN
from srghn.controller.normalizer import ObsNorm
from srghn.sim.envs import NOMINAL
from srghn.sim.evaluator import InProcessEvaluator
from srghn.sim.profiles import RobotProfile
from srghn.sim.schedule import Schedule

FACTORY_SUFFIX = ".factory.npz"
CHECK_EPISODES = 5
"""Seeded episodes (seeds 0..4, in the factory's regime) the factory champion's standard return is measured on."""
SELECT_EPISODES = 10
"""Seeded episodes (seeds 0..9, in the factory's regime) every individual of the run's final population is scored
on; the best mean becomes the factory champion. A run's own champion is the fittest by its last one-episode score,
which can be a lucky episode of a gait that falls on other seeds."""


def factory_path(profile: RobotProfile, regime: str = NOMINAL) -> Path:
    """Where ``profile``'s factory file (or its champion for ``regime``) lives: beside the profile file."""
    if not profile.source:
        raise ConfigError(f"profile {profile.name!r} was not loaded from a file, so it has no factory file")
    source = Path(profile.source)
    return source.with_name(source.stem + (FACTORY_SUFFIX if regime == NOMINAL else f".factory.{regime}.npz"))


def load_factory(profile: RobotProfile, regime: str = NOMINAL) -> PolicyFile:
    """The robot's factory GHN and policy (or its factory champion for ``regime``), checked against its profile."""
    _check_regime(profile, regime)
    path = factory_path(profile, regime)
    if not path.is_file():
        if regime != NOMINAL:
            raise ConfigError(f"robot {profile.name!r} has no factory champion for regime {regime!r} ({path} does "
                              f"not exist); build one with `srghn-ctl factory build --robot {profile.name} --from "
                              f"RUN_DIR --regime {regime}`")
        raise ConfigError(f"robot {profile.name!r} has no factory population ({path} does not exist); build one "
                          f"with `srghn-ctl factory build --robot {profile.name} --from RUN_DIR`, or start "
                          "with --init scratch")
    factory = load_policy(path)
    if factory.ghn is None or factory.ghn_params is None:
        raise CheckpointError(f"{path}: a factory file must hold the GHN that wrote its policy")
    if factory.spec != profile.policy:
        raise CheckpointError(f"{path}: its policy {factory.spec.to_dict()} is not the profile's "
                              f"{profile.policy.to_dict()}; rebuild it for this profile")
    if profile.observation.normalize and factory.norm is None:
        raise CheckpointError(f"{path}: the profile normalizes observations but the factory has no normalizer")
    built_for = factory.meta.get("factory", {}).get("regime", NOMINAL)
    if built_for != regime:
        raise CheckpointError(f"{path}: it was built for regime {built_for!r}, not {regime!r}")
    return factory


def _check_regime(profile: RobotProfile, regime: str) -> None:
    if regime not in profile.regimes:
        raise ConfigError(f"--regime must be one of {profile.name}'s regimes {list(profile.regimes)}, got {regime!r}")


def regime_factories(profile: RobotProfile) -> dict[str, PolicyFile]:
    """The robot's factory champions for its declared fault regimes, where it ships any (regime -> file)."""
    return {regime: load_factory(profile, regime) for regime in profile.regimes[1:]
            if factory_path(profile, regime).is_file()}


def standard_return(profile: RobotProfile, params: np.ndarray, norm: ObsNorm | None,
                    seeds: range = range(CHECK_EPISODES), regime: str = NOMINAL) -> dict:
    """The policy's standard environment return on episodes of the given seeds in ``regime``: mean and per seed."""
    evaluator = InProcessEvaluator(profile)
    try:
        return _seeded_return(evaluator, params, norm, seeds, regime)
    finally:
        evaluator.close()


def _seeded_return(evaluator: InProcessEvaluator, params: np.ndarray, norm: ObsNorm | None, seeds: range,
                   regime: str) -> dict:
    per_seed = [float(evaluator.evaluate(params[None], np.asarray([s]), regime, norm).returns[0]) for s in seeds]
    return {"mean": float(np.mean(per_seed)), "per_seed": per_seed, "seeds": list(seeds)}


def build_factory(profile: RobotProfile, run_dir: Path, command: str | None = None, regime: str = NOMINAL) -> dict:
    """Write ``profile``'s factory file (``regime``: its factory champion for that fault) from the run in
    ``run_dir``, which must have ended in that regime: the individual of its final population with the best mean
    standard return there on seeds 0..9 (:func:`_most_robust`), or its champion where the run kept no population;
    returns the provenance."""
    _check_regime(profile, regime)
    run_dir = Path(run_dir)
    champion = load_policy(run_dir / "champion.npz")
    if champion.ghn is None or champion.ghn_params is None:
        raise ConfigError(f"{run_dir / 'champion.npz'} holds no GHN: a factory must come from an SR-GHN run")
    if champion.spec != profile.policy:
        raise ConfigError(f"the run's policy {champion.spec.to_dict()} is not {profile.name}'s "
                          f"{profile.policy.to_dict()}")
    run = _read_json(run_dir / "run.json")
    summary = _read_json(run_dir / "summary.json")
    ended_in = _final_regime(run, summary)
    if ended_in != regime:
        raise ConfigError(f"{run_dir} ended in regime {ended_in!r}, not {regime!r}: a factory champion for a regime "
                          f"comes from a run evolved there (`evolve --switch-at 0 --switch-regime {regime}`)")
    if (run_dir / "population.npz").is_file():
        champion, scored, selection = _most_robust(profile, load_population(run_dir / "population.npz"), regime)
        checked = _seeded_return_of(scored, range(CHECK_EPISODES))  # seeds 0..4 were among those scored
    else:
        checked, selection = standard_return(profile, champion.params, champion.norm, regime=regime), None
    # before the save: a run grown from the factory traces it through the file being replaced
    lineage = _lineage(profile, run_dir, run, summary)
    ghn = _adapting(profile, champion.ghn)
    provenance = {
        "robot": profile.name, "regime": regime, **lineage[-1], "command": command or lineage[-1]["command"],
        "seeds": run.get("seeds"), "method": run.get("method", "srghn"),
        "machine": run.get("provenance", {}).get("machine", platform.machine()),
        "cores": run.get("cores"), "versions": run.get("provenance", {}).get("versions"),
        "git_sha": run.get("provenance", {}).get("git_sha"),
        "champion": {"id": champion.meta.get("id"), "generation": champion.meta.get("generation"),
                     "fitness": champion.meta.get("fitness")},
        "standard_return": checked, "selection": selection, "lineage": lineage,
        "total_env_steps": (sum(stage["env_steps"] for stage in lineage)
                            if all(isinstance(stage.get("env_steps"), int) for stage in lineage) else None),
        "update_clip": _clips(champion.ghn, ghn),
    }
    path = factory_path(profile, regime)
    save_policy(path, champion.spec, champion.params, {"factory": provenance}, norm=champion.norm,
                ghn=ghn, ghn_params=champion.ghn_params, obs_stats=champion.obs_stats)
    path.chmod(0o644)  # package data: readable by every user of the installed package
    return provenance


def _final_regime(run: dict, summary: dict) -> str:
    """The regime a finished run's last generation was evolved in (its schedule at that generation)."""
    try:
        schedule = Schedule(tuple((int(g), str(r)) for g, r in run.get("schedule", ())))
        return schedule.regime_at(int(summary["generations"]) - 1)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"run.json / summary.json: no usable schedule and generation count ({exc})") from exc


def _adapting(profile: RobotProfile, ghn: SRGHN) -> SRGHN:
    """``ghn`` with the profile's update clip (and clip schedule) instead of the run's: a factory is often
    fine-tuned at a much smaller clip than adaptation to a fault needs, and what grows from it on board adapts.
    The clip only bounds self-generated updates: the policy the GHN writes is the same."""
    clip = {name: getattr(profile.ghn, name) for name in ("update_clip", "update_clip_decay", "update_clip_min")}
    if all(getattr(ghn.config, name) == value for name, value in clip.items()):
        return ghn
    return SRGHN(ghn.policy, dataclasses.replace(ghn.config, **clip), ghn.basis_seed)


def _clips(pretrained: SRGHN, shipped: SRGHN) -> dict:
    """The update clip the run was evolved with (its schedule, where it had one) and the one the factory ships."""
    cfg = pretrained.config
    schedule = ({"pretraining_decay": cfg.update_clip_decay, "pretraining_min": cfg.update_clip_min}
                if cfg.update_clip_decay != 1.0 else {})
    return {"pretraining": cfg.update_clip, **schedule, "shipped": shipped.config.update_clip}


def _lineage(profile: RobotProfile, run_dir: Path, run: dict, summary: dict) -> list[dict]:
    """The runs that produced the one in ``run_dir``, oldest first, each with its command, generations and env
    steps: a run grown from a factory carries that factory's lineage, one grown from another run's file that run's
    (when its ``run.json`` and ``summary.json`` still sit beside the file, unchanged). A factory is found by its
    bytes where the run recorded it or where ``profile``'s factory lies now. A source that cannot be
    traced is a stage that says so, never a guess."""
    started = run.get("started") or run  # a resumed run keeps the command that started it
    stage = {"source_run": str(run_dir), "command": started.get("command"), "seed": run.get("seed"),
             "generations": summary.get("generations"), "env_steps": summary.get("total_env_steps"),
             "wall_s": summary.get("wall_s")}
    origin = run.get("initial", {}).get("origin") or {"kind": "scratch"}
    if origin.get("kind") == "scratch":
        return [stage]
    candidates = [Path(origin.get("path", ""))]
    if origin.get("kind") == "factory":  # the package may have lain elsewhere (another machine or venv)
        candidates.append(factory_path(profile))
    path = next((c for c in candidates
                 if c.is_file() and hashlib.sha256(c.read_bytes()).hexdigest() == origin.get("sha256")), None)
    if path is None:
        return [{"untraced": f"{origin.get('kind')} {candidates[0]}: gone or changed since the run started"}, stage]
    earlier = _factory_provenance(path)
    if earlier is not None:  # a factory file, named by --init factory or by its path
        return [*(earlier.get("lineage") or [{k: earlier.get(k) for k in stage}]), stage]
    source = path.parent
    if not (source / "run.json").is_file() or not (source / "summary.json").is_file():
        return [{"untraced": f"{path}: no run.json and summary.json beside it"}, stage]
    return [*_lineage(profile, source, _read_json(source / "run.json"), _read_json(source / "summary.json")), stage]


def _factory_provenance(path: Path) -> dict | None:
    """The provenance a factory file carries (None: the file is no factory, e.g. another run's population)."""
    try:
        return load_policy(path).meta.get("factory")
    except CheckpointError:
        return None


def population_returns(profile: RobotProfile, population: PopulationFile, seeds: range,
                       regime: str = NOMINAL, fittest: int | None = None) -> tuple[np.ndarray, list[dict]]:
    """Every individual of ``population`` (or its ``fittest`` few) played on ``seeds`` in ``regime`` with the
    normalizer its generation was scored with: the indices fittest first (by shadow fitness) and their
    :func:`standard_return` results."""
    strategy = population.strategy
    order = np.argsort(-np.where(np.isnan(strategy.fitness), -np.inf, strategy.fitness), kind="stable")[:fittest]
    evaluator = InProcessEvaluator(profile)
    try:
        return order, [_seeded_return(evaluator, strategy.policies[i], population.norm, seeds, regime) for i in order]
    finally:
        evaluator.close()


def _most_robust(profile: RobotProfile, population: PopulationFile, regime: str,
                 seeds: range = range(SELECT_EPISODES)) -> tuple[PolicyFile, dict, dict]:
    """The individual of ``population`` with the best mean standard return on ``seeds`` in ``regime`` as a policy
    file, its returns on them, and what the choice was made on (every individual's mean; ties go to the fitter)."""
    strategy = population.strategy
    order, scored = population_returns(profile, population, seeds, regime)
    k = max(range(len(order)), key=lambda j: scored[j]["mean"])  # max keeps the first (fitter) of equal means
    best = int(order[k])
    chosen = PolicyFile(profile.policy, strategy.policies[best], population.norm,
                        {"id": int(strategy.ids[best]), "generation": strategy.generation,
                         "fitness": float(strategy.fitness[best])},
                        ghn=strategy.ghn, ghn_params=strategy.params[best].numpy(), obs_stats=population.obs_stats)
    selection = {"by": f"mean standard return on seeds {seeds[0]}-{seeds[-1]} in regime {regime}",
                 "chosen_id": int(strategy.ids[best]), "fittest_id": int(strategy.ids[order[0]]),
                 "means": {int(strategy.ids[i]): round(r["mean"], 2) for i, r in zip(order, scored, strict=True)}}
    return chosen, scored[k], selection


def _seeded_return_of(scored: dict, seeds: range) -> dict:
    """The part of a :func:`standard_return` result that covers ``seeds`` (a subset of the seeds it ran)."""
    per_seed = [scored["per_seed"][scored["seeds"].index(s)] for s in seeds]
    return {"mean": float(np.mean(per_seed)), "per_seed": per_seed, "seeds": list(seeds)}


def factory_sha(profile: RobotProfile, regime: str = NOMINAL) -> str:
    """The first 8 hex digits of the sha256 of the robot's factory file (names what came from it)."""
    return hashlib.sha256(factory_path(profile, regime).read_bytes()).hexdigest()[:8]


def factory_id(profile: RobotProfile, regime: str = NOMINAL) -> str:
    """The registry id of the robot's factory champion (for ``regime``): its name and file hash."""
    return f"{profile.name}-factory-{'' if regime == NOMINAL else regime + '-'}{factory_sha(profile, regime)}"


def factory_provenance(profile: RobotProfile, regime: str = NOMINAL) -> dict:
    """The provenance stored in the robot's factory file (for ``regime``)."""
    return load_factory(profile, regime).meta.get("factory", {})


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc}); is this a finished run directory?") from exc
