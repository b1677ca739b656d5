"""Evaluation jobs: how a batch of ``B`` policies x ``E`` seeds is cut into chunks, shipped, and put back together.

Episode ``k = b * E + e`` plays policy row ``b`` on seed ``e``. :func:`plan_jobs` cuts the ``B * E`` episodes into
contiguous chunks of equal size, :func:`plan_guided` into chunks that shrink as the batch is handed out (a chunk =
policy rows, seeds, regime); since an episode's result depends only on its policy
row, its seed and the regime, how the episodes are cut and which worker plays which chunk never changes the
numbers. :func:`assemble` averages the per-episode results back into per-individual fitness.

Messages between the parent and its workers are single frames: a 4-byte length, a JSON header, then raw array
buffers described in the header (dtype, shape). No pickles: the parent never unpickles anything a worker wrote.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from srghn import ConfigError
from srghn.controller.normalizer import EpisodeStats, ObsNorm, RunningStats
from srghn.errors import WorkerProtocolError
from srghn.sim.envs import check_regime
from srghn.sim.episodes import EpisodeResults, RunnerSpec

FAILED_FITNESS = -np.inf
"""Fitness of an individual whose evaluation failed: the worst possible, so selection never keeps it over a
healthy one (the strategies treat NaN the same way)."""

_DTYPES = {"float32": np.float32, "float64": np.float64, "int64": np.int64}
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class Evaluation:
    """What evaluating a batch of ``B`` policies produced."""

    fitness: np.ndarray
    """``(B,)`` mean shaped return over the episodes (the value selection uses); ``-inf`` for a failed individual."""
    returns: np.ndarray
    """``(B,)`` mean standard environment return (reported beside fitness); NaN for a failed individual."""
    env_steps: int
    """Environment steps taken for the whole batch (those of failed episodes included, as far as known)."""
    failures: Mapping[int, str] = field(default_factory=dict)
    """Individual index -> why its evaluation failed (the reason of its first failed episode, in seed order).
    An individual fails if any of its episodes failed."""
    obs_stats: RunningStats | None = None
    """Statistics of the raw observations of every episode that did not fail, merged in episode order (so the
    same for any number of workers); ``None`` if no episode reported any."""
    behaviour: np.ndarray | None = None
    """``(B, d)`` mean behaviour descriptor over each individual's episodes (NaN for a failed individual), when
    the evaluator measures one."""

    def faults(self) -> dict[str, int]:
        """Failed individuals counted by kind of fault (``timeout``, ``worker_died``, ``exception``, ...)."""
        return dict(sorted(Counter(fault_kind(r) for r in self.failures.values()).items()))


def fault_kind(reason: str) -> str:
    """The kind of a failure reason: ``worker_died(signal=9)`` -> ``worker_died``, ``exception: ...`` ->
    ``exception``."""
    return reason.split(":", 1)[0].split("(", 1)[0].strip()


@dataclass(frozen=True)
class Job:
    """A chunk of episodes: flat episode indices ``[lo, hi)`` of a ``B x E`` batch."""

    id: int
    lo: int
    hi: int

    @property
    def size(self) -> int:
        """Number of episodes."""
        return self.hi - self.lo


def check_batch(spec: RunnerSpec, policies: np.ndarray, seeds: np.ndarray,
                regime: str) -> tuple[np.ndarray, np.ndarray]:
    """The inputs of an ``evaluate`` call, validated (errors name the problem) and in the dtypes jobs use."""
    if spec.regimes:
        check_regime(regime, spec.regimes, f"robot {spec.name!r}")
    policies = np.ascontiguousarray(policies, dtype=np.float32)
    seeds = np.asarray(seeds, dtype=np.int64)
    if policies.ndim != 2 or policies.shape[1] != spec.policy.num_params:
        raise ConfigError(f"policies must have shape (B, {spec.policy.num_params}), got {policies.shape}")
    if seeds.ndim != 1 or len(seeds) < 1:
        raise ConfigError(f"seeds must be a non-empty 1-D array, got shape {seeds.shape}")
    return policies, seeds


def plan_jobs(n_episodes: int, n_jobs: int) -> list[Job]:
    """Cut ``n_episodes`` into at most ``n_jobs`` contiguous chunks of near-equal size."""
    n_jobs = max(1, min(n_jobs, n_episodes))
    bounds = np.linspace(0, n_episodes, n_jobs + 1).round().astype(int)
    return [Job(j, int(lo), int(hi)) for j, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
            if hi > lo]


def plan_guided(n_episodes: int, workers: int) -> list[Job]:
    """Cut ``n_episodes`` into contiguous chunks for ``workers`` that each take a chunk when idle, largest first:
    every chunk is half of an even share of the episodes not yet cut (guided self-scheduling).

    A worker plays a chunk's episodes side by side, so large chunks spread the per-step cost of the policy's
    forward pass and the reward over many episodes; the small chunks at the end keep every worker busy until
    the batch is done, whichever episodes ended early (30 episodes on 2 workers: 8, 6, 4, 3, 3, 2, 1, 1, 1, 1)."""
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    jobs: list[Job] = []
    lo = 0
    while lo < n_episodes:
        hi = min(n_episodes, lo + max(1, -(-(n_episodes - lo) // (2 * workers))))
        jobs.append(Job(len(jobs), lo, hi))
        lo = hi
    return jobs


def job_arrays(job: Job, policies: np.ndarray, seeds: np.ndarray, norm: ObsNorm | None = None) -> dict[str, np.ndarray]:
    """What a worker needs for ``job``: the distinct policy rows, each episode's row among them, its seed, and the
    generation's observation normalizer (if any)."""
    e = len(seeds)
    k = np.arange(job.lo, job.hi)
    first, last = job.lo // e, (job.hi - 1) // e
    arrays = {"policies": np.ascontiguousarray(policies[first:last + 1], dtype=np.float32),
              "rows": (k // e - first).astype(np.int64), "seeds": np.asarray(seeds, dtype=np.int64)[k % e]}
    if norm is not None:
        arrays.update(norm_mean=norm.mean, norm_std=norm.std, norm_clip=np.array([norm.clip]))
    return arrays


def job_norm(arrays: Mapping[str, np.ndarray]) -> ObsNorm | None:
    """The normalizer a job's arrays carry (inverse of :func:`job_arrays`'s part); malformed: ConfigError."""
    if "norm_mean" not in arrays:
        return None
    return ObsNorm(arrays["norm_mean"], arrays["norm_std"], float(arrays["norm_clip"][0]))


def assemble(b: int, e: int, jobs: list[Job], results: Mapping[int, EpisodeResults]) -> Evaluation:
    """Per-individual fitness from the per-episode results of every job."""
    returns, fitness = np.zeros(b * e), np.zeros(b * e)
    steps = np.zeros(b * e, dtype=np.int64)
    episode_failures: dict[int, str] = {}
    obs_stats = behaviour = None
    for job in jobs:
        r = results[job.id]
        returns[job.lo:job.hi], fitness[job.lo:job.hi], steps[job.lo:job.hi] = r.returns, r.fitness, r.steps
        if r.behaviour is not None:
            if behaviour is None:
                behaviour = np.full((b * e, r.behaviour.shape[1]), np.nan)
            behaviour[job.lo:job.hi] = r.behaviour
        for i, reason in r.failures.items():
            episode_failures[job.lo + i] = reason
        if r.obs_stats is not None:  # jobs are in episode order: the merge order never depends on the workers
            obs_stats = (obs_stats or RunningStats.empty(r.obs_stats.mean.shape[1])).merge_episodes(
                r.obs_stats, skip=set(r.failures))
    failures: dict[int, str] = {}
    for k in sorted(episode_failures):
        failures.setdefault(k // e, episode_failures[k])
    ind_fitness = fitness.reshape(b, e).mean(axis=1)
    ind_returns = returns.reshape(b, e).mean(axis=1)
    ind_behaviour = None if behaviour is None else behaviour.reshape(b, e, -1).mean(axis=1)
    if failures:
        failed = np.fromiter(failures, dtype=np.int64)
        ind_fitness[failed], ind_returns[failed] = FAILED_FITNESS, np.nan
        if ind_behaviour is not None:
            ind_behaviour[failed] = np.nan
    return Evaluation(ind_fitness, ind_returns, int(steps.sum()), failures, obs_stats, ind_behaviour)


def encode(header: dict, arrays: Mapping[str, np.ndarray] | None = None) -> bytes:
    """One message: JSON header (with each array's dtype and shape) followed by the raw array buffers."""
    arrays = arrays or {}
    meta, buffers = [], []
    for name, array in arrays.items():
        a = np.ascontiguousarray(array)
        if a.dtype.name not in _DTYPES:
            raise WorkerProtocolError(f"array {name!r} has dtype {a.dtype}; allowed: {', '.join(_DTYPES)}")
        meta.append([name, a.dtype.name, list(a.shape)])
        buffers.append(a.tobytes())
    head = json.dumps({**header, "arrays": meta}).encode()
    return b"".join([_LENGTH.pack(len(head)), head, *buffers])


def decode(message: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """Inverse of :func:`encode`; anything malformed is a :class:`WorkerProtocolError`."""
    try:
        (n,) = _LENGTH.unpack_from(message)
        header = json.loads(message[_LENGTH.size:_LENGTH.size + n])
        offset = _LENGTH.size + n
        arrays = {}
        for name, dtype, shape in header.pop("arrays"):
            count = int(np.prod(shape, dtype=np.int64))
            a = np.frombuffer(message, dtype=_DTYPES[dtype], count=count, offset=offset).reshape(shape)
            arrays[str(name)] = a
            offset += a.nbytes
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise WorkerProtocolError(f"malformed worker message: {type(exc).__name__}: {exc}") from exc
    if offset != len(message):
        raise WorkerProtocolError(f"malformed worker message: {len(message) - offset} trailing bytes")
    return header, arrays


def results_message(job_id: int, results: EpisodeResults, **extra: object) -> bytes:
    """A worker's answer to a job (``extra``: further JSON header fields)."""
    arrays = {"returns": results.returns, "fitness": results.fitness, "steps": results.steps}
    if results.obs_stats is not None:
        stats = results.obs_stats
        arrays.update(obs_count=stats.count, obs_mean=stats.mean, obs_m2=stats.m2)
    if results.behaviour is not None:
        arrays["behaviour"] = results.behaviour
    return encode({"type": "result", "job": job_id, "failures": {str(k): v for k, v in results.failures.items()},
                   "retire": results.retire, **extra}, arrays)


def parse_results(header: dict, arrays: dict[str, np.ndarray], size: int) -> EpisodeResults:
    """Check a worker's answer for a job of ``size`` episodes and turn it into :class:`EpisodeResults`."""
    try:
        returns, fitness, steps = (arrays[k] for k in ("returns", "fitness", "steps"))
        failures = {int(k): str(v) for k, v in header["failures"].items()}
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise WorkerProtocolError(f"malformed job result: {type(exc).__name__}: {exc}") from exc
    if any(a.shape != (size,) for a in (returns, fitness, steps)) or not all(0 <= k < size for k in failures):
        raise WorkerProtocolError(f"job result does not match a job of {size} episodes")
    behaviour = arrays.get("behaviour")
    if behaviour is not None and (behaviour.ndim != 2 or behaviour.shape[0] != size):
        raise WorkerProtocolError(f"behaviour descriptors do not match a job of {size} episodes")
    return EpisodeResults(returns.astype(np.float64), fitness.astype(np.float64), steps.astype(np.int64), failures,
                          bool(header.get("retire", False)), episode_stats(arrays, size),
                          None if behaviour is None else behaviour.astype(np.float64))


def episode_stats(arrays: Mapping[str, np.ndarray], size: int) -> EpisodeStats | None:
    """The per-episode observation statistics of a job's result (absent when every episode failed)."""
    if "obs_count" not in arrays:
        return None
    count, mean, m2 = arrays["obs_count"], arrays["obs_mean"], arrays["obs_m2"]
    if count.shape != (size,) or mean.ndim != 2 or mean.shape[0] != size or m2.shape != mean.shape:
        raise WorkerProtocolError(f"observation statistics do not match a job of {size} episodes")
    stats = EpisodeStats(size, mean.shape[1])
    stats.count[:], stats.mean[:], stats.m2[:] = count, mean, m2
    return stats
