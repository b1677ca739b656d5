"""A sandboxed evaluation worker process: ``python -m srghn.sim.worker READ_FD WRITE_FD``.

The parent (:class:`~srghn.sim.workers.LocalEvaluator`) starts it with ``subprocess`` -- a fresh interpreter, so
nothing is forked from a process that holds torch threads, and nothing of the parent's ``__main__`` is imported.
It imports numpy, gymnasium and MuJoCo only (never torch), and on start-up:

* lowers its own scheduling priority (``nice``) and caps its address space (``RLIMIT_AS``), so a runaway
  simulation slows or fails itself, not the daemon or the live loop beside it;
* ignores SIGINT (the parent decides when workers stop) and asks the kernel to kill it if the parent dies;
* routes MuJoCo's warnings to the log instead of stdout and ``MUJOCO_LOG.TXT``.

Then it answers jobs, one frame in, one frame out (:mod:`srghn.sim.jobs`): it plays every episode of a job side
by side with one batched policy forward per step and sends back per-episode returns, fitness, steps and failure
reasons. Before each job it sets a CPU-time limit (``RLIMIT_CPU``) for that job, a backstop to the parent's
wall-clock timeout. It exits when the parent closes the pipe, or after a job that hit the memory limit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import sys
import time
from multiprocessing.connection import Connection

import numpy as np

from srghn import ConfigError
from srghn.controller.normalizer import ObsNorm
from srghn.sim.episodes import EpisodeResults, EpisodeRunner, RunnerSpec, exception_reason, make_runner
from srghn.sim.jobs import decode, encode, job_norm, results_message

log = logging.getLogger("srghn.sim.worker")

STARTUP_ERROR_EXIT = 3
"""Exit status of a worker that could not build its environments (it reported why first)."""


class JobRunner:
    """Plays jobs for one robot: the part of a worker shared by the local processes and the Ray actors."""

    def __init__(self, spec_json: str) -> None:
        self.spec = RunnerSpec.from_json(spec_json)
        self.runner: EpisodeRunner = make_runner(self.spec)

    def run(self, regime: str, policies: np.ndarray, rows: np.ndarray, seeds: np.ndarray,
            norm: ObsNorm | None = None) -> EpisodeResults:
        """Episodes ``i`` = ``policies[rows[i]]`` on ``seeds[i]``, observations normalized by ``norm``; an error of
        the whole job fails every episode."""
        try:
            return self.runner.run(np.ascontiguousarray(policies[rows], dtype=np.float32), seeds, regime, norm)
        except Exception as exc:  # noqa: BLE001 - reported as the job's failure, the supervisor decides
            results = EpisodeResults.failed(len(seeds), exception_reason(exc))
            results.retire = True  # state unknown after a job-level error: start afresh
            return results

    def close(self) -> None:
        """Close the environments."""
        self.runner.close()


def _harden(nice: int, memory_bytes: int | None) -> None:
    """Lower priority, cap the address space, no core dumps, ignore Ctrl-C, die with the parent, silence MuJoCo's
    log file."""
    if nice:
        os.nice(nice)
    if memory_bytes:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))  # no core files
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    route_mujoco_warnings()


def die_with_parent() -> None:
    """Linux: this process is killed when the thread that started it dies (a SIGKILLed daemon leaves no child)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def route_mujoco_warnings() -> None:
    """Send MuJoCo's warnings to this process's log instead of stdout and ``./MUJOCO_LOG.TXT`` (worker processes
    only: the hook is process-wide). Instabilities are still detected, from MuJoCo's warning counters."""
    import mujoco

    mujoco.set_mju_user_warning(lambda message: log.warning("MuJoCo: %s", message.strip()))


def _limit_cpu(seconds: float | None) -> None:
    """Allow the coming job ``seconds`` of CPU time on top of what this process has used (SIGXCPU past it)."""
    if not seconds:
        return
    used = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(used.ru_utime + used.ru_stime + seconds) + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def serve(reader: Connection, writer: Connection) -> int:
    """The worker's life: read the start-up frame, build the environments, answer jobs until the pipe closes."""
    init = json.loads(reader.recv_bytes())
    for path in init.get("sys_path", []):
        if path not in sys.path:
            sys.path.append(path)
    logging.basicConfig(level=init.get("log_level", logging.WARNING), format="%(name)s[%(process)d]: %(message)s")
    _harden(int(init.get("nice", 0)), init.get("memory_bytes"))
    try:
        for module in init.get("env_modules", []):
            __import__(module)
        job_runner = JobRunner(init["spec"])
    except Exception as exc:  # noqa: BLE001 - the parent raises it as an EvaluatorError
        writer.send_bytes(encode({"type": "error", "message": f"{type(exc).__name__}: {exc}"}))
        return STARTUP_ERROR_EXIT
    writer.send_bytes(encode({"type": "ready", "pid": os.getpid(), "torch_loaded": "torch" in sys.modules}))
    while True:
        try:
            header, arrays = decode(reader.recv_bytes())
        except EOFError:
            break
        if header.get("type") != "job":
            break
        _limit_cpu(header.get("cpu_s"))
        t0 = time.perf_counter()
        try:
            norm = job_norm(arrays)
        except ConfigError as exc:
            results = EpisodeResults.failed(len(arrays["seeds"]), exception_reason(exc))
        else:
            results = job_runner.run(str(header["regime"]), arrays["policies"], arrays["rows"], arrays["seeds"],
                                     norm)
        writer.send_bytes(results_message(int(header["job"]), results, torch_loaded="torch" in sys.modules,
                                          run_s=time.perf_counter() - t0))
        if results.retire:
            break
    job_runner.close()
    return 0


def main(argv: list[str]) -> int:
    """Entry point: the two pipe file descriptors the parent passed."""
    if len(argv) != 2:
        print("usage: python -m srghn.sim.worker READ_FD WRITE_FD", file=sys.stderr)
        return 2
    reader = Connection(int(argv[0]), writable=False)
    writer = Connection(int(argv[1]), readable=False)
    try:
        return serve(reader, writer)
    except (BrokenPipeError, EOFError):
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
