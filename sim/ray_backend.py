"""The Ray backend: the same evaluator interface on Ray actors, for users who outgrow one machine.

Each actor (one CPU) owns a :class:`~srghn.sim.worker.JobRunner` -- the very code a local worker process runs --
so an episode gives the same numbers here as locally. ``evaluate`` cuts the batch into the same jobs as
:class:`~srghn.sim.workers.LocalEvaluator` and hands them to idle actors as they free up.

Supervision mirrors the local backend: an actor that dies fails its job's episodes with ``worker_died(ray)`` and
is replaced; a job past its wall-clock timeout gets its actor killed (``timeout``). Actors lower their priority
with ``nice``; they get no address-space limit, because a Ray worker maps the object store into its address
space.

Ray is an optional extra (``pip install -e ".[ray]"``); it is imported only when a :class:`RayEvaluator` is
built, never by ``import srghn.sim``.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque

import numpy as np

from srghn import ConfigError
from srghn.controller.normalizer import ObsNorm
from srghn.errors import EvaluatorError
from srghn.sim.episodes import EpisodeResults, RunnerSpec
from srghn.sim.jobs import Evaluation, Job, assemble, check_batch, job_arrays, job_norm, plan_jobs
from srghn.sim.workers import WorkerLimits, _max_episode_steps

log = logging.getLogger("srghn.sim.ray_backend")


def import_ray():
    """The ``ray`` module, or an :class:`EvaluatorError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise EvaluatorError("the Ray backend needs Ray: install the [ray] extra (pip install 'srghn[ray]', or "
                             "pip install -e '.[ray]' in a checkout)") from exc
    return ray


class RayJobActor:
    """Body of a Ray actor: a niced process that builds its environments once and plays jobs."""

    def __init__(self, spec_json: str, nice: int) -> None:
        from srghn.sim.worker import JobRunner, route_mujoco_warnings

        if nice:
            os.nice(nice)
        route_mujoco_warnings()
        self.runner = JobRunner(spec_json)

    def run(self, regime: str, arrays: dict[str, np.ndarray]) -> EpisodeResults:
        """Play one job (the arrays of :func:`~srghn.sim.jobs.job_arrays`); returns its per-episode results."""
        return self.runner.run(regime, arrays["policies"], arrays["rows"], arrays["seeds"], job_norm(arrays))

    def pid(self) -> int:
        """The actor's process id."""
        return os.getpid()


class RayEvaluator:
    """Evaluates batches of policies on ``workers`` Ray actors (one CPU each).

    ``address`` joins an existing cluster (``ray.init(address=...)``); without one, a local Ray instance with
    ``workers`` CPUs is started and shut down again by :meth:`close`. If Ray is already initialised in this
    process, that instance is used as is.
    """

    def __init__(self, profile, workers: int | None = None, address: str | None = None,
                 limits: WorkerLimits | None = None, jobs_per_worker: int = 4, fast_path: bool = True,
                 behaviour: bool = False) -> None:
        workers = (os.cpu_count() or 1) if workers is None else workers
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        if jobs_per_worker < 1:
            raise ConfigError(f"jobs_per_worker must be >= 1, got {jobs_per_worker}")
        self.ray = ray = import_ray()
        self.spec = RunnerSpec.from_profile(profile, fast_path=fast_path, behaviour=behaviour)
        self.limits = limits or WorkerLimits()
        self.n_workers, self.jobs_per_worker = workers, jobs_per_worker
        self.max_steps = _max_episode_steps(self.spec)
        self.owns_ray = not ray.is_initialized()
        if self.owns_ray:
            kwargs = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
            try:
                ray.init(logging_level=logging.WARNING, log_to_driver=False, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise EvaluatorError(f"cannot start or join Ray{f' at {address}' if address else ''}: {exc}") \
                    from exc
        env_vars = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        self._actor_class = ray.remote(num_cpus=1, runtime_env={"env_vars": env_vars})(RayJobActor)
        self.replaced = 0
        self.actors = [self._new_actor() for _ in range(workers)]
        # Asked once per actor, before any job: a busy actor answers nothing until its job is done.
        self._pids = [a.pid.remote() for a in self.actors]
        try:  # surface a broken profile now, as the local backend does
            ray.get(self._pids, timeout=self.limits.startup_timeout_s)
        except Exception as exc:
            self.close()
            raise EvaluatorError(f"Ray actors for {self.spec.name!r} could not start: {exc}") from exc

    def _new_actor(self):
        return self._actor_class.remote(self.spec.to_json(), self.limits.nice)

    def worker_pids(self) -> list[int]:
        """Process ids of the actors (on their nodes; a test hook, like the local backend's)."""
        return self.ray.get(self._pids)

    def evaluate(self, policies: np.ndarray, seeds: np.ndarray, regime: str, norm: ObsNorm | None = None) -> Evaluation:
        """Every row of ``policies`` on every seed in ``regime`` (observations normalized by ``norm``); failed
        individuals get fitness ``-inf``."""
        ray = self.ray
        if not self.actors:
            raise EvaluatorError("evaluator is closed")
        policies, seeds = check_batch(self.spec, policies, seeds, regime)
        b, e = policies.shape[0], len(seeds)
        jobs = plan_jobs(b * e, self.n_workers * self.jobs_per_worker)
        pending, idle = deque(jobs), deque(range(len(self.actors)))
        running: dict = {}  # object ref -> (actor slot, job, deadline)
        results: dict[int, EpisodeResults] = {}
        while len(results) < len(jobs):
            while idle and pending:
                slot, job = idle.popleft(), pending.popleft()
                ref = self.actors[slot].run.remote(regime, job_arrays(job, policies, seeds, norm))
                running[ref] = (slot, job, time.monotonic() + self.limits.timeout_for(job.size, self.max_steps))
            timeout = max(0.0, min(d for _, _, d in running.values()) - time.monotonic())
            ray.wait(list(running), num_returns=1, timeout=timeout)  # until a job ends or a deadline passes
            done, _ = ray.wait(list(running), num_returns=len(running), timeout=0)  # every job that has ended
            for ref in done:
                slot, job, _ = running.pop(ref)
                results[job.id] = self._collect(ref, slot, job)
                idle.append(slot)
            now = time.monotonic()
            # decided before any replacement: a replacement waits for its actor to start, and jobs that end
            # meanwhile are collected on the next pass, not taken for timeouts
            for ref in [ref for ref, (_, _, deadline) in running.items() if now >= deadline]:
                slot, job, _ = running.pop(ref)
                log.warning("Ray actor %d: job %d timed out; replacing the actor", slot, job.id)
                self._replace(slot)
                results[job.id] = EpisodeResults.failed(job.size, "timeout")
                idle.append(slot)
        return assemble(b, e, jobs, results)

    def _collect(self, ref, slot: int, job: Job) -> EpisodeResults:
        ray = self.ray
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            log.warning("Ray actor %d died during job %d (%s); replacing it", slot, job.id, exc)
            self._replace(slot)
            return EpisodeResults.failed(job.size, "worker_died(ray)")
        except ray.exceptions.RayTaskError as exc:
            self._replace(slot)
            return EpisodeResults.failed(job.size, f"exception: {type(exc).__name__}: {str(exc)[:200]}")
        if result.retire:  # a memory-limit hit or a job-level error: start afresh
            self._replace(slot)
        return result

    def _replace(self, slot: int) -> None:
        self.ray.kill(self.actors[slot])
        self.actors[slot] = self._new_actor()
        self._pids[slot] = self.actors[slot].pid.remote()
        self.replaced += 1
        # the actor's start-up (imports, building the env) must not count against its first job's deadline:
        # on a busy node it can take longer than a short job timeout
        try:
            self.ray.get(self._pids[slot], timeout=self.limits.startup_timeout_s)
        except Exception as exc:
            raise EvaluatorError(f"a replacement Ray actor for {self.spec.name!r} could not start: {exc}") from exc

    def close(self) -> None:
        """Kill the actors; shut Ray down if this evaluator started it."""
        actors, self.actors = getattr(self, "actors", []), []
        for actor in actors:
            self.ray.kill(actor)
        if self.owns_ray and self.ray.is_initialized():
            self.ray.shutdown()

    def __enter__(self) -> RayEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
