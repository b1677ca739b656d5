"""Which regime is the robot in? Replay its reported transitions in the parametric twin (:mod:`srghn.sim.twin`).

1. Every candidate regime -- the profile's declared ones and any ``known`` ones (regimes identified before, which
   a registry keeps) -- predicts each reported ``(obs, action, next_obs)``; its mean squared error is recorded.
2. A robot with a ``[twin]`` table then has the twin's parameters fitted by least squares, starting from the best
   candidate (and from ``nominal`` too when that fit lands on no candidate and explains the transitions less than
   a thousand times better than the best candidate: a second start guards against a local minimum). A fit whose
   every parameter lies within the profile's tolerance of a candidate's value IS that candidate (the current
   regime first, else the one predicting best). Otherwise it is a new regime, named
   ``identified-<hash of its values on the tolerance grid>`` (one fault, one name), whose
   :class:`~srghn.sim.envs.Regime` -- the fitted values themselves, which the twin search and the gates simulate --
   is returned for the registry to keep.
   A fit whose residual stays above the twin's ``unexplained`` is returned with ``explained`` False, and always as a
   new regime (or the one its grid point named before, as stored): damage of a kind the twin does not model (a
   shortened leg), for which the robot's own returns must decide. (Its fitted values often lie within tolerance of
   nominal's: named nominal, the Ant's shorter foot went unreported for 150 s.) No fit is made of a window that
   holds the moment of a change -- the believed regime predicts its first transitions exactly and none after the
   first it misses: such a fit lands between the regimes before and after it. The robot stays where it was until the
   change has left the window.
3. A robot without a ``[twin]`` table (CartPole: its regimes are action permutations) is in the candidate that
   predicts best.

In both, the regime the robot is believed in (the current one, else ``nominal``) keeps the robot unless another
candidate predicts its transitions clearly better: its error below ``margin`` times the believed one's, and the
believed one's above the float32 rounding of the observations (:func:`rounding_floor`). The twin's fit starts
from the candidate so chosen.

Robots whose state cannot be set from an observation (LunarLander) are not identifiable here: their drift shows in
the returns they report (:mod:`srghn.safety.drift`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from srghn.errors import InvalidTransitions
from srghn.sim.envs import ALL, KINDS, LOG_KINDS, NOMINAL, Regime, kind_distance
from srghn.sim.preflight import IDENTIFIED  # the prefix of a regime the twin found that matches no candidate
from srghn.sim.profiles import RobotProfile
from srghn.sim.twin import Fit, NotIdentifiable, Twin, replayable


@dataclass(frozen=True)
class Identification:
    """The regime a robot's transitions show."""

    regime: str
    """A candidate's name, or ``identified-…`` for a new regime."""
    known: bool
    """Whether ``regime`` is one of the candidates (declared, or passed in as known)."""
    definition: Regime
    """What ``regime`` changes: for a new regime, what a registry stores to simulate it."""
    errors: Mapping[str, float]
    """Mean squared one-step prediction error of every candidate regime."""
    params: Mapping[str, float] = field(default_factory=dict)
    """Fitted twin parameters (``gain.hip_1`` -> value); empty without a ``[twin]`` table."""
    stderr: Mapping[str, float] = field(default_factory=dict)
    """Standard error of each fitted parameter."""
    residual: float = float("nan")
    """Mean squared prediction error at the fit (without a twin: of the chosen regime)."""
    transitions: int = 0
    """How many transitions were used."""
    explained: bool = True
    """Whether the fit explains the transitions (its residual is at most the twin's ``unexplained``): False for
    damage of a kind the twin does not model, whose regime here is only the nearest it can say."""

    def to_dict(self) -> dict:
        """JSON-ready copy (telemetry, the registry)."""
        return {"regime": self.regime, "known": self.known, "definition": self.definition.to_dict(),
                "errors": dict(self.errors), "params": dict(self.params), "stderr": dict(self.stderr),
                "residual": self.residual, "transitions": self.transitions, "explained": self.explained}


def random_transitions(profile: RobotProfile, regime: str, n: int, seed: int = 0, scale: float = 0.5,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a robot in ``regime`` reports under seeded random actions (uniform indices, or uniform in ``scale``
    times the bounds): float32 observations, the actions it was sent, the next observations (an episode that ends
    is reset, and its last transition kept)."""
    from srghn.sim.evaluator import make_env

    spec = profile.policy
    env = make_env(profile)
    rng = np.random.default_rng(seed)
    try:
        obs, _ = env.reset(seed=seed, options={"regime": regime})
        rows = []
        for _ in range(n):
            if spec.discrete:
                action = np.array([rng.integers(spec.act_dim)], np.float32)
            else:
                action = (scale * rng.uniform(spec.action_low, spec.action_high)).astype(np.float32)
            nxt, _, terminated, truncated, _ = env.step(int(action[0]) if spec.discrete else action)
            rows.append((np.float32(obs), action, np.float32(nxt)))
            obs = env.reset()[0] if terminated or truncated else nxt
    finally:
        env.close()
    obs_, actions, next_obs = (np.stack(column) for column in zip(*rows, strict=True))
    return obs_, actions, next_obs


ROUNDING_FACTOR = 100.0
"""How many times the mean squared float32 rounding of the observations an error may be and still count as
exact (:func:`rounding_floor`)."""


def rounding_floor(next_obs: np.ndarray) -> float:
    """The mean squared error below which a regime predicts the transitions exactly, as far as float32
    observations can tell: :data:`ROUNDING_FACTOR` times the mean squared spacing of float32 numbers at the
    observed values (about 1e-12 for observations of order 1-10). Prediction errors of a wrong regime on a moving
    robot are many orders above it; on a robot that does not move they tie with the right one's below it."""
    spacing = np.spacing(np.abs(np.asarray(next_obs, np.float64)).astype(np.float32)).astype(np.float64)
    return ROUNDING_FACTOR * float(np.mean(spacing ** 2))


def _straddles(twin: Twin, data: tuple, regime: Regime) -> bool:
    """Whether the transitions hold a change out of ``regime``: it predicts the first of them exactly (as far as
    float32 observations tell, :func:`rounding_floor` per transition) and none after the first it misses. Where
    exact and missed transitions alternate (a weak leg the policy barely uses) it is no change but the fault."""
    obs, actions, next_obs = data
    twin.set_regime(regime)
    errors = np.mean((twin.predict(obs, actions, regime.permutation) - next_obs) ** 2, axis=1)
    spacing = np.spacing(np.abs(next_obs).astype(np.float32)).astype(np.float64)
    exact = errors <= ROUNDING_FACTOR * np.mean(spacing ** 2, axis=1)
    first_missed = int(np.argmin(exact))
    return bool(exact[0]) and not exact[first_missed:].any()


def identifiable(profile: RobotProfile) -> bool:
    """Whether the robot's regimes can be identified from its transitions (its state can be set from an
    observation)."""
    return replayable(profile)


def _transitions(profile: RobotProfile, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray,
                 limit: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The transitions as float64 arrays of checked shapes (the latest ``limit`` of them)."""
    spec = profile.policy
    obs, next_obs = np.asarray(obs, np.float64), np.asarray(next_obs, np.float64)
    actions = np.asarray(actions, np.float64)
    n = len(obs)
    if actions.ndim == 1:
        actions = actions.reshape(n, -1)
    width = 1 if spec.discrete else spec.act_dim
    if n < 1 or obs.shape != (n, spec.obs_dim) or next_obs.shape != obs.shape or actions.shape != (n, width):
        raise InvalidTransitions(f"transitions must be obs ({n}, {spec.obs_dim}), actions ({n}, {width}) and next_obs "
                         f"({n}, {spec.obs_dim}) with n >= 1; got {obs.shape}, {actions.shape}, {next_obs.shape}")
    if not (np.isfinite(obs).all() and np.isfinite(actions).all() and np.isfinite(next_obs).all()):
        raise InvalidTransitions("transitions hold NaN or infinite values")
    if spec.discrete and not np.isin(actions, np.arange(spec.act_dim)).all():
        raise InvalidTransitions(f"discrete actions must be indices 0..{spec.act_dim - 1}")
    if limit is not None:
        obs, actions, next_obs = obs[-limit:], actions[-limit:], next_obs[-limit:]
    return obs, actions, next_obs


def _candidates(profile: RobotProfile, known: Mapping[str, Regime] | None) -> dict[str, Regime]:
    out = {name: profile.regime_defs[name] for name in profile.regimes}
    out.update(known or {})
    return out


def prediction_errors(profile: RobotProfile, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray,
                      known: Mapping[str, Regime] | None = None) -> dict[str, float]:
    """Mean squared one-step prediction error of the transitions in each candidate regime."""
    if not identifiable(profile):
        raise NotIdentifiable(f"regimes of {profile.env_id} cannot be identified from observations")
    twin = Twin(profile)
    try:
        data = _transitions(profile, obs, actions, next_obs, None)
        return {name: twin.error(*data, regime) for name, regime in _candidates(profile, known).items()}
    finally:
        twin.close()


def identify(profile: RobotProfile, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray,
             current: str | None = None, known: Mapping[str, Regime] | None = None,
             margin: float = 0.2) -> Identification:
    """The regime the transitions show (see the module docstring). ``current`` is the regime the shadow simulator
    is in now; ``known`` adds regimes to the profile's declared ones; ``margin``: the best candidate replaces the
    believed regime (``current``, else nominal) only if its error is below ``margin`` times the believed one's."""
    if not identifiable(profile):
        raise NotIdentifiable(f"regimes of {profile.env_id} cannot be identified from observations")
    twin = Twin(profile)
    try:
        limit = profile.twin.max_transitions if profile.twin is not None else None
        data = _transitions(profile, obs, actions, next_obs, limit)
        candidates = _candidates(profile, known)
        errors = {name: twin.error(*data, regime) for name, regime in candidates.items()}
        best = min(errors, key=errors.get)
        # The regime the robot is believed in -- the current one, else nominal (a robot is healthy until its
        # transitions show otherwise) -- stays unless another candidate predicts them clearly better: where a
        # regime's change leaves these transitions alone (more damping on a robot that barely moves, a weak motor
        # that is sent no torque), its error ties with nominal's up to float rounding, and the smallest of equals
        # was a false alarm (a healthy HalfCheetah identified as `stiff`; benchmarks/drift_false_alarms.py).
        # Nor can any regime beat one that predicts the transitions to within the float32 rounding of the
        # observations (a HalfCheetah holding a posture: `stiff` predicted it 4x "better" than nominal, both at
        # 1e-15, a false alarm on a healthy robot).
        believed = current if current in errors else NOMINAL if NOMINAL in errors else None
        if believed is not None and best != believed and (errors[believed] <= rounding_floor(data[2])
                                                          or not errors[best] < margin * errors[believed]):
            best = believed
        if not twin.fitted or (best == believed and errors[best] <= rounding_floor(data[2])):
            # no twin to fit, or the believed regime predicts the transitions exactly: no fault shows that a fit
            # could name (an identified robot's every later window; the fits kept a core busy for minutes)
            return Identification(best, True, candidates[best], errors, residual=errors[best],
                                  transitions=len(data[0]))
        if believed is not None and _straddles(twin, data, candidates[believed]):
            # The window holds the moment the robot changed: a fit lands between the regimes before and after it
            # (and costs an Ant window 3-5 s, for a regime nobody is in). The robot's next transitions push the
            # change out of the window (32 of them: 0.16 s at 200 Hz); until then it is where it was.
            return Identification(believed, True, candidates[believed], errors, residual=errors[believed],
                                  transitions=len(data[0]))
        return _fit_and_match(profile, twin, data, candidates, errors, best, current)
    finally:
        twin.close()


def _constrained(profile: RobotProfile, twin: Twin, fit: Fit) -> set[str]:
    """Keys of the parameters the transitions determine: a change by the tolerance moves the predictions by more
    than twice the fit's residual (RMS). An actuator that was sent no torque (a robot on its safe action) leaves its
    gain free, and any value the optimiser lands on says nothing about the robot."""
    floor = 4.0 * fit.trimmed_residual + 1e-14
    return {p.key for p in twin.fitted
            if (fit.sensitivity.get(p.key, np.inf) * profile.twin.tolerance_of(p.kind)) ** 2 > floor}


def _fit_and_match(profile: RobotProfile, twin: Twin, data: tuple, candidates: dict[str, Regime],
                   errors: dict[str, float], best: str, current: str | None) -> Identification:
    start = best
    n = len(data[0])
    fit = twin.fit(*data, candidates[start])
    explained = fit.residual <= profile.twin.unexplained
    if explained and not _constrained(profile, twin, fit):  # the transitions carry no information on any parameter
        stay = current if current in candidates else best
        return Identification(stay, True, candidates[stay], errors, fit.values, fit.stderr, fit.residual, n,
                              explained)
    match = _match(profile, twin, fit, candidates, errors, current, candidates[start])
    if match is None and best != NOMINAL and fit.residual > 1e-3 * errors[best]:  # a second start, from nominal
        other = twin.fit(*data, candidates[NOMINAL])
        if other.residual < fit.residual:
            start, fit = NOMINAL, other
            match = _match(profile, twin, other, candidates, errors, current, candidates[NOMINAL])
            explained = fit.residual <= profile.twin.unexplained
    if match is not None and explained:  # an unexplained fit is no candidate, however close its values come
        return Identification(match, True, candidates[match], errors, fit.values, fit.stderr, fit.residual, n,
                              explained)
    name = regime_name(_new_regime(profile, twin, fit, candidates[start], n, on_grid=True))
    known = name in candidates  # the grid point of a fit beyond tolerance of the regime first named there
    regime = candidates[name] if known else _new_regime(profile, twin, fit, candidates[start], n, on_grid=False)
    return Identification(name, known, regime, errors, fit.values, fit.stderr, fit.residual, n, explained)


def _match(profile: RobotProfile, twin: Twin, fit: Fit, candidates: dict[str, Regime], errors: dict[str, float],
           current: str | None, start: Regime) -> str | None:
    """The candidate whose values of every fitted parameter are within tolerance of the fit, and whose other
    parameters (held at the start regime's values during the fit: the choice of start identified them) are the
    start's, if any."""
    fitted = {(p.kind, i) for p in twin.fitted for i in p.indices}
    held = {k: v for k, v in twin.params.regime_values(start, "start").items() if k not in fitted}
    constrained = _constrained(profile, twin, fit)
    within = []
    for name, regime in candidates.items():
        values = twin.params.regime_values(regime, name)
        if {k: v for k, v in values.items() if k not in fitted} != held:
            continue
        if all(kind_distance(p.kind, fit.values[p.key], values.get((p.kind, i), KINDS[p.kind]))
               <= profile.twin.tolerance_of(p.kind) for p in twin.fitted if p.key in constrained for i in p.indices):
            within.append(name)
    if current in within:
        return current
    return min(within, key=errors.get) if within else None


def regime_name(regime: Regime) -> str:
    """``identified-<hash>`` of what the regime changes (its description aside); zeros of either sign hash alike."""
    changes = {kind: {name: float(value) + 0.0 for name, value in values.items()}
               for kind, values in regime.changes().items()}
    return IDENTIFIED + hashlib.sha1(json.dumps(changes, sort_keys=True).encode()).hexdigest()[:8]


def quantize(value: float, nominal: float, tolerance: float, decades: bool = False, on_grid: bool = True) -> float:
    """A fitted value on the grid of its tolerance (nominal within tolerance counts as nominal): two fits of one
    physical fault, from other transitions or in another process, land on the same value and so the same regime
    name; ``+ 0.0`` turns a negative zero (``-0.0``, which JSON keeps) into zero. ``decades``: the grid and the
    tolerance are in log10 (damping). Not ``on_grid``: the value to 4 significant digits (nominal within tolerance
    still nominal) -- what the regime simulates: the Ant's joint damping 5 lies on the 0.3-decade grid at 3.98, where
    the twin search ranked first a stored gait scoring 1720-1800, 663 at 5 (docs/repertoire.md)."""
    if decades:
        if abs(np.log10(max(value, 1e-12)) - np.log10(nominal)) <= tolerance:
            return float(nominal)
        if not on_grid:
            return float(f"{value:.4g}")
        return float(f"{10.0 ** (round(np.log10(max(value, 1e-12)) / tolerance) * tolerance):.3g}")
    if abs(value - nominal) <= tolerance:
        return float(nominal)
    if not on_grid:
        return float(f"{value:.4g}") + 0.0
    return round(round(value / tolerance) * tolerance, 6) + 0.0


def _new_regime(profile: RobotProfile, twin: Twin, fit: Fit, start: Regime, n: int, on_grid: bool) -> Regime:
    """The fitted values as a regime: fitted parameters within tolerance of their nominal value are left out, the
    others put on the grid of their tolerance (``on_grid``: :func:`quantize`, what the regime is named by) or kept as
    fitted (to 4 significant digits: what the regime simulates); what the start regime changes beyond the fitted
    parameters is kept."""
    fitted_kinds = {p.kind for p in twin.fitted}
    changes = {kind: dict(values) for kind, values in start.changes().items() if kind not in fitted_kinds}
    values = {key: value for key, value in twin.params.regime_values(start, "start").items()
              if key[0] in fitted_kinds}
    constrained = _constrained(profile, twin, fit)
    for p in twin.fitted:
        if p.key not in constrained:  # left as the start regime has it
            continue
        args = (fit.values[p.key], KINDS[p.kind], profile.twin.tolerance_of(p.kind), p.kind in LOG_KINDS)
        grid = quantize(*args)
        # a gain whose grid point is zero is zero: a dead actuator has no direction (a fitted -0.0004, read as
        # reversed, had a compensated champion serve a dead leg)
        value = grid if on_grid or (p.kind == "gain" and grid == 0.0) else quantize(*args, on_grid=False)
        values.update(dict.fromkeys(((p.kind, i) for i in p.indices), value))
    shared = {p.kind for p in twin.fitted if p.elements}
    for (kind, i), value in sorted(values.items()):
        if value != KINDS[kind] and kind not in shared:
            changes.setdefault(kind, {})[twin.params.names[kind][i]] = value
    for p in twin.fitted:  # a shared factor the transitions left free, and the start did not set, is nominal
        if p.elements and values.get((p.kind, p.index), KINDS[p.kind]) != KINDS[p.kind]:
            changes.setdefault(p.kind, {})[ALL] = values[(p.kind, p.index)]
    text = ", ".join(f"{kind}.{name} {value:g}" for kind, values in changes.items() for name, value in values.items())
    return Regime(description=f"identified by the twin from {n} transitions: {text or 'no change'}", **changes)


__all__ = ["IDENTIFIED", "Identification", "NotIdentifiable", "identifiable", "identify", "prediction_errors",
           "quantize", "random_transitions", "regime_name"]
