"""The control server's supervisor when systemd is not the one: ``srghn-ctl run`` starts it, detached, so that
serving outlives the daemon. It holds the server lock of the state directory for its whole life, starts
``python -m srghn.deploy.server CONFIG --supervised`` and starts it again the moment it dies (a process-exit
descriptor wakes it, no polling), backing off only when the server keeps dying at start-up.

It exits when the server exits by itself with status 0 (a daemon asked it to stop), and on SIGTERM / SIGINT, which
it passes on to the server and waits for. Standard library only: it starts in a few milliseconds.

    python -m srghn.deploy.supervisor CONFIG.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from srghn.deploy import logs
from srghn.deploy.signals import ExitFlag
from srghn.deploy.state import SERVER, hold_lock, secure_state_dir
from srghn.errors import ConfigError

log = logging.getLogger("srghn.supervisor")

QUICK_DEATH_S = 5.0
"""A server that dies sooner than this after its start counts as a start-up failure (backed off)."""
MAX_BACKOFF_S = 10.0
STOP_TIMEOUT_S = 30.0


class Supervisor:
    def __init__(self, config_path: Path) -> None:
        self.config_path = Path(config_path)
        self.should_exit = ExitFlag()
        self.restarts = 0

    def run(self) -> int:
        state = secure_state_dir(Path(json.loads(self.config_path.read_text())["state_dir"]))
        logs.configure(state, "supervisor")
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        previous = signal.set_wakeup_fd(wake_w)  # a signal makes the wait below return at once
        try:
            with hold_lock(state, SERVER), self.should_exit.captured():
                return self._supervise(wake_r)
        finally:
            signal.set_wakeup_fd(previous)
            os.close(wake_r)
            os.close(wake_w)

    def _supervise(self, wake: int) -> int:
        failures = 0
        while not self.should_exit:
            started = time.monotonic()
            server = subprocess.Popen([sys.executable, "-m", "srghn.deploy.server", str(self.config_path),
                                       "--supervised"])
            log.info("server started, pid %d%s", server.pid, f" (restart {self.restarts})" if self.restarts else "")
            code = self._wait(server, wake)
            if code is None:  # we were told to stop
                return self._stop(server)
            if code == 0:
                log.info("server pid %d exited normally; supervisor done", server.pid)
                return 0
            failures = failures + 1 if time.monotonic() - started < QUICK_DEATH_S else 0
            self.restarts += 1
            log.error("server pid %d died (%s); restarting", server.pid, _death(code))
            if failures > 1:  # dying at start-up again and again: do not spin
                self._sleep(min(MAX_BACKOFF_S, 0.5 * 2 ** (failures - 2)), wake)
        return 0

    def _wait(self, server: subprocess.Popen, wake: int) -> int | None:
        """The server's exit status, or None when a signal asked us to stop first."""
        pidfd = os.pidfd_open(server.pid)
        try:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            poller.register(wake, select.POLLIN)
            while True:
                if server.poll() is not None:
                    return server.returncode
                if self.should_exit:
                    return None
                for fd, _ in poller.poll():
                    if fd == wake:
                        os.read(wake, 512)
        finally:
            os.close(pidfd)

    def _sleep(self, seconds: float, wake: int) -> None:
        select.select([wake], [], [], seconds)

    def _stop(self, server: subprocess.Popen) -> int:
        log.info("stopping (%s): passing it on to server pid %d", self.should_exit.reason, server.pid)
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.error("server pid %d did not stop within %.0f s; killing it", server.pid, STOP_TIMEOUT_S)
            server.kill()
            server.wait()
        return 0


def _death(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srghn.deploy.supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the server's ServeConfig JSON file")
    args = parser.parse_args(argv)
    try:
        return Supervisor(args.config).run()
    except (ConfigError, OSError, ValueError, KeyError) as exc:
        print(f"srghn supervisor: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
