"""Where the server's and the daemon's threads run (``--serve-cpu N``).

The serving (main) thread of the control server gets CPU N to itself; every other thread of the server (ZeroMQ's
I/O thread, the background loader, the CURVE handler, the BLAS pool that importing numpy starts) and all
of the evolution daemon -- its shadow workers included -- run on the other CPUs the process may use. A ZeroMQ I/O
thread on the serving core preempts it for every message and leaves its caches cold, and an evolution worker
there takes the core from a busy-polling server for whole time slices (docs/daemon.md, "The hot path").

Linux only, as the server's scheduling is: threads are listed in ``/proc/self/task``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from srghn.errors import ConfigError


def check_serve_cpu(cpu: object) -> None:
    """A CPU this process may run on, with at least one more left for everything else."""
    allowed = os.sched_getaffinity(0)
    if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu not in allowed:
        raise ConfigError(f"--serve-cpu {cpu!r} is not one of the CPUs this process may run on: "
                          f"{', '.join(map(str, sorted(allowed)))}")
    if len(allowed) < 2:
        raise ConfigError(f"--serve-cpu {cpu} leaves no CPU for anything else: this process may run on CPU {cpu} "
                          "only (give it a second CPU, e.g. systemd CPUAffinity=, or drop --serve-cpu)")


AUTO_MIN_CPUS = 4
"""``--serve-cpu auto`` gives the serving thread a CPU of its own where the process may use at least this many."""


def serve_cpu_from(value: str, allowed: set[int] | None = None) -> int | None:
    """The serving CPU that ``--serve-cpu VALUE`` asks for: a CPU number; ``none``; or ``auto``, the highest of the
    CPUs ``allowed`` (default: this process's) where there are at least :data:`AUTO_MIN_CPUS`, else none. On a
    loaded machine that placement keeps the robot's ACT p99 within 2 x idle in every run measured, where a shared
    CPU missed in about 40 % (docs/daemon.md, "Under evolution load"); below 4 CPUs it would take too large a
    share from evolution."""
    allowed = os.sched_getaffinity(0) if allowed is None else allowed
    value = value.strip().lower()
    if value == "none":
        return None
    if value == "auto":
        return max(allowed) if len(allowed) >= AUTO_MIN_CPUS else None
    try:
        cpu = int(value)
    except ValueError:
        raise ConfigError(f"--serve-cpu {value!r} must be a CPU number, 'auto' or 'none'") from None
    check_serve_cpu(cpu)
    return cpu


def others(cpu: int) -> set[int]:
    """The CPUs this thread may use, less ``cpu``."""
    return os.sched_getaffinity(0) - {cpu}


def keep_off(cpu: int) -> set[int]:
    """Every thread of this process, and so every process and thread it starts from now on, off ``cpu``."""
    rest = others(cpu)
    place(os.getpid(), lambda tid: rest)
    return rest


def serve_alone(cpu: int) -> set[int]:
    """The calling (serving) thread on ``cpu`` alone, every other thread of this process on the CPUs left."""
    rest, me = others(cpu), threading.get_native_id()
    place(os.getpid(), lambda tid: {cpu} if tid == me else rest)
    return rest


def place(pid: int, where: Callable[[int], set[int]]) -> None:
    """Every thread ``tid`` of process ``pid`` on the CPUs ``where(tid)``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(task.name), where(int(task.name)))


def affinities(pid: int) -> dict[int, set[int]]:
    """Thread id -> the CPUs it may run on, for every thread of process ``pid``."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            found[int(task.name)] = os.sched_getaffinity(int(task.name))
    return found
