"""Choosing the evaluator backend: ``local`` (sandboxed worker processes, the default), ``ray`` or ``inprocess``.

``local`` isolates the simulation from the caller (crash isolation, priority, resource limits) and uses every
core; ``inprocess`` runs in the calling process with no isolation -- for debugging, and measurably faster only
for tiny runs where starting the workers (about a second) costs more than the simulation itself; ``ray`` spreads
the jobs over a Ray cluster. All three give the same numbers for the same seed.
"""

from __future__ import annotations

import os

from srghn import ConfigError
from srghn.sim.evaluator import Evaluator, InProcessEvaluator
from srghn.sim.profiles import RobotProfile

BACKENDS = ("local", "ray", "inprocess")


def check_backend(backend: str, workers: int | None, ray_address: str | None) -> None:
    """Validate a backend choice; errors name the flag."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if ray_address is not None and backend != "ray":
        raise ConfigError(f"--ray-address only applies to --backend ray (got --backend {backend})")


def make_evaluator(profile: RobotProfile, backend: str = "local", workers: int | None = None,
                   ray_address: str | None = None, behaviour: bool = False, limits=None) -> Evaluator:
    """An evaluator for ``profile`` on ``backend`` with ``workers`` workers (default: every core); ``behaviour``:
    it also measures the behaviour descriptor of the profile's ``[repertoire]`` table; ``limits``: the workers'
    :class:`~srghn.sim.workers.WorkerLimits` (default: theirs)."""
    check_backend(backend, workers, ray_address)
    workers = workers or os.cpu_count() or 1
    if backend == "inprocess":
        return InProcessEvaluator(profile, behaviour=behaviour)
    if backend == "ray":
        from srghn.sim.ray_backend import RayEvaluator

        return RayEvaluator(profile, workers=workers, address=ray_address, behaviour=behaviour, limits=limits)
    from srghn.sim.workers import LocalEvaluator

    return LocalEvaluator(profile, workers=workers, behaviour=behaviour, limits=limits)
