"""Serving outlives the daemon, and the server outlives its own death: real processes, real sockets, real SIGKILLs,
with a robot asking for actions at 200 Hz all along and giving each request 250 ms to be answered."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from act_load import act_at_rate
from server_helpers import live_champion, wait_for

from srghn.deploy.clients.client import AdminClient
from srghn.deploy.process.state import SERVER, read_runfile
from srghn.errors import ServerUnavailable

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "srghn.cli"]
LIVE = "cp-live"
RATE_HZ = 200.0
DEADLINE_S = 0.25
OBS = [0.01, -0.02, 0.03, 0.04]


def status(admin: AdminClient) -> dict | None:
    try:
        return admin.status()
    except ServerUnavailable:
        return None


def pids_of(marker: str) -> list[int]:
    """Processes whose command line holds ``marker`` (this test's state directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


@contextmanager
def deployment(tmp_path: Path, cartpole_model: bytes) -> Iterator[dict]:
    """A state directory with a live champion, ``srghn-ctl run`` on it (the server under its supervisor), and a
    robot at 200 Hz. Everything started here is stopped at the end, whatever happened."""
    state = tmp_path / "state"
    live_champion(state, LIVE, cartpole_model)
    with tempfile.TemporaryDirectory(prefix="so") as socks:
        endpoints = {role: f"ipc://{socks}/{role[0]}.sock" for role in ("control", "admin", "telemetry")}
        cmd = [*CLI, "run", "--robot", "cartpole", "--state-dir", str(state), "--json", "--workers", "1",
               "--no-auto-promote", "--sim-robot", "--robot-rate", "50",
               *(f"--{role}={endpoint}" for role, endpoint in endpoints.items())]
        spawn = multiprocessing.get_context("spawn")
        stop, ready, results = spawn.Event(), spawn.Event(), spawn.Queue()
        robot = spawn.Process(target=act_at_rate, args=(endpoints["control"], OBS, RATE_HZ, DEADLINE_S, stop, ready,
                                                        results), daemon=True)
        run = {"state": state, "cmd": cmd, "endpoints": endpoints, "robot": robot, "stop": stop, "results": results,
               "daemons": [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]}
        admin = AdminClient(endpoints["admin"], timeout_s=2)
        run["admin"] = admin
        try:
            wait_for(lambda: (s := status(admin)) and s["evolution"] and s["evolution"]["generation"] >= 1, 180,
                     "the daemon to attach and evolve")
            robot.start()
            assert ready.wait(60), "the robot got no first answer"
            yield run
        finally:
            stop.set()
            run["summary"] = results.get(timeout=30) if robot.pid else None
            robot.join(10)
            admin.close()
            last = run["daemons"][-1]
            if last.poll() is None:
                last.send_signal(signal.SIGTERM)
                try:
                    last.communicate(timeout=120)
                except subprocess.TimeoutExpired:
                    last.kill()
            for pid in pids_of(str(state)):  # whatever is left (a failed test): never leak processes
                os.kill(pid, signal.SIGKILL)


def test_a_sigkilled_daemon_leaves_serving_untouched_and_a_restarted_one_attaches_again(tmp_path, cartpole_model):
    with deployment(tmp_path, cartpole_model) as run:
        admin = run["admin"]
        before = status(admin)
        daemon = run["daemons"][0]
        children = wait_for(lambda: (found := children_of(daemon.pid)) and len(found) >= 3 and found, 60,
                            "the daemon's children: supervisor, simulated robot, shadow worker")
        supervisor = [pid for pid in children if "srghn.deploy.server.supervisor" in _cmdline(pid)]
        assert len(supervisor) == 1 and any("robot_sim" in _cmdline(pid) for pid in children)
        wait_for(lambda: run["robot"].is_alive() and (s := status(admin)) and s["requests"]["act"]
                 - before["requests"]["act"] >= 100, 60, "100 requests before the kill")
        daemon.kill()  # SIGKILL: none of the daemon's code runs
        daemon.wait(30)
        # the server noticed nothing but the silence: it goes on serving, its status says the daemon is gone
        after_kill = wait_for(lambda: (s := status(admin)) and s["daemon"] is None and s, 60,
                              "the server to count the daemon as gone")
        assert after_kill["pid"] == before["pid"] and after_kill["serving"]["champion"] == LIVE
        # the daemon's other children (simulated robot, shadow worker) noticed its death and left
        wait_for(lambda: not [pid for pid in children if pid not in supervisor and _cmdline(pid)], 60,
                 "the daemon's children to exit")
        assert _cmdline(supervisor[0]), "the server's supervisor went with the daemon"
        run["daemons"].append(subprocess.Popen(run["cmd"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                               text=True))
        resumed = wait_for(lambda: (s := status(admin)) and s["daemon"] and s["evolution"]
                           and s["evolution"]["generation"] > before["evolution"]["generation"] and s, 180,
                           "the restarted daemon to attach and evolve")
        assert resumed["pid"] == before["pid"], "the server was never restarted"
        acted = resumed["requests"]["act"]
        wait_for(lambda: status(admin)["requests"]["act"] >= acted + 100, 60, "100 requests after the restart")
    robot = run["summary"]
    assert robot["requests"] >= 300 and robot["unanswered"] == 0 and robot["errors"] == [], robot
    assert robot["answers"] == {f"{LIVE}/LIVE": robot["requests"]}, robot
    print(json.dumps({"daemon_kill": {k: robot[k] for k in ("requests", "unanswered", "late", "max_rtt_s",
                                                            "longest_silence_s")}}))


def test_a_daemon_stopped_past_the_heartbeat_expiry_is_attached_again_when_it_continues(tmp_path, cartpole_model):
    """SIGSTOP stands for any stall (swapping, a debugger): the server counts the silent daemon as gone and serves
    on; once it runs again its pings are answered with the same server pid, so it never says hello again by
    itself: the server must take it back, or evolution stays cut off from the robots for good."""
    with deployment(tmp_path, cartpole_model) as run:
        admin = run["admin"]
        before = status(admin)
        daemon = run["daemons"][0]
        os.kill(daemon.pid, signal.SIGSTOP)
        try:
            gone = wait_for(lambda: (s := status(admin)) and s["daemon"] is None and s, 60,
                            "the server to count the stopped daemon as gone")
            assert gone["serving"]["champion"] == LIVE and gone["evolution"] is None
        finally:
            os.kill(daemon.pid, signal.SIGCONT)
        back = wait_for(lambda: (s := status(admin)) and s["daemon"] and s["evolution"]
                        and s["evolution"]["generation"] > before["evolution"]["generation"] and s, 120,
                        "the continued daemon to be attached again and evolve")
        assert back["daemon"]["pid"] == daemon.pid and back["pid"] == before["pid"]
    robot = run["summary"]
    assert robot["unanswered"] == 0 and robot["errors"] == [], robot
    assert robot["answers"] == {f"{LIVE}/LIVE": robot["requests"]}, robot


def test_a_sigkilled_server_is_restarted_by_its_supervisor_and_serves_the_live_champion(tmp_path, cartpole_model):
    with deployment(tmp_path, cartpole_model) as run:
        admin = run["admin"]
        before = status(admin)
        wait_for(lambda: status(admin)["requests"]["act"] - before["requests"]["act"] >= 100, 60, "100 requests")
        killing_at = time.monotonic()
        os.kill(before["pid"], signal.SIGKILL)
        restarted = wait_for(lambda: (s := status(admin)) and s["pid"] != before["pid"] and s, 60,
                             "the restarted server")
        restarted_by = time.monotonic()
        assert restarted["serving"]["champion"] == LIVE and restarted["serving"]["last_known_good"] == LIVE
        assert read_runfile(run["state"], SERVER)["pid"] == restarted["pid"]
        # the daemon noticed the new server and attached again
        wait_for(lambda: (s := status(admin)) and s["daemon"] and s["evolution"], 60, "the daemon to attach again")
        acted = restarted["requests"]["act"]
        wait_for(lambda: status(admin)["requests"]["act"] >= acted + 100, 60, "100 requests after the restart")
    robot = run["summary"]
    outage = robot["longest_silence_s"]
    print(json.dumps({"server_kill": {"outage_s": round(outage, 3), "unanswered": robot["unanswered"],
                                      "requests": robot["requests"]}}))
    # the longest silence was the kill: it ended after the kill was sent and began before the new server was seen
    # (not `from <= kill <= to`: an answer already on its way when the signal is sent can arrive a moment later)
    assert robot["silence_to"] >= killing_at and robot["silence_from"] <= restarted_by, robot
    # every answer, before and after, came from the live champion: the restarted server loaded it before binding
    assert robot["errors"] == [] and set(robot["answers"]) == {f"{LIVE}/LIVE"}, robot
    assert outage <= 1.0, f"no answer for {outage:.2f} s after the server was killed"


def children_of(parent: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(parent).children()]
    except psutil.NoSuchProcess:
        return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
