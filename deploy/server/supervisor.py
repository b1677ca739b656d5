"""The control server's supervisor: it keeps one server serving and a second one on standby, and when the serving
one dies the standby takes over at once, so robots are served again well within a second.

``srghn-ctl serve`` runs it in the foreground (systemd's srghn-server unit: systemd then supervises the
supervisor); ``srghn-ctl run`` starts it detached when no server runs, so that serving outlives the daemon. It
holds the server lock of the state directory for its whole life. The standby is
``python -m srghn.deploy.server.process CONFIG --supervised --standby-fd N``: started ahead, done with its imports (the
slow part of a start), it waits on a pipe; the word makes it load the live and last-known-good champions, bind
and serve. A process-exit descriptor wakes the supervisor the moment a server dies (no polling).

It exits when a server exits by itself with status 0 (a daemon asked it to stop), and on SIGTERM / SIGINT, which
it passes on to its servers and waits for. Standard library only: it starts in a few milliseconds.

**Who supervises the supervisor.** Under systemd, systemd. Otherwise the serving server does: it watches its
parent, and when its supervisor is gone (killed) it says that serving is unsupervised and starts a new one with
``--adopt PID``, which takes the still-serving server over as its own (waiting on its exit through a pidfd) and
starts a standby beside it.

    python -m srghn.deploy.server.supervisor CONFIG.json [--stoppable] [--adopt SERVER_PID]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from srghn.deploy.process import logs
from srghn.deploy.process.signals import ExitFlag
from srghn.deploy.process.state import SERVER, hold_lock, secure_state_dir
from srghn.errors import ConfigError

log = logging.getLogger("srghn.supervisor")

QUICK_DEATH_S = 5.0
"""A server that dies sooner than this after taking over counts as failing at start-up (backed off)."""
MAX_BACKOFF_S = 10.0
REFUSED_STARTS = 3
"""A server that exits with status 2 (its configuration refused: an endpoint it cannot bind, a key directory it
cannot read) this many times in a row at start-up is not started again: the supervisor exits 2 and says why."""
STOP_TIMEOUT_S = 30.0


class _Server:
    """One server process; a standby one until :meth:`take_over`."""

    def __init__(self, config: Path, standby: bool, stoppable: bool) -> None:
        cmd = [sys.executable, "-m", "srghn.deploy.server.process", str(config), "--supervised"]
        cmd += ["--stoppable"] if stoppable else []
        env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_PID"}  # the server pings systemd, not us
        self.word: int | None = None
        if standby:
            read, self.word = os.pipe()
            self.proc = subprocess.Popen([*cmd, "--standby-fd", str(read)], pass_fds=(read,), env=env)
            os.close(read)
        else:
            self.proc = subprocess.Popen(cmd, env=env)
        self.started = time.monotonic()

    def take_over(self) -> bool:
        """Give a standby the word; False if it is no longer there to take it."""
        self.started = time.monotonic()
        try:
            os.write(self.word, b"g")
        except OSError:
            return False
        finally:
            os.close(self.word)
            self.word = None
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.word is not None:  # a standby: closing its pipe is its signal to go
            os.close(self.word)
            self.word = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("server pid %d did not stop within %.0f s; killing it", self.proc.pid, STOP_TIMEOUT_S)
            self.proc.kill()
            self.proc.wait()


class _Orphan:
    """A server that a supervisor now gone started, taken over by this one (not our child: its exit is seen
    through a pidfd, and its status is unknown: a clean stop is told by its removed server.json)."""

    def __init__(self, pid: int, runfile: Path) -> None:
        self.pid, self.runfile, self.returncode = pid, runfile, None
        self.pidfd = os.pidfd_open(pid)

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self.pidfd], [], [], 0)[0]:
            os.close(self.pidfd)
            self.returncode = 0 if not self.runfile.exists() else 1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            select.select([self.pidfd], [], [], 0.1)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            signal.pidfd_send_signal(self.pidfd, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Supervisor:
    def __init__(self, config_path: Path, stoppable: bool = False, adopt: int | None = None) -> None:
        self.config_path = Path(config_path)
        self.stoppable = stoppable
        """Started by ``srghn-ctl run``: a daemon's ``stop`` stops serving. Otherwise (``srghn-ctl serve``, a service
        of its own) a daemon can only detach."""
        self.should_exit = ExitFlag()
        self.restarts = 0
        self.adopt = adopt
        """A serving server whose supervisor died, to take over instead of starting one."""

    def run(self) -> int:
        state = secure_state_dir(Path(json.loads(self.config_path.read_text())["state_dir"]))
        logs.configure(state, "supervisor")
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        with self._lock(state), self.should_exit.captured():
            previous = signal.set_wakeup_fd(wake_w)  # a signal makes the wait below return at once
            try:
                return self._supervise(wake_r)
            finally:
                signal.set_wakeup_fd(previous)
                os.close(wake_r)
                os.close(wake_w)

    @contextlib.contextmanager
    def _lock(self, state: Path) -> Iterator[None]:
        """Hold the server lock; an adopting supervisor tries for a second (the server it adopts looks at the lock
        to tell whether it is supervised again, which holds it for a moment)."""
        tries = 20 if self.adopt is not None else 1
        for attempt in range(tries):
            held = hold_lock(state, SERVER)
            try:
                held.__enter__()
            except ConfigError:
                if attempt + 1 == tries:
                    raise
                time.sleep(0.05)
                continue
            try:
                yield
            finally:
                held.__exit__(None, None, None)
            return

    def _supervise(self, wake: int) -> int:
        serving, standby = self._first(), self._server(standby=True)
        log.info("server pid %d serving, pid %d on standby", serving.proc.pid, standby.proc.pid)
        failures = refused = 0
        try:
            while True:
                code = self._wait(serving, wake)
                if code is None:  # told to stop
                    log.info("stopping (%s)", self.should_exit.reason)
                    return 0
                if code == 0:
                    log.info("server pid %d exited normally; the supervisor is done", serving.proc.pid)
                    return 0
                failures = failures + 1 if time.monotonic() - serving.started < QUICK_DEATH_S else 0
                refused = refused + 1 if failures and code == 2 else 0
                if refused >= REFUSED_STARTS:
                    log.error("the server refused its configuration %d times in a row at start-up (exit status 2: "
                              "see server.log); not starting it again", refused)
                    return 2
                self.restarts += 1
                log.error("server pid %d died (%s); pid %d takes over", serving.proc.pid, _death(code),
                          standby.proc.pid)
                if failures > 1:  # dying at start-up again and again: do not spin
                    select.select([wake], [], [], min(MAX_BACKOFF_S, 0.5 * 2 ** (failures - 2)))
                    if self.should_exit:
                        return 0
                serving = standby
                if not serving.take_over():
                    log.error("the standby server pid %d had gone; starting a new one", serving.proc.pid)
                    serving = self._server(standby=False)
                standby = self._server(standby=True)
        finally:
            standby.stop()
            serving.stop()

    def _server(self, standby: bool) -> _Server:
        return _Server(self.config_path, standby, self.stoppable)

    def _first(self) -> _Server:
        """The serving server: the orphan to adopt when it still runs, else a new one."""
        if self.adopt is not None:
            state = Path(json.loads(self.config_path.read_text())["state_dir"])
            server = _Server.__new__(_Server)
            server.word, server.started = None, time.monotonic() - QUICK_DEATH_S
            try:
                server.proc = _Orphan(self.adopt, state / f"{SERVER}.json")
            except OSError as exc:
                log.error("server pid %d cannot be adopted (%s): starting a new one", self.adopt, exc)
            else:
                log.info("adopted server pid %d, whose supervisor had died", self.adopt)
                return server
        return self._server(standby=False)

    def _wait(self, server: _Server, wake: int) -> int | None:
        """The server's exit status, or None when a signal asked us to stop first."""
        pidfd = os.pidfd_open(server.proc.pid)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            poller.register(wake, select.POLLIN)
            while True:
                if server.proc.poll() is not None:
                    return server.proc.returncode
                if self.should_exit:
                    return None
                for fd, _ in poller.poll():
                    if fd == wake:
                        os.read(wake, 512)
        finally:
            os.close(pidfd)


def _death(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srghn.deploy.server.supervisor",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the server's ServeConfig JSON file")
    parser.add_argument("--stoppable", action="store_true", help="a daemon's stop stops serving (srghn-ctl run)")
    parser.add_argument("--adopt", type=int, help="take over this serving server (its supervisor died)")
    args = parser.parse_args(argv)
    try:
        return Supervisor(args.config, args.stoppable, args.adopt).run()
    except (ConfigError, OSError, ValueError, KeyError) as exc:
        print(f"srghn supervisor: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
