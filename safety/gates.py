"""The gate suite a champion must pass before it may go live (docs/champions.md, "Gates").

Gates, in order (H = hard, never overridable; S = soft, overridable with ``--force --reason``):

* ``artifact_integrity`` (H): the stored bytes hash to the sha256 the registry recorded;
* ``model_size`` (H): the ONNX file is at most ``max_model_bytes``;
* ``onnx_valid`` (H): ``onnx.checker`` passes, weights are inside the file, ONNX Runtime loads it, and its
  contract metadata matches the robot profile;
* ``parity`` (H): ONNX Runtime vs the numpy float64 reference forward of the stored parameters on the stress set,
  max abs difference <= ``parity_tol`` (logits for discrete policies, whose argmax must also agree wherever the
  top two logits are further apart than the tolerance);
* ``finite_actions`` (H): no NaN/Inf in any output on the stress set (which holds NaN and Inf observations);
* ``action_bounds`` (H): every action inside the profile's bounds (discrete: a valid index);
* ``floor[<regime>]`` (H): absolute minimum of ``floor_metric`` in that regime's fixed-seed episodes;
* ``above_safe[<regime>]`` (H): fitness above the safe action's on the same episodes;
* ``incumbent_floor[<regime>]`` (H): where the regime has an incumbent (its best champion that passed its gates),
  fitness >= safe + ``relative_floor`` * (incumbent - safe): a floor derived from the safe action and what the
  regime's incumbent does, for regimes where no absolute floor makes sense;
* ``regression[<regime>]`` (S): fitness >= incumbent - tolerance * |incumbent| against the live champion;
* ``latency_p99`` (S): 99th percentile of one single-observation inference's CPU time, 1 thread, within budget.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from datetime import datetime, timezone

import numpy as np

from srghn.controller.normalizer import ObsNorm
from srghn.controller.onnx_policy import ACTION_NAME, LOGITS_NAME, OnnxPolicy, PolicyLoadError, reference_outputs
from srghn.safety.report import GateReport, GateResult
from srghn.safety.scenarios import ScenarioResult, run_scenarios
from srghn.safety.stress import record_observations, stress_observations
from srghn.sim.gate_config import GateConfig
from srghn.sim.profiles import RobotProfile


def run_gate_suite(profile: RobotProfile, artifact: bytes, expected_sha256: str, params: np.ndarray, *,
                   champion_id: str, incumbent: bytes | None = None, incumbent_id: str | None = None,
                   incumbent_error: str | None = None, config: GateConfig | None = None,
                   norm: ObsNorm | None = None, references: Mapping[str, tuple[str, bytes]] | None = None,
                   ) -> GateReport:
    """Run every gate on ``artifact`` (the candidate's ONNX bytes) and return the report.

    ``params`` and ``norm`` are the candidate's flat policy parameters and observation normalizer, the reference
    for parity (which therefore covers the normalization inside the graph too). ``incumbent`` is the live
    champion's (already verified) artifact, or None when nothing is live; ``incumbent_error`` says why a live
    champion could not be loaded (the regression gates then fail). ``references`` maps a regime to the id and
    (verified) artifact of its incumbent, the best champion that passed its gates in that regime: the source of
    the ``incumbent_floor`` gates.
    """
    config = config or profile.gates
    references = {r: ref for r, ref in (references or {}).items() if config.relative_floor > 0}
    t0 = time.perf_counter()
    results: list[GateResult] = []
    actual = hashlib.sha256(artifact).hexdigest()
    results.append(GateResult("artifact_integrity", True, expected_sha256[:16], actual[:16], actual == expected_sha256,
                              "" if actual == expected_sha256 else
                              f"stored bytes hash to {actual}, the registry recorded {expected_sha256}"))
    results.append(GateResult("model_size", True, config.max_model_bytes, len(artifact),
                              len(artifact) <= config.max_model_bytes, "bytes"))
    intact = actual == expected_sha256
    # A tampered file is not even parsed: its bytes are not what was registered.
    policy, problem = _validate(profile, artifact, params, champion_id) if intact else (None, "not run: integrity")
    results.append(GateResult("onnx_valid", True, "checker + contract", "ok" if policy else "invalid",
                              policy is not None, problem))
    names = ["parity", "finite_actions", "action_bounds",
             *(f"floor[{r}]" for r in _regimes(profile, config) if config.floor_for(r) is not None),
             *(f"above_safe[{r}]" for r in _regimes(profile, config)),
             *(f"incumbent_floor[{r}]" for r in _regimes(profile, config) if r in references),
             *(f"regression[{r}]" for r in _regimes(profile, config)), "latency_p99"]
    if policy is None:
        why = "not run: the artifact failed " + ("validation" if intact else "integrity")
        results += [GateResult(n, not n.startswith(("regression", "latency")), None, None, False, why)
                    for n in names]
    else:
        stress = _stress_gates(profile, policy, params, config, norm)
        results += stress
        if all(g.passed for g in stress):
            results += _scenario_gates(profile, policy, incumbent, incumbent_error, config, references)
        else:  # a policy that fails the stress set never drives even the simulated robot
            results += [GateResult(n, n.startswith(HARD_SCENARIO_GATES), None, None, False,
                                   "not run: the policy failed the stress-set gates")
                        for n in names if n.startswith((*HARD_SCENARIO_GATES, "regression"))]
        results.append(_latency_gate(policy, config))
    return GateReport(champion_id=champion_id, robot=profile.name, gates=tuple(results), incumbent_id=incumbent_id,
                      created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      wall_s=round(time.perf_counter() - t0, 3), config=config.to_dict())


HARD_SCENARIO_GATES = ("floor", "above_safe", "incumbent_floor")


def _regimes(profile: RobotProfile, config: GateConfig) -> tuple[str, ...]:
    return config.regimes or profile.regimes


def _validate(profile: RobotProfile, artifact: bytes, params: np.ndarray,
              champion_id: str) -> tuple[OnnxPolicy | None, str]:
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load_from_string(artifact)
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ... for bad bytes
        return None, f"onnx.checker: {exc}".splitlines()[0][:300]
    if any(uses_external_data(t) for t in model.graph.initializer):
        return None, "weights are stored outside the file (external data); the artifact must be self-contained"
    try:
        policy = OnnxPolicy(artifact)
    except PolicyLoadError as exc:
        return None, str(exc).splitlines()[0][:300]
    expected = profile.policy
    declared = {"robot": policy.metadata.get("srghn.robot"), "champion_id": policy.metadata.get("srghn.champion_id"),
                "spec": policy.spec}
    if declared["spec"] != expected:
        return None, f"model declares policy {policy.spec.to_dict()}, the profile says {expected.to_dict()}"
    if declared["robot"] != profile.name or declared["champion_id"] != champion_id:
        return None, (f"model metadata names robot {declared['robot']!r} / champion {declared['champion_id']!r}, "
                      f"expected {profile.name!r} / {champion_id!r}")
    if np.asarray(params).size != expected.num_params:
        return None, f"stored parameters have {np.asarray(params).size} values, the policy needs {expected.num_params}"
    return policy, ""


def _stress_gates(profile: RobotProfile, policy: OnnxPolicy, params: np.ndarray, config: GateConfig,
                  norm: ObsNorm | None) -> list[GateResult]:
    spec = profile.policy
    recorded = record_observations(profile, params, seed=config.seed, norm=norm)
    obs = stress_observations(spec.obs_dim, config.seed, recorded)
    got = policy.run(obs)
    ref = reference_outputs(spec, params, obs, config.obs_clip, norm)
    compared = LOGITS_NAME if spec.discrete else ACTION_NAME
    with np.errstate(invalid="ignore", over="ignore"):
        # The contract's outputs are float32: compare with the reference rounded to float32 as well.
        diff = np.abs(got[compared].astype(np.float64) - ref[compared].astype(np.float32).astype(np.float64))
    max_diff = float(np.nanmax(diff)) if np.isfinite(diff).all() else float("inf")
    parity_ok, detail = max_diff <= config.parity_tol, f"max abs diff, {len(obs)} stress rows"
    if spec.discrete and parity_ok:
        top2 = np.sort(ref[LOGITS_NAME], axis=1)[:, -2:]
        decisive = (top2[:, 1] - top2[:, 0]) > config.parity_tol
        mismatched = int(np.sum(decisive & (got[ACTION_NAME] != ref[ACTION_NAME])))
        if mismatched:
            parity_ok, detail = False, f"argmax action differs from the reference on {mismatched} observations"
    non_finite = int(sum(np.any(~np.isfinite(np.asarray(v, dtype=np.float64)).reshape(len(obs), -1), axis=1).sum()
                         for v in got.values()))
    action = got[ACTION_NAME]
    if spec.discrete:
        violation = float(np.sum((action < 0) | (action >= spec.act_dim)))
        bounds_detail = "actions outside [0, n)"
    else:
        low, high = np.asarray(spec.action_low), np.asarray(spec.action_high)
        with np.errstate(invalid="ignore"):
            excess = np.maximum(np.maximum(low - action, action - high), 0.0)
        violation = float(np.nanmax(excess)) if np.isfinite(action).any() else 0.0
        bounds_detail = "largest distance outside [low, high]"
    return [GateResult("parity", True, config.parity_tol, max_diff, parity_ok, detail),
            GateResult("finite_actions", True, 0, non_finite, non_finite == 0,
                       f"rows with NaN/Inf output, of {len(obs)} stress rows"),
            GateResult("action_bounds", True, 0.0, violation, violation == 0.0, bounds_detail)]


def _scenario_gates(profile: RobotProfile, policy: OnnxPolicy, incumbent: bytes | None, incumbent_error: str | None,
                    config: GateConfig, references: Mapping[str, tuple[str, bytes]]) -> list[GateResult]:
    regimes = _regimes(profile, config)
    mine = run_scenarios(profile, policy, regimes, config.episodes, config.seed, config.max_steps)
    theirs: dict[str, ScenarioResult] | None = None
    if incumbent is not None and incumbent_error is None:
        try:
            theirs = run_scenarios(profile, OnnxPolicy(incumbent), regimes, config.episodes, config.seed,
                                   config.max_steps)
        except PolicyLoadError as exc:
            incumbent_error = f"the live champion's model cannot be loaded: {exc}"
    safe = run_scenarios(profile, None, regimes, config.episodes, config.seed, config.max_steps)
    results = []
    for regime in regimes:
        floor = config.floor_for(regime)
        if floor is not None:
            value = mine[regime].metric(config.floor_metric)
            results.append(GateResult(f"floor[{regime}]", True, floor, value, value >= floor,
                                      (f"fewest steps of {config.episodes} episodes" if config.floor_metric == "steps"
                                       else f"mean {config.floor_metric} of {config.episodes} episodes")))
    for regime in regimes:  # a champion must do better than standing still (or whatever the safe action does)
        results.append(GateResult(f"above_safe[{regime}]", True, round(safe[regime].fitness, 6), mine[regime].fitness,
                                  mine[regime].fitness > safe[regime].fitness,
                                  "fitness vs the safe action's on the same episodes"))
    for regime in regimes:
        if regime in references:
            results.append(_incumbent_floor(profile, mine[regime], safe[regime], *references[regime], config))
    for regime in regimes:
        score = mine[regime].fitness
        if incumbent_error is not None:
            results.append(GateResult(f"regression[{regime}]", False, None, score, False, incumbent_error))
        elif theirs is None:
            results.append(GateResult(f"regression[{regime}]", False, None, score, True,
                                      "no live champion to compare with"))
        else:
            ref = theirs[regime].fitness
            bound = ref - config.regression_tolerance * abs(ref)
            results.append(GateResult(f"regression[{regime}]", False, round(bound, 6), score, score >= bound,
                                      f"fitness; live {ref:.2f}, tolerance {config.regression_tolerance:g}"))
    return results


def _incumbent_floor(profile: RobotProfile, mine: ScenarioResult, safe: ScenarioResult, incumbent_id: str,
                     model: bytes, config: GateConfig) -> GateResult:
    """The floor a regime's incumbent sets: ``relative_floor`` of the way from the safe action's fitness to the
    incumbent's, on the same episodes. An incumbent no better than the safe action sets no floor above it."""
    regime, name = mine.regime, f"incumbent_floor[{mine.regime}]"
    try:
        theirs = run_scenarios(profile, OnnxPolicy(model), (regime,), config.episodes, config.seed,
                               config.max_steps)[regime]
    except PolicyLoadError as exc:
        return GateResult(name, True, None, mine.fitness, False, f"incumbent {incumbent_id} cannot be loaded: {exc}")
    bound = safe.fitness + config.relative_floor * max(0.0, theirs.fitness - safe.fitness)
    return GateResult(name, True, round(bound, 6), mine.fitness, mine.fitness >= bound,
                      f"fitness; safe {safe.fitness:.2f}, incumbent {incumbent_id} {theirs.fitness:.2f}, share "
                      f"{config.relative_floor:g}")


def _latency_gate(policy: OnnxPolicy, config: GateConfig, rounds: int = 5) -> GateResult:
    """p99 of single-observation inference in this thread's CPU time (the session runs in the calling thread),
    best of ``rounds`` rounds: what the model costs, not how long other processes kept the core. A machine
    saturated by evolution made wall-clock p99 exceed 1 ms for a 40 µs model and fail a good champion."""
    obs = np.random.default_rng(config.seed).standard_normal((1, policy.spec.obs_dim)).astype(np.float32)
    session, feed = policy.session, {"obs": obs}
    for _ in range(100):
        session.run(None, feed)
    per_round = max(100, config.latency_runs // rounds)
    p99s, p50s = [], []
    for _ in range(rounds):
        times = np.empty(per_round)
        for i in range(per_round):
            t = time.thread_time_ns()
            session.run(None, feed)
            times[i] = time.thread_time_ns() - t
        p99s.append(float(np.percentile(times, 99) / 1e3))
        p50s.append(float(np.percentile(times, 50) / 1e3))
    p99 = min(p99s)
    return GateResult("latency_p99", False, config.latency_p99_us, round(p99, 2), p99 <= config.latency_p99_us,
                      f"µs of CPU time, batch 1, 1 thread, best of {rounds} rounds (p50 {min(p50s):.1f})")
