"""The server's second thread: everything slow (registry transactions, loading models into ONNX Runtime).

The serving thread never waits for it. It submits ``job(registry)`` with a ``done`` callback; the job runs here
and its result (or the exception it raised, as a value) goes back through a queue, with a byte on an inproc
socket that the serving thread polls with its other sockets; :meth:`Background.deliver` then runs ``done`` on the
serving thread. So a request is answered by whatever was current when it arrived, and a swap is one assignment.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zmq

from srghn.deploy.registry.store import Registry
from srghn.errors import SrghnError

log = logging.getLogger("srghn.server.background")

Job = Callable[[Registry], object]
Done = Callable[[object], None]


def _disk_full(state_dir: Path, exc: BaseException) -> bool:
    """Whether opening the registry failed for want of space (SQLite says "disk I/O error" when it cannot make
    the files WAL readers need)."""
    try:
        stats = os.statvfs(state_dir)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 1 << 20 or "disk is full" in str(exc.__cause__ or exc)


class Background:
    def __init__(self, ctx: zmq.Context, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        address = f"inproc://srghn-background-{id(self)}"
        self.wake = ctx.socket(zmq.PULL)
        self.wake.bind(address)
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="srghn-background",
                                       initializer=self._init, initargs=(ctx, address))

    def _init(self, ctx: zmq.Context, address: str) -> None:
        if os.sched_getscheduler(0) != os.SCHED_OTHER:  # slow work never competes with serving at its priority
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        self.local.snapshot_since = None
        try:
            self.local.registry = Registry.open(self.state_dir, create=True)
        except SrghnError as exc:
            if not _disk_full(self.state_dir, exc):
                raise
            # a full disk: serve from what is there, read-only, and open it properly once there is room again
            log.error("the state directory's disk is full (%s): serving from the registry read-only until there "
                      "is space", exc)
            self.local.registry = Registry.snapshot(self.state_dir)
            self.local.snapshot_since = time.monotonic()
        self.local.push = ctx.socket(zmq.PUSH)
        self.local.push.connect(address)

    def _registry(self) -> Registry:
        """The registry to run a job on: the read-only snapshot of a full disk is replaced as soon as the registry
        opens again (tried at most once a second)."""
        since = self.local.snapshot_since
        if since is not None and time.monotonic() - since >= 1.0:
            try:
                registry = Registry.open(self.state_dir, create=True)
            except SrghnError:
                self.local.snapshot_since = time.monotonic()
            else:
                self.local.registry.close()
                self.local.registry, self.local.snapshot_since = registry, None
                log.info("the state directory has space again: the registry is open for writing")
        return self.local.registry

    def submit(self, job: Job, done: Done) -> None:
        """Run ``job(registry)`` here; ``done(result or exception)`` runs later on the serving thread."""

        def run() -> None:
            try:
                registry = self._registry()
                try:
                    result = job(registry)
                except sqlite3.OperationalError as exc:
                    if self.local.snapshot_since is None:
                        raise
                    raise OSError(errno.ENOSPC, "the state directory's disk is full: the registry is read-only "
                                  "until there is space") from exc
            except SrghnError as exc:  # a refusal (unknown champion, failed gate, ...): the caller answers it
                result = exc
            except Exception as exc:  # a bug or a broken database: logged here, answered INTERNAL by the caller
                log.exception("background job %s failed", getattr(job, "__qualname__", job))
                result = exc
            self.results.put((done, result))
            self.local.push.send(b"")

        self.pool.submit(run)

    def run_now(self, job: Job) -> object:
        """Run ``job(registry)`` here and wait for it (start-up only: the serving thread is not serving yet)."""
        return self.pool.submit(lambda: job(self._registry())).result()

    def deliver(self, most: int = 8) -> None:
        """Run the ``done`` callbacks of at most ``most`` finished jobs (call when :attr:`wake` is readable; it
        stays readable while more are waiting, and robots are served between two calls)."""
        for _ in range(most):
            try:
                self.wake.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            done, result = self.results.get()
            done(result)

    def close(self) -> None:
        self.pool.submit(lambda: (self.local.registry.close(), self.local.push.close(0)))  # in its own thread
        self.pool.shutdown(wait=True)  # jobs in flight are short registry transactions: let them finish
        self.wake.close(0)
