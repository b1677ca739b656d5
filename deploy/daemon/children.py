"""The processes beside the daemon: the control server it attaches to (started under its supervisor when none runs
and ``--attach`` is off), and the simulated robot (``--sim-robot``).

Serving outlives the daemon: the supervisor is started detached (its own session), and a clean stop stops the
server only when ``srghn-ctl run`` started it (this run, or one a killed daemon left); ``--attach`` never starts or
stops one. The link to the server (:mod:`srghn.deploy.daemon.link`) is made and closed here too.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import zmq

from srghn.controller.files import atomic_write
from srghn.deploy.daemon.link import ServerLink
from srghn.deploy.daemon.run_files import read_json
from srghn.deploy.daemon.settings import DaemonSettings
from srghn.deploy.process.signals import ExitFlag
from srghn.deploy.process.state import SERVER, lock_is_held, read_runfile
from srghn.deploy.server.config import SERVE_CONFIG
from srghn.deploy.wire import messages as m
from srghn.errors import ServerConflict, ServerUnavailable
from srghn.sim.plots import plot_robot

log = logging.getLogger("srghn.daemon")

SERVER_START_TIMEOUT_S = 60.0


class Children:
    def __init__(self, settings: DaemonSettings, should_exit: ExitFlag) -> None:
        self.settings, self.should_exit = settings, should_exit
        self.state = Path(settings.state_dir)
        self.endpoints = settings.endpoints()
        self.supervisor: subprocess.Popen | None = None
        self.owns_server = False
        """Whether a clean stop stops the server too: one that ``srghn-ctl run`` started (this one, or one a
        killed daemon left), never a service of its own (``srghn-ctl serve``)."""
        self.robot: subprocess.Popen | None = None
        self.link: ServerLink | None = None
        self.server_final: dict | None = None
        """The server's last status, as it stopped (None: it was not stopped)."""

    # -- the server ----------------------------------------------------------------------------------------------

    def attach(self, ctx: zmq.Context) -> ServerLink | None:
        """Attach to the server running on the state directory, or start one (under its supervisor) first; None
        when a signal came first."""
        running = read_runfile(self.state, SERVER)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        if running is None and not self.settings.attach and not lock_is_held(self.state, SERVER):
            self._start_supervisor()
        while running is None and self.supervisor is None:  # a server starting (systemd's, a supervisor's)
            if self.should_exit:
                return None
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"no control server came up on {self.state} within "
                                        f"{SERVER_START_TIMEOUT_S:.0f} s (--attach starts none: start it with "
                                        "`srghn-ctl serve` or its unit)")
            time.sleep(0.2)  # nothing to wait on but the run file
            running = read_runfile(self.state, SERVER)
        internal = running["internal"] if running else self.settings.serve_config().internal_endpoint
        self.link = ServerLink(ctx, internal, self.settings.profile.name)
        welcome = self.link.start(max(1.0, deadline - time.monotonic()), self._give_up)
        if welcome is None:
            return None
        self.owns_server = not self.settings.attach and (self.supervisor is not None or bool(running.get("stoppable")))
        given = {"control": self.settings.control, "admin": self.settings.admin, "telemetry": self.settings.telemetry}
        explicit = {r: e for r, e in self.endpoints.items() if given.get(r) is not None}
        if any(welcome.endpoints.get(r) != e for r, e in explicit.items()):
            raise ServerConflict(f"the control server on {self.state} serves {welcome.endpoints}, not {explicit}; "
                                 "stop it or leave the endpoints out to use its own")
        self.endpoints = dict(welcome.endpoints)
        log.info("attached to the control server pid %d (serving %s)", welcome.pid, welcome.champion or "safe")
        return self.link

    def _give_up(self) -> str | None:
        """While waiting for the server: "" after a signal, the reason when the supervisor we started died."""
        if self.should_exit:
            return ""
        if self.supervisor is not None and self.supervisor.poll() is not None:
            return (f"the control server could not start (its supervisor exited with {self.supervisor.returncode})"
                    f": {_tail(self.state / 'logs' / 'server.log')}")
        return None

    def _start_supervisor(self) -> None:
        """The server's supervisor, detached (its own session: a Ctrl-C meant for the daemon never reaches it,
        and it outlives the daemon)."""
        path = self.state / SERVE_CONFIG
        atomic_write(path, self.settings.serve_config().to_json().encode())
        self.supervisor = subprocess.Popen([sys.executable, "-m", "srghn.deploy.server.supervisor", str(path),
                                            "--stoppable"],
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, start_new_session=True)
        log.info("started the server's supervisor, pid %d", self.supervisor.pid)

    def let_go(self, stopped_by: str) -> None:
        """Stop the server when this run owns it (waiting until it is gone), else detach from it."""
        if self.link is None:
            return
        if self.owns_server:
            reply = self.link.close(m.Stop(stopped_by), wait_for=m.Stopped)
            self.server_final = reply.status if reply is not None else None
            self._wait_for_server_exit()
        else:
            self.link.close(m.Detach(stopped_by))

    def _wait_for_server_exit(self, timeout_s: float = 30.0) -> None:
        """After a Stop: wait until the supervisor (ours, or one a killed daemon left) has let go of the server."""
        if self.supervisor is not None:
            try:
                self.supervisor.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.error("the server's supervisor did not exit within %.0f s", timeout_s)
            return
        deadline = time.monotonic() + timeout_s
        while read_runfile(self.state, SERVER) is not None and time.monotonic() < deadline:
            time.sleep(0.1)  # not our child: its lock is all there is to watch

    # -- the simulated robot -------------------------------------------------------------------------------------

    def start_robot(self) -> None:
        home, profile = self.settings.home, self.settings.profile
        summary = home / "robot-sim.json"
        summary.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "srghn.deploy.clients.robot_sim",
               "--robot", profile.source or profile.name,
               "--control", self.endpoints["control"], "--summary-file", str(summary), "--parent-pid",
               str(os.getpid()), *self.settings.robot_args]
        if self.settings.keys:
            cmd += ["--keys", str(self.settings.keys)]
        log_file = (home / "robot-sim.log").open("ab")
        self.robot = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
        log_file.close()

    def stop_robot(self) -> dict | None:
        """Stop the simulated robot; its summary (None: there was none), plotted to ``robot.png``."""
        if self.robot is None:
            return None
        home, name = self.settings.home, self.settings.profile.name
        _stop_child(self.robot)
        summary = read_json(home / "robot-sim.json") or None
        drawn = summary and (summary.get("rewards") or {}).get("ended_at")
        if summary and (summary.get("episodes") or drawn):
            fault = summary.get("fault") or {}
            plot_robot(summary["returns"], summary["ended_at"], summary["finished_by"], home / "robot.png",
                       title=f"simulated {name}: what it was served", fault_at=fault.get("at_step"),
                       distances=summary.get("distances"), rewards=summary.get("rewards"))
        return summary


def _stop_child(proc: subprocess.Popen, timeout_s: float = 15.0) -> int | None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
