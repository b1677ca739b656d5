"""The local sandboxed evaluator: persistent worker processes under a supervising poll loop (the default backend).

:class:`LocalEvaluator` starts ``workers`` processes (:mod:`srghn.sim.worker`), each owning its environments.
``evaluate`` cuts the batch into jobs (:func:`~srghn.sim.jobs.plan_guided`: large ones first, which a worker plays
side by side at little cost per episode, then smaller and smaller ones, so a worker whose episodes ended early
picks up more and all finish together), hands a job to each idle worker, and waits on all pipes at once. Nothing
crosses a process boundary per step: one frame out and one frame back per job.

Supervision -- a fault costs only the individuals of the job it hit, never the generation:

* a worker that dies (SIGKILL, segfault, an abort in C) is seen as end-of-file on its pipe; its job's episodes
  fail with ``worker_died(signal=N)`` (``cpu_limit`` for SIGXCPU, its per-job CPU-time limit) and it is replaced;
* a job that runs past its wall-clock timeout gets its worker killed and replaced, its episodes fail with
  ``timeout``;
* exceptions, memory-limit hits and non-finite physics are caught per episode inside the worker
  (:mod:`srghn.sim.episodes`); after a memory-limit hit the worker retires and is replaced.

Only when workers cannot start at all (a broken profile, a missing module) does the evaluator raise
:class:`~srghn.errors.EvaluatorError`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

import gymnasium as gym
import numpy as np

from srghn import ConfigError
from srghn.controller.normalizer import ObsNorm
from srghn.errors import EvaluatorError, WorkerProtocolError
from srghn.sim.episodes import EpisodeResults, RunnerSpec
from srghn.sim.jobs import (
    Evaluation,
    Job,
    assemble,
    check_batch,
    decode,
    encode,
    job_arrays,
    parse_results,
    plan_guided,
    plan_jobs,
)

log = logging.getLogger("srghn.sim.workers")

GiB = 1 << 30
MAX_START_FAILURES = 3
"""Workers that die or fail before reporting ready, in a row, before the evaluator gives up."""
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class WorkerLimits:
    """How each worker process is confined. ``None`` switches a limit off."""

    nice: int = 10
    """Added to the worker's niceness: shadow evaluation yields the CPU to the daemon and the live loop."""
    memory_bytes: int | None = 4 * GiB
    """Address-space limit (``RLIMIT_AS``) per worker. A worker with Ant environments maps about 0.3 GiB."""
    job_timeout_s: float | None = None
    """Wall-clock limit per job; ``None``: :attr:`base_timeout_s` plus :attr:`step_budget_s` per env step the
    job may take (episodes x the environment's time limit)."""
    base_timeout_s: float = 60.0
    step_budget_s: float = 2e-3
    """Seconds allowed per environment step in the automatic timeout (Ant-v5 takes about 0.2 ms here)."""
    cpu_s_per_job: float | None = None
    """CPU-time limit per job (``RLIMIT_CPU``, the worker gets SIGXCPU past it); ``None``: the job's timeout.
    A backstop for when the parent cannot enforce its timeout."""
    startup_timeout_s: float = 120.0
    """How long a new worker may take to import its libraries and build its first environment."""

    def __post_init__(self) -> None:
        if not -20 <= self.nice <= 19:
            raise ConfigError(f"worker nice must be in [-20, 19], got {self.nice}")
        for name in ("memory_bytes", "job_timeout_s", "cpu_s_per_job"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"worker limit {name} must be > 0 or None, got {value}")
        if self.base_timeout_s <= 0 or self.step_budget_s <= 0 or self.startup_timeout_s <= 0:
            raise ConfigError("worker timeouts must be > 0")

    def timeout_for(self, episodes: int, max_steps: int) -> float:
        """Wall-clock limit for a job of ``episodes`` episodes of at most ``max_steps`` steps."""
        if self.job_timeout_s is not None:
            return self.job_timeout_s
        return self.base_timeout_s + self.step_budget_s * episodes * max_steps


OFFLINE_LIMITS = WorkerLimits(job_timeout_s=3600.0)
"""For builds and reference runs that go on for hours beside other work: a job's wall-clock limit must not depend
on how busy the machine is (a starved worker timing out would change the results), so only a hang is cut, after an
hour (and the CPU-time limit, which load does not move, stays the same hour)."""


def death_reason(returncode: int | None) -> str:
    """Failure reason for the episodes of a worker that exited with ``returncode`` mid-job."""
    if returncode is None:
        return "worker_died(unknown)"
    if returncode < 0:
        if -returncode == signal.SIGXCPU:
            return "cpu_limit"
        return f"worker_died(signal={-returncode})"
    return f"worker_died(exit={returncode})"


class _Worker:
    """One worker process and the parent's ends of its two pipes."""

    def __init__(self, init: dict, slot: int) -> None:
        child_read, parent_write = os.pipe()
        parent_read, child_write = os.pipe()
        env = {**os.environ, **dict.fromkeys(THREAD_ENV, "1")}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "srghn.sim.worker", str(child_read), str(child_write)],
                pass_fds=(child_read, child_write), env=env, stdin=subprocess.DEVNULL, close_fds=True)
        except OSError as exc:
            os.close(parent_read)
            os.close(parent_write)
            raise EvaluatorError(f"cannot start an evaluation worker ({sys.executable} -m srghn.sim.worker): "
                                 f"{exc}") from exc
        finally:
            os.close(child_read)
            os.close(child_write)
        self.slot = slot
        self.reader = Connection(parent_read, writable=False)
        self.writer = Connection(parent_write, readable=False)
        self.state = "starting"
        self.job: Job | None = None
        self.sent = 0.0
        """When the current job was sent (``time.perf_counter``)."""
        self.deadline = time.monotonic() + init["startup_timeout_s"]
        self.torch_loaded: bool | None = None
        self.writer.send_bytes(json.dumps(init).encode())

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> int | None:
        """Kill the process (if still running) and reap it; returns its exit status."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        return self.reap()

    def reap(self, grace_s: float = 5.0) -> int | None:
        """Wait for the process to end (it already closed its pipe), killing it if it lingers."""
        try:
            return self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.reader.close()
            self.writer.close()

    def stop(self) -> None:
        """Ask the worker to exit by closing its input; kill it if it does not."""
        with contextlib.suppress(OSError):
            self.writer.close()
        self.reap(grace_s=5.0)


class LocalEvaluator:
    """Evaluates batches of policies in ``workers`` sandboxed processes on this machine.

    Results are identical to :class:`~srghn.sim.evaluator.InProcessEvaluator`'s for any number of workers
    (an episode's outcome depends only on its policy row, seed and regime). Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, profile, workers: int | None = None, limits: WorkerLimits | None = None,
                 jobs_per_worker: int | None = None, env_modules: tuple[str, ...] = (), fast_path: bool = True,
                 behaviour: bool = False) -> None:
        """Start the workers for ``profile`` (a :class:`~srghn.sim.profiles.RobotProfile`) and wait until each
        has built its first environment.

        ``env_modules`` are imported by every worker before it builds environments (modules that register
        custom gymnasium envs); workers see the parent's ``sys.path``. ``jobs_per_worker``: cut every batch into
        that many equal jobs per worker instead of the shrinking ones of :func:`~srghn.sim.jobs.plan_guided`.
        """
        workers = (os.cpu_count() or 1) if workers is None else workers
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        if jobs_per_worker is not None and jobs_per_worker < 1:
            raise ConfigError(f"jobs_per_worker must be >= 1, got {jobs_per_worker}")
        self.spec = RunnerSpec.from_profile(profile, fast_path=fast_path, behaviour=behaviour)
        self.limits = limits or WorkerLimits()
        self.n_workers, self.jobs_per_worker = workers, jobs_per_worker
        self.max_steps = _max_episode_steps(self.spec)
        self._init = {"spec": self.spec.to_json(), "sys_path": [p for p in sys.path if p],
                      "env_modules": list(env_modules), "nice": self.limits.nice,
                      "memory_bytes": self.limits.memory_bytes, "startup_timeout_s": self.limits.startup_timeout_s,
                      "log_level": logging.getLogger("srghn").getEffectiveLevel()}
        self.workers: list[_Worker] = []
        self.replaced = 0
        """Workers replaced after a fault since the evaluator started."""
        self._start_failures = 0
        self.last_timing: dict[str, float] = {}
        """Where the last ``evaluate`` call's time went (:meth:`_timing`)."""
        self._busy = {"busy_s": 0.0, "run_s": 0.0}
        try:
            self.workers = [_Worker(self._init, slot) for slot in range(workers)]
            while any(w.state == "starting" for w in self.workers):
                self._pump({})
        except BaseException:
            self.close()
            raise

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (a test hook; they change when a worker is replaced)."""
        return [w.pid for w in self.workers]

    def evaluate(self, policies: np.ndarray, seeds: np.ndarray, regime: str, norm: ObsNorm | None = None) -> Evaluation:
        """Every row of ``policies`` on every seed in ``regime`` (observations normalized by ``norm``); failed
        individuals get fitness ``-inf``."""
        if not self.workers:
            raise EvaluatorError("evaluator is closed")
        policies, seeds = check_batch(self.spec, policies, seeds, regime)
        b, e = policies.shape[0], len(seeds)
        jobs = (plan_guided(b * e, self.n_workers) if self.jobs_per_worker is None
                else plan_jobs(b * e, self.n_workers * self.jobs_per_worker))
        pending = deque(jobs)
        results: dict[int, EpisodeResults] = {}
        self._busy = {"busy_s": 0.0, "run_s": 0.0}
        t0 = time.perf_counter()
        while len(results) < len(jobs):
            for w in list(self.workers):
                if w.state == "idle" and pending:
                    if w.proc.poll() is not None:  # died while idle (killed between generations): no job lost
                        log.warning("idle worker pid %d exited (%s); replacing it", w.pid,
                                    death_reason(w.proc.returncode))
                        w.reap()
                        self._replace(w)
                        continue
                    self._dispatch(w, pending.popleft(), policies, seeds, regime, norm)
            self._pump(results)
        self.last_timing = self._timing(time.perf_counter() - t0, len(jobs))
        return assemble(b, e, jobs, results)

    def _timing(self, wall_s: float, jobs: int) -> dict[str, float]:
        """Wall time of an ``evaluate`` call split over the workers: ``run_s`` playing episodes (as the workers
        measured it), ``ipc_s`` between the parent's send of a job and its receipt of the result beyond that
        (framing, pipes, scheduling), ``idle_s`` the workers' time without a job."""
        busy, run = self._busy["busy_s"], self._busy["run_s"]
        return {"wall_s": wall_s, "workers": self.n_workers, "jobs": jobs, "run_s": run, "ipc_s": busy - run,
                "idle_s": self.n_workers * wall_s - busy}

    def _dispatch(self, w: _Worker, job: Job, policies: np.ndarray, seeds: np.ndarray, regime: str,
                  norm: ObsNorm | None) -> None:
        timeout = self.limits.timeout_for(job.size, self.max_steps)
        cpu = self.limits.cpu_s_per_job or timeout
        message = encode({"type": "job", "job": job.id, "regime": regime, "cpu_s": cpu},
                         job_arrays(job, policies, seeds, norm))
        w.state, w.job, w.deadline = "busy", job, time.monotonic() + timeout
        w.sent = time.perf_counter()
        with contextlib.suppress(OSError):  # if it died, the poll loop sees its pipe end and accounts for the job
            w.writer.send_bytes(message)

    def _pump(self, results: dict[int, EpisodeResults]) -> None:
        """Wait for the next message, death or deadline, and deal with it."""
        watched = [w for w in self.workers if w.state in ("starting", "busy")]
        if not watched:
            return
        timeout = max(0.0, min(w.deadline for w in watched) - time.monotonic())
        ready = wait([w.reader for w in watched], timeout)
        for w in watched:
            if w.reader in ready:
                self._receive(w, results)
        now = time.monotonic()
        for w in list(self.workers):
            if w.state in ("starting", "busy") and now >= w.deadline:
                if w.state == "starting":
                    self._start_failed(w, f"worker pid {w.pid} did not start within "
                                          f"{self.limits.startup_timeout_s:g} s")
                else:
                    log.warning("worker pid %d: job %d timed out; replacing the worker", w.pid, w.job.id)
                    self._lose(w, "timeout", results)

    def _receive(self, w: _Worker, results: dict[int, EpisodeResults]) -> None:
        try:
            header, arrays = decode(w.reader.recv_bytes())
            kind = header.get("type")
            if w.state == "starting":
                if kind == "error":
                    w.kill()
                    self.close()
                    raise EvaluatorError(f"evaluation worker for {self.spec.name!r} could not start: "
                                         f"{header.get('message')}")
                if kind != "ready":
                    raise WorkerProtocolError(f"expected 'ready', got {kind!r}")
                w.state, w.torch_loaded, self._start_failures = "idle", bool(header.get("torch_loaded")), 0
                return
            if kind != "result" or header.get("job") != w.job.id:
                raise WorkerProtocolError(f"expected the result of job {w.job.id}, got {kind!r} {header.get('job')!r}")
            job_results = parse_results(header, arrays, w.job.size)
            run_s = header.get("run_s", 0.0)
            if isinstance(run_s, bool) or not isinstance(run_s, int | float):
                raise WorkerProtocolError(f"job result's run_s is not a number: {run_s!r}")
        except (EOFError, OSError):
            if w.state == "starting":
                self._start_failed(w, f"worker pid {w.pid} exited during start-up "
                                      f"({death_reason(w.proc.poll())})")
            else:
                rc = w.reap()
                log.warning("worker pid %d died during job %d (%s); replacing it", w.pid, w.job.id,
                            death_reason(rc))
                self._lose(w, death_reason(rc), results, reaped=True)
            return
        except WorkerProtocolError as exc:
            log.warning("worker pid %d: %s; replacing it", w.pid, exc)
            if w.state == "starting":
                self._start_failed(w, str(exc))
            else:
                self._lose(w, "protocol_error", results)
            return
        results[w.job.id] = job_results
        self._busy["busy_s"] += time.perf_counter() - w.sent
        self._busy["run_s"] += float(run_s)
        w.state, w.job, w.torch_loaded = "idle", None, bool(header.get("torch_loaded"))
        if job_results.retire:
            log.warning("worker pid %d retires after a memory-limit or job-level fault; replacing it", w.pid)
            w.reap()
            self._replace(w)

    def _lose(self, w: _Worker, reason: str, results: dict[int, EpisodeResults], reaped: bool = False) -> None:
        """The worker's job is lost for ``reason``: fail its episodes, replace the worker."""
        if not reaped:
            w.kill()
        results[w.job.id] = EpisodeResults.failed(w.job.size, reason)
        self._replace(w)

    def _start_failed(self, w: _Worker, why: str) -> None:
        w.kill()
        self._start_failures += 1
        if self._start_failures >= MAX_START_FAILURES:
            self.close()
            raise EvaluatorError(f"evaluation workers for {self.spec.name!r} keep failing to start: {why}")
        log.warning("%s; starting another", why)
        self._replace(w, count=False)

    def _replace(self, w: _Worker, count: bool = True) -> None:
        self.replaced += count
        self.workers[w.slot] = _Worker(self._init, w.slot)

    def close(self) -> None:
        """Stop every worker (close its input, kill it if it lingers)."""
        workers, self.workers = self.workers, []
        for w in workers:
            if w.state == "idle":
                w.stop()
            else:
                w.kill()

    def __enter__(self) -> LocalEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _max_episode_steps(spec: RunnerSpec) -> int:
    """The environment's time limit as registered (for the automatic job timeout); 1000 if it has none."""
    steps = spec.env_kwargs.get("max_episode_steps")
    if steps is None:
        with contextlib.suppress(Exception):  # an id gymnasium cannot resolve yet (a worker-side module)
            steps = gym.spec(spec.env_id).max_episode_steps
    return int(steps) if steps and math.isfinite(steps) else 1000
