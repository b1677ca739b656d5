"""Release operations that need more than the registry: export + register, run the gates, register a run.

This module imports torch (through the exporter) and the simulator; the registry and artifact store do not.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path

import numpy as np

from srghn import ConfigError
from srghn.controller.checkpoint import load_population
from srghn.controller.normalizer import ObsNorm
from srghn.deploy.daemon.onnx_export import ExportResult, export_policy
from srghn.deploy.registry.release import passed_in_regime
from srghn.deploy.registry.store import ONNX_SUFFIX, Champion, Registry
from srghn.errors import ArtifactCorrupted
from srghn.safety.gates import run_gate_suite
from srghn.safety.report import GateReport
from srghn.safety.stress import record_observations, stress_observations
from srghn.sim.ancestry import Ancestry
from srghn.sim.envs import Regime
from srghn.sim.profiles import PROFILE_DIR, RobotProfile, available_profiles, load_profile


def run_tag(robot: str, seed: int) -> str:
    """A fresh tag for one evolution run: ``<robot>-s<seed>-<6 hex>``; ids are ``<tag>-i<individual>``."""
    return f"{robot}-s{seed}-{uuid.uuid4().hex[:6]}"


def export_for_profile(profile: RobotProfile, params: np.ndarray, champion_id: str,
                       extra_meta: dict | None = None, norm: ObsNorm | None = None) -> ExportResult:
    """Export ``params`` and its normalizer with the profile's parity tolerance and observation clip, checked on
    its stress set (random, extreme, NaN/Inf rows plus observations recorded from seeded episodes of its
    simulator)."""
    seed = profile.gates.seed
    recorded = record_observations(profile, params, seed=seed, norm=norm)
    stress = stress_observations(profile.policy.obs_dim, seed, recorded)
    return export_policy(profile.policy, params, robot=profile.name, champion_id=champion_id, stress=stress,
                         obs_clip=profile.gates.obs_clip, tol=profile.gates.parity_tol, extra_meta=extra_meta,
                         norm=norm)


def register_policy(registry: Registry, profile: RobotProfile, params: np.ndarray, *, champion_id: str,
                    parents: tuple[str, ...] = (), generation: int | None = None, regime: str | None = None,
                    seed: int | None = None, run_dir: str | None = None, fitness: dict | None = None,
                    meta: dict | None = None, actor: str = "srghn", norm: ObsNorm | None = None) -> Champion:
    """Export ``params`` with its frozen normalizer ``norm`` (parity-checked) and register it as a candidate."""
    provenance = {"generation": generation, "regime": regime, "seed": seed, "parents": list(parents)}
    result = export_for_profile(profile, params, champion_id, {"provenance": provenance}, norm)
    meta = {**(meta or {}), "profile": _profile_ref(profile), "obs_norm": None if norm is None else norm.to_dict(),
            "export": {"parity_max_abs_diff": result.max_abs_diff, "stress_rows": result.stress_rows}}
    return registry.register(champion_id=champion_id, robot=profile.name, model=result.model, params=params,
                             policy=profile.policy.to_dict(), parents=parents, generation=generation,
                             regime=regime, seed=seed, run_dir=run_dir, fitness=fitness, meta=meta, actor=actor)


def register_run(registry: Registry, profile: RobotProfile, run_dir: Path, top: int = 3,
                 actor: str = "srghn") -> list[Champion]:
    """Register the ``top`` individuals of a finished run's final population (champion first) as candidates."""
    run_dir = Path(run_dir)
    population = load_population(run_dir / "population.npz")
    strategy, meta = population.strategy, population.meta
    policies, fitness = strategy.policies, strategy.fitness.astype(np.float64)
    ids, parent_ids = strategy.ids, strategy.parent_ids
    run_info = _read_json(run_dir / "run.json")
    seed = int(run_info.get("seed", 0))
    tag = run_tag(profile.name, seed)
    scores = np.where(np.isnan(fitness), -np.inf, fitness)
    order = np.argsort(-scores, kind="stable")[:top]
    finite = fitness[np.isfinite(fitness)]
    stats = {"population": int(len(fitness)),
             "population_best": float(finite.max()) if finite.size else None,
             "population_mean": float(finite.mean()) if finite.size else None,
             "population_median": float(np.median(finite)) if finite.size else None,
             "population_std": float(finite.std()) if finite.size else None,
             "episodes": run_info.get("episodes")}
    ancestry = Ancestry.from_run(run_dir / "run.json", run_dir / "metrics.jsonl")
    registry.record_run(tag, profile.name, str((run_info.get("initial") or {}).get("origin", {}).get("kind", "file")))
    registered = []
    for rank, index in enumerate(order, start=1):
        parent = int(parent_ids[index])
        registered.append(register_policy(
            registry, profile, policies[index], champion_id=f"{tag}-i{int(ids[index])}",
            parents=(f"{tag}-i{parent}",) if parent >= 0 else (), generation=int(meta.get("generation", 0)),
            regime=meta.get("regime"), seed=seed, run_dir=str(run_dir.resolve()),
            fitness={"fitness": None if np.isnan(fitness[index]) else float(fitness[index]), "rank": rank, **stats},
            meta={"individual": int(ids[index]), "run_tag": tag, "provenance": run_info.get("provenance", {})},
            actor=actor, norm=population.norm))
        registry.record_ancestry(tag, ancestry.chain(int(ids[index])))
    return registered


def profile_of(champion: Champion, registry: Registry | None = None) -> RobotProfile:
    """The robot profile a champion was registered under (built-in name or profile path), with the regimes the
    parametric twin identified for its robot when ``registry`` is given (so champions evolved in one can be gated
    in it)."""
    profile = load_profile(champion.meta.get("profile") or champion.robot)
    return with_identified(registry, profile) if registry is not None else profile


def with_identified(registry: Registry, profile: RobotProfile) -> RobotProfile:
    """``profile`` plus the regimes identified for its robot and kept in ``registry`` (unusable rows skipped)."""
    for name, definition in registry.regimes(profile.name).items():
        if name not in profile.regimes:
            try:
                profile = profile.with_regime(name, Regime.from_dict(definition, f"registry regime {name}"))
            except ConfigError:
                continue
    return profile


def own_regimes(champion: Champion, profile: RobotProfile) -> tuple[str, ...] | None:
    """The regimes of a champion's release gate: the regime it was evolved in, unless the profile names its gate
    regimes (``gates.regimes``); None: every regime of the profile."""
    if not profile.gates.regimes and champion.regime in profile.regimes:
        return (champion.regime,)
    return profile.gates.regimes or None


def is_own_gate(champion: Champion, profile: RobotProfile, regimes: tuple[str, ...] | None) -> bool:
    """Whether a gate in ``regimes`` (None: the default) is the champion's release gate: the default regimes,
    exactly the champion's own regime, or the same set as :func:`own_regimes`."""
    if regimes is None or tuple(regimes) == (champion.regime,):
        return True
    own = own_regimes(champion, profile)
    return set(regimes) == set(own if own is not None else profile.regimes)


def gate_champion(registry: Registry, champion_id: str, actor: str = "srghn",
                  profile: RobotProfile | None = None, regimes: tuple[str, ...] | None = None,
                  own: bool | None = None) -> GateReport:
    """Run the gate suite on a champion against the robot's live champion and store the report.

    ``regimes`` narrows the scenarios to those regimes (the daemon gates in the regime the robot is in now: a
    champion adapted to an inverted motor must not be held to the nominal robot's floor); default: the regime the
    champion was evolved in, unless the profile names its gate regimes (``gates.regimes``), else every regime.

    ``own``: whether this is the champion's release gate (default: :func:`is_own_gate`). Only a release gate of a
    champion that never went live becomes its report and sets its status (passed or failed); every other gate is
    stored beside it (:meth:`Registry.store_report`).

    The candidate's artifact is read without verification so the integrity gate can report a mismatch; its
    parameters (the parity reference) and the incumbent's artifact are verified on load."""
    champion = registry.get(champion_id)
    profile = profile or profile_of(champion, registry)
    if own is None:
        own = is_own_gate(champion, profile, regimes)
    artifact = registry.artifacts.read_unverified(champion.artifact_sha256, ONNX_SUFFIX) or b""
    params = registry.load_params(champion.id)
    norm = champion_norm(champion)
    live = registry.live(champion.robot)
    incumbent, incumbent_id, incumbent_error = None, None, None
    if live is not None and live.id != champion.id:
        incumbent_id = live.id
        try:
            incumbent = registry.load_model(live.id)
        except ArtifactCorrupted as exc:
            incumbent_error = f"the live champion cannot be compared with: {exc}"
    if regimes is None:
        regimes = own_regimes(champion, profile)
    config = profile.gates if regimes is None else dataclasses.replace(profile.gates, regimes=tuple(regimes))
    report = run_gate_suite(profile, artifact, champion.artifact_sha256, params, champion_id=champion.id,
                            incumbent=incumbent, incumbent_id=incumbent_id, incumbent_error=incumbent_error,
                            config=config, norm=norm,
                            references=regime_incumbents(registry, champion, config.regimes or profile.regimes))
    if live is not None and live.id == champion.id:
        report = dataclasses.replace(report, champion_live=True)
    registry.store_report(champion.id, report, actor, own=own)
    return report


def regime_incumbents(registry: Registry, champion: Champion, regimes: tuple[str, ...]) -> dict[str, tuple[str, bytes]]:
    """Per regime, the id and verified artifact of its best champion that passed its gates (the candidate itself
    left out): the incumbents the derived ``incumbent_floor`` gates measure against. A corrupted artifact is
    skipped (the next best one counts)."""
    out = {}
    for regime in regimes:
        for other in passed_in_regime(registry, champion.robot, regime, exclude=champion.id):
            try:
                out[regime] = (other.id, registry.load_model(other.id))
                break
            except ArtifactCorrupted:
                continue
    return out


def champion_norm(champion: Champion) -> ObsNorm | None:
    """The observation normalizer a champion was registered with (``None``: it sees raw observations)."""
    doc = champion.meta.get("obs_norm")
    return None if doc is None else ObsNorm.from_dict(doc)


def _profile_ref(profile: RobotProfile) -> str:
    """The built-in profile's name, or the path of a profile file (so gating later loads the same thresholds)."""
    builtin = PROFILE_DIR / f"{profile.name}.toml"
    if profile.name in available_profiles() and (not profile.source or Path(profile.source).resolve() == builtin):
        return profile.name
    return str(Path(profile.source).resolve())


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
