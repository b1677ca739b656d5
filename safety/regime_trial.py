"""After return drift (:mod:`srghn.safety.drift`): which regime is the robot in now, and which stored champion does
best there? For robots whose state cannot be set from an observation (LunarLander), so the parametric twin cannot
replay their transitions.

The champion that served the drifted episodes is played in the shadow simulator in every regime, on fixed-seed
episodes; the regime whose simulated return is nearest to the returns the robot reported after the drop explains
them. Then each regime's stored champion (the best that passed its gates there, :mod:`srghn.deploy.registry.release`'s
portfolio) is played in that regime, and the one that scores best is named: what can serve the robot at once. The
episodes run the ONNX artifacts themselves in ONNX Runtime, as the gates do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from srghn.controller.normalizer import ObsNorm
from srghn.controller.onnx_policy import OnnxPolicy
from srghn.controller.policy import PolicySpec
from srghn.errors import InvalidReturns
from srghn.safety.scenarios import run_scenarios
from srghn.sim.profiles import RobotProfile


@dataclass(frozen=True)
class RegimeTrial:
    """What the trial found."""

    regime: str
    """The regime whose simulation of the served champion is nearest to the reported returns."""
    observed: float
    """Mean of the reported returns after the drop."""
    expected: Mapping[str, float]
    """Mean simulated return of the served champion in each regime."""
    scores: Mapping[str, float]
    """Mean simulated return in ``regime`` of each stored champion tried (by champion id)."""
    best: str | None
    """The stored champion that scored best in ``regime`` (None when none was tried)."""

    def to_dict(self) -> dict:
        return {"regime": self.regime, "observed": round(self.observed, 3),
                "expected": {k: round(v, 3) for k, v in self.expected.items()},
                "scores": {k: round(v, 3) for k, v in self.scores.items()}, "best": self.best}


def explain_returns(profile: RobotProfile, served: bytes, observed: np.ndarray, stored: Mapping[str, bytes],
                    episodes: int, seed: int, max_steps: int | None = None) -> RegimeTrial:
    """The regime that explains ``observed`` (returns reported under the ``served`` model, ONNX bytes) and the best
    of the ``stored`` champions (id -> ONNX bytes) in it; ``episodes`` fixed-seed episodes from ``seed`` each."""
    observed = np.asarray(observed, dtype=np.float64)
    if observed.size == 0 or not np.isfinite(observed).all():
        raise InvalidReturns(f"reported returns must be finite and at least one, got {observed.tolist()}")
    mean = float(observed.mean())
    sims = run_scenarios(profile, OnnxPolicy(served), profile.regimes, episodes, seed, max_steps)
    expected = {regime: result.mean_return for regime, result in sims.items()}
    regime = min(expected, key=lambda r: (abs(expected[r] - mean), r))
    scores = {cid: run_scenarios(profile, OnnxPolicy(model), (regime,), episodes, seed, max_steps)[regime].mean_return
              for cid, model in stored.items()}
    best = max(scores, key=lambda c: (scores[c], c)) if scores else None
    return RegimeTrial(regime, mean, expected, scores, best)


def regime_fitness(profile: RobotProfile, model: bytes | None, regime: str, episodes: int, seed: int,
                   max_steps: int | None = None) -> float:
    """The mean fitness in ``regime`` of a champion (ONNX bytes; None: the safe action) on the gates' fixed-seed
    episodes."""
    policy = OnnxPolicy(model) if model is not None else None
    return run_scenarios(profile, policy, (regime,), episodes, seed, max_steps)[regime].fitness


class NumpyPolicy:
    """A policy before export: the numpy network the ONNX export is parity-checked against (1e-5), with its frozen
    normalizer, acting on raw observations like the artifact will."""

    def __init__(self, spec: PolicySpec, params: np.ndarray, norm: ObsNorm | None) -> None:
        self.spec, self.params, self.norm = spec, np.asarray(params, dtype=np.float32)[None], norm

    def act(self, obs: np.ndarray) -> np.ndarray:
        x = obs if self.norm is None else self.norm.apply(obs)
        return self.spec.act(np.repeat(self.params, len(obs), axis=0), x)


def policy_fitness(profile: RobotProfile, params: np.ndarray, norm: ObsNorm | None, regime: str, episodes: int,
                   seed: int, max_steps: int | None = None) -> float:
    """:func:`regime_fitness` of a policy not exported yet (flat ``params`` and its normalizer), on the same seeds:
    the daemon ranks candidates with it on whole episodes (``max_steps`` None) without exporting each one."""
    return run_scenarios(profile, NumpyPolicy(profile.policy, params, norm), (regime,), episodes, seed,
                         max_steps)[regime].fitness


def safe_margin(profile: RobotProfile, model: bytes, regime: str, episodes: int, seed: int,
                max_steps: int | None = None) -> tuple[float, float]:
    """The mean fitness in ``regime`` of a champion (ONNX bytes) and of the safe action, on the same fixed-seed
    episodes: the gates' ``above_safe`` measurement, for a champion that was not gated in that regime."""
    return (regime_fitness(profile, model, regime, episodes, seed, max_steps),
            regime_fitness(profile, None, regime, episodes, seed, max_steps))


__all__ = ["NumpyPolicy", "RegimeTrial", "explain_returns", "policy_fitness", "regime_fitness", "safe_margin"]
