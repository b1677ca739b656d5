"""The stress set: observations an exported policy must survive with finite, in-bounds actions.

Seeded random observations at several scales, observations recorded from a few seeded episodes of the robot's
simulator, extreme values (+-1e3, +-1e6, the float32 limits, one extreme feature at a time) and rows holding
NaN and +-Inf. The same seed always gives the same set.
"""

from __future__ import annotations

import numpy as np

from srghn.controller.normalizer import ObsNorm
from srghn.sim.evaluator import make_env
from srghn.sim.profiles import RobotProfile

RANDOM_SCALES = (0.01, 1.0, 10.0, 100.0, 1e3)
EXTREMES = (0.0, 1e3, -1e3, 1e6, -1e6, float(np.finfo(np.float32).max), float(np.finfo(np.float32).min))


def stress_observations(obs_dim: int, seed: int, recorded: np.ndarray | None = None,
                        rows_per_scale: int = 64) -> np.ndarray:
    """The stress set ``(N, obs_dim)`` float32; ``recorded`` observations (from episodes) are appended."""
    rng = np.random.default_rng(seed)
    parts = [rng.standard_normal((rows_per_scale, obs_dim)) * scale for scale in RANDOM_SCALES]
    parts.append(rng.uniform(-1e6, 1e6, (rows_per_scale, obs_dim)))
    parts.append(np.array([[value] * obs_dim for value in EXTREMES]))
    one_hot = np.eye(obs_dim)
    parts += [one_hot * 1e6, one_hot * -1e6]
    parts.append(rng.choice([-1e6, 1e6], (rows_per_scale, obs_dim)))
    special = np.full((6, obs_dim), np.nan)
    special[1], special[2] = np.inf, -np.inf
    special[3, ::2], special[4, 1::2] = np.inf, -np.inf
    special[5] = rng.standard_normal(obs_dim)
    special[5, 0] = np.nan
    parts.append(special)
    mixed = rng.standard_normal((rows_per_scale, obs_dim))
    mask = rng.random((rows_per_scale, obs_dim))
    mixed[mask < 0.1], mixed[(mask >= 0.1) & (mask < 0.2)], mixed[(mask >= 0.2) & (mask < 0.3)] = \
        np.nan, np.inf, -np.inf
    parts.append(mixed)
    if recorded is not None and len(recorded):
        parts.append(np.asarray(recorded).reshape(-1, obs_dim))
    with np.errstate(over="ignore"):  # float64 -> float32 of the finfo limits is exact; nothing else overflows
        return np.concatenate(parts).astype(np.float32)


def record_observations(profile: RobotProfile, params: np.ndarray, seed: int, episodes: int = 2,
                        max_steps: int = 100, norm: ObsNorm | None = None) -> np.ndarray:
    """Raw observations met by the policy ``params`` (normalizer ``norm``) in ``episodes`` seeded episodes
    (nominal and switch regime)."""
    spec = profile.policy
    flat = np.asarray(params, dtype=np.float32).reshape(1, -1)
    env = make_env(profile)
    rows: list[np.ndarray] = []
    try:
        for episode in range(episodes):
            regime = profile.regimes[0] if episode % 2 == 0 else profile.switch_regime
            obs, _ = env.reset(seed=seed + episode, options={"regime": regime})
            rows.append(obs)
            for _ in range(max_steps):
                x = obs[None, :].astype(np.float32)
                obs, _, terminated, truncated, _ = env.step(spec.act(flat, x if norm is None else norm.apply(x))[0])
                rows.append(obs)
                if terminated or truncated:
                    break
    finally:
        env.close()
    return np.asarray(rows, dtype=np.float32)
