"""End to end with real processes: `srghn-ctl run` (daemon + control server + shadow workers) and a simulated
CartPole robot; promotion, serving, manual rollback through the CLI, status/history agreement, restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from server_helpers import ctl, wait_for

from srghn.deploy.clients.client import AdminClient, ControlClient
from srghn.deploy.registry.store import Registry
from srghn.deploy.server.placement import affinities
from srghn.deploy.wire import protocol as p

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "srghn.cli"]


def start(state: Path, socks: Path, *args: str) -> subprocess.Popen:
    endpoints = [f"--{role}=ipc://{socks}/{role[0]}.sock" for role in ("control", "admin", "telemetry")]
    return subprocess.Popen([*CLI, "run", "--robot", "cartpole", "--state-dir", str(state), "--json", *endpoints,
                             "--workers", "1", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, sig: int | None = None) -> dict:
    if sig is not None and proc.poll() is None:
        proc.send_signal(sig)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, stderr
    return json.loads(stdout)


def test_daemon_promotes_serves_rolls_back_and_resumes_after_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with tempfile.TemporaryDirectory(prefix="sg") as socks:
        socks = Path(socks)
        daemon = start(state, socks, "--sim-robot", "--robot-rate", "400", "--fault", "inverted", "--fault-at",
                       "4000", "--gate-every", "3", "--seed", "1")
        before = None
        try:
            admin = AdminClient(f"ipc://{socks}/a.sock", timeout_s=60)

            def promoted(n: int) -> Callable[[], dict | None]:
                return lambda: (s := admin.status())["evolution"] and s["evolution"]["promoted"] >= n and s

            first = wait_for(promoted(1), 240, "an automatic promotion")["serving"]["champion"]
            # At its step 4000 the robot's motor gets wired backwards. The daemon replays the robot's reported
            # steps in each regime's simulator and finds it "inverted": the live champion compensated for the
            # reversed push (sim/compensate.py) is gated in that regime and made live, and the shadow simulator
            # re-adapts there.
            status = wait_for(lambda: (s := admin.status())["evolution"]["regime"] == "inverted"
                              and s["serving"]["champion"] not in (None, first) and s, 240,
                              "the drift to be followed and a champion of the inverted regime made live")
            serving = next(c for c in ctl("champions", "--json", state=state)
                           if c["id"] == status["serving"]["champion"])
            assert serving["regime"] == "inverted"  # the compensated one, unless evolution got there first
            robot = wait_for(lambda: next((c for c in admin.status()["clients"]
                                           if c["client"] == "sim-robot" and c["episodes"] > 0), None),
                             60, "the simulated robot's episodes")
            assert robot["steps"] > 0

            # Freeze automatic releases, then roll back by hand through the CLI (it talks to the daemon).
            ctl("pause", state=state)
            wait_for(lambda: admin.status()["evolution"]["paused"], 120, "evolution to pause")
            again = subprocess.run([*CLI, "pause", "--state-dir", str(state)], capture_output=True, text=True,
                                   timeout=120)  # issue 36: a second pause changes nothing and says so
            assert again.returncode == 2 and "evolution is already paused" in again.stderr, again.stderr
            before = admin.status()["serving"]["champion"]
            previous = [e for e in ctl("history", "--json", state=state) if e["kind"] in ("promote", "rollback")]
            assert previous[-1]["to"] == before and previous[-1]["actor"] in ("srghn-daemon", "adaptation")
            ctl("rollback", "--reason", "e2e test", state=state)
            with ControlClient(f"ipc://{socks}/c.sock") as client:
                served = client.act(np.zeros(4, np.float32))
            after = admin.status()["serving"]["champion"]
            assert after == previous[-1]["from"] != before
            assert (served.source, served.champion) == (p.Source.LIVE, after)

            # status, history and the registry agree on who is live
            history = ctl("history", "--json", state=state)
            assert history[-1]["kind"] == "rollback" and history[-1]["to"] == after
            live = [c["id"] for c in ctl("champions", "--status", "live", "--json", state=state)]
            assert live == [after] and ctl("status", "--json", state=state)["serving"]["champion"] == after
            assert after in ctl("status", state=state)  # the readable summary names the serving champion
            event = ctl("watch", "--topic", "live", "--count", "1", "--timeout", "30", "--json", state=state)
            assert event["topic"] == "live" and event["champion"] == after and event["errors"] == 0
            ctl("resume", state=state)
            wait_for(lambda: not admin.status()["evolution"]["paused"], 60, "evolution to resume")
            admin.close()
        finally:
            summary = finish(daemon, signal.SIGTERM)

        assert summary["stopped_by"] == "SIGTERM" and summary["candidates"]["promoted"] >= 1
        robot_run = summary["robot_sim"]
        assert robot_run["episodes"] > 0 and robot_run["timeouts"] == 0
        assert robot_run["fault"]["regime"] == "inverted" and robot_run["steps"] > 4000
        drifts = [e for e in ctl("history", "--json", state=state) if e["kind"] == "promote"]
        assert "in regime inverted" in drifts[-1]["reason"]
        assert after in robot_run["served_by"] and before in robot_run["served_by"]
        assert summary["serving"]["requests"]["errors"] == 0
        generations = summary["generation"]
        assert (state / "daemon" / "cartpole" / "population.npz").is_file()
        assert summary["files"]["robot_plot"] and Path(summary["files"]["robot_plot"]).stat().st_size > 10_000
        assert robot_run["ended_at"] == sorted(robot_run["ended_at"]) and len(robot_run["finished_by"]) == \
            robot_run["episodes"]
        # issue 36: the summary's per-regime record adds up to the robot's, the log has a line per episode, and
        # the daemon says which champion served the robot
        assert sum(r["episodes"] for r in robot_run["by_regime"]) == robot_run["episodes"]
        assert sum(r["steps"] for r in robot_run["by_regime"]) == robot_run["steps"]
        assert {r["regime"] for r in robot_run["by_regime"]} >= {"nominal", "inverted"}
        log_lines = (state / "daemon" / "cartpole" / "robot-sim.log").read_text().splitlines()
        assert sum(line.startswith("episode ") for line in log_lines) == robot_run["episodes"]
        robots = {r["client"]: r for r in summary["robots"]}  # the test's own ControlClient is among them too
        assert robots["sim-robot"]["regime"] == "inverted"

        # Restart: the first request is served by the live champion of the last run; evolution resumes.
        daemon = start(state, socks, "--no-auto-promote", "--generations", "2")
        with ControlClient(f"ipc://{socks}/c.sock", timeout_s=120) as client:
            first = client.act(np.zeros(4, np.float32))
        second = finish(daemon)
        assert (first.source, first.champion) == (p.Source.LIVE, summary["live"])
        assert second["stopped_by"] == "bound" and second["generation"] == generations + 2
        assert second["live"] == summary["live"] and second["candidates"]["promoted"] == 0


def test_run_validates_its_flags_before_starting(tmp_path: Path) -> None:
    cases = [
        (["--fault", "inverted", "--fault-at", "10"], "need --sim-robot"),
        (["--sim-robot", "--fault", "sideways", "--fault-at", "10"], "not a regime of cartpole"),
        (["--regime", "upside-down"], "not a regime of cartpole"),
        (["--generations", "0"], "--generations must be >= 1"),
        (["--duration", "-3"], "--duration must be a positive"),
        (["--control", "tcp://0.0.0.0:5999"], "needs CURVE keys"),
        (["--control", f"ipc://{tmp_path}/{'x' * 120}.sock"], "too long for a Unix socket"),
        (["--control", "udp://1.2.3.4:5"], "use ipc://PATH or tcp://HOST:PORT"),
    ]
    from typer.testing import CliRunner

    from srghn.cli import app

    for args, message in cases:
        done = CliRunner().invoke(app, ["run", "--state-dir", str(tmp_path / "s"), *args])
        assert done.exit_code == 2, (args, done.output)
        assert message in " ".join(done.output.split()), (args, done.output)
    assert not (tmp_path / "s" / "daemon.json").exists()


def test_daemon_restarts_a_killed_server_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    import os

    from srghn.errors import ServerUnavailable

    state = tmp_path / "state"
    with tempfile.TemporaryDirectory(prefix="sg") as socks:
        socks = Path(socks)
        endpoints = [f"--{role}=ipc://{socks}/{role[0]}.sock" for role in ("control", "admin", "telemetry")]
        interrupted = False
        # A session of its own, like a terminal's foreground job: Ctrl-C reaches the whole process group.
        daemon = subprocess.Popen([*CLI, "run", "--robot", "cartpole", "--state-dir", str(state), "--json",
                                   "--workers", "1", *endpoints], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
        try:
            with AdminClient(f"ipc://{socks}/a.sock", timeout_s=2) as admin:

                def status() -> dict | None:
                    try:
                        return admin.status()
                    except ServerUnavailable:
                        return None

                old = wait_for(lambda: (s := status()) and s["evolution"] and s["evolution"]["generation"] > 2 and s,
                               120, "evolution to run")
                os.kill(old["pid"], signal.SIGKILL)
                new = wait_for(lambda: (s := status()) and s["pid"] != old["pid"] and s, 120, "a new server")
                with ControlClient(f"ipc://{socks}/c.sock", timeout_s=30) as robot:
                    assert robot.act(np.zeros(4, np.float32)).source in (p.Source.LIVE, p.Source.SAFE)
                wait_for(lambda: (s := status()) and s["evolution"] and s["evolution"]["generation"] >
                         old["evolution"]["generation"] + 2, 120, "evolution to go on")
                assert new["endpoints"] == old["endpoints"]
                ctl("regime", "inverted", state=state)  # an operator's switch, through the restarted server
                wait_for(lambda: (s := status()) and s["evolution"]["regime"] == "inverted", 120, "the switch")
            os.killpg(daemon.pid, signal.SIGINT)
            interrupted = True
        finally:
            summary = finish(daemon, None if interrupted else signal.SIGTERM)
    # the supervisor restarted the server; the daemon noticed and attached again
    assert summary["stopped_by"] == "SIGINT" and summary["server_restarts"] == 1 and summary["regime"] == "inverted"
    assert summary["serving"] is not None  # the restarted server was stopped in order and reported
    assert not (state / "daemon.json").exists() and (state / "daemon" / "cartpole" / "population.npz").is_file()


def test_a_duration_bound_stops_the_daemon_cleanly(tmp_path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="sg") as socks:
        summary = finish(start(tmp_path / "state", Path(socks), "--duration", "3"))
    assert summary["stopped_by"] == "bound" and summary["duration_s"] >= 3
    # how many generations fit in 3 s depends on the machine (and the factory champion is gated first): none needed
    assert summary["serving"]["requests"]["errors"] == 0


def test_daemon_commands_without_a_server(tmp_path: Path, cartpole_model) -> None:
    from server_helpers import gate_and_promote, register_champion
    from typer.testing import CliRunner

    from srghn.cli import app

    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        register_champion(registry, "cp-a", cartpole_model)
        gate_and_promote(registry, "cp-a")
    runner = CliRunner()
    status = runner.invoke(app, ["status", "--json", "--state-dir", str(state)])
    assert status.exit_code == 0 and json.loads(status.output) == {"server": None, "live": {"cartpole": "cp-a"}}
    for args in (["pause"], ["resume"], ["regime", "inverted"], ["watch", "--count", "1"],
                 ["robot-sim", "--steps", "1"]):
        done = runner.invoke(app, [*args, "--state-dir", str(state)])
        assert done.exit_code == 2 and "no server runs on state directory" in " ".join(done.output.split()), args


def test_damaged_daemon_state_is_refused_and_left_untouched(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from srghn.cli import app

    home = tmp_path / "state" / "daemon" / "cartpole"
    home.mkdir(parents=True)
    (home / "daemon.json").write_text(json.dumps({"regime": "sideways", "paused": False}))
    done = CliRunner().invoke(app, ["run", "--state-dir", str(tmp_path / "state"), "--generations", "1"])
    assert done.exit_code == 2 and "names regime 'sideways'" in " ".join(done.output.split())
    (home / "daemon.json").unlink()
    (home / "population.npz").write_bytes(b"not a population")
    done = CliRunner().invoke(app, ["run", "--state-dir", str(tmp_path / "state"), "--generations", "1"])
    assert done.exit_code != 0 and "population.npz" in done.output
    assert (home / "population.npz").read_bytes() == b"not a population"
    assert not (tmp_path / "state" / "daemon.json").exists()


def test_a_daemon_only_detaches_from_a_server_that_is_a_service_of_its_own(tmp_path: Path) -> None:
    from srghn.deploy.process.state import SERVER, read_runfile

    state = tmp_path / "state"
    with tempfile.TemporaryDirectory(prefix="sg") as socks:
        endpoints = [f"--{role}=ipc://{socks}/{role[0]}.sock" for role in ("control", "admin", "telemetry")]
        serve = subprocess.Popen([*CLI, "serve", "--robot", "cartpole", "--state-dir", str(state), *endpoints],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            server = wait_for(lambda: read_runfile(state, SERVER), 60, "the server of `srghn-ctl serve`")
            assert server["stoppable"] is False
            summary = finish(start(state, Path(socks), "--generations", "2"))  # no --attach: it finds the server
            assert summary["stopped_by"] == "bound" and summary["server_stopped"] is False
            assert read_runfile(state, SERVER)["pid"] == server["pid"]  # still the same server, serving
            with Registry.open(state) as registry:
                live = registry.live("cartpole")  # the factory champion, when it passed its gates
            with ControlClient(f"ipc://{socks}/c.sock") as robot:
                reply = robot.act(np.zeros(4, np.float32))
            assert (reply.source, reply.champion) == ((p.Source.LIVE, live.id) if live else (p.Source.SAFE, ""))
        finally:
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(60) == 0, serve.stderr.read()


def _workers(pid: int) -> list[int]:
    """The shadow workers among the children of ``pid`` (not the server's supervisor, which keeps every CPU)."""
    children = [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    return [c for c in children if b"srghn.sim.worker" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="--serve-cpu needs two CPUs")
def test_serve_cpu_keeps_evolution_and_the_servers_other_threads_off_the_serving_cpu(tmp_path: Path) -> None:
    from srghn.deploy.process.state import SERVER, read_runfile

    allowed = os.sched_getaffinity(0)
    cpu = max(allowed)
    state = tmp_path / "state"
    with tempfile.TemporaryDirectory(prefix="sg") as socks:
        proc = start(state, Path(socks), "--serve-cpu", str(cpu), "--duration", "300")
        try:
            server = wait_for(lambda: read_runfile(state, SERVER), 60, "the control server")
            serving = affinities(server["pid"])
            assert serving.pop(server["pid"]) == {cpu} and serving
            assert all(mask == allowed - {cpu} for mask in serving.values()), serving
            # the daemon's threads and its shadow workers (started once evolution begins) stay off the CPU
            workers = wait_for(lambda: _workers(proc.pid), 60, "the shadow workers")
            for pid in (proc.pid, *workers):
                assert all(mask == allowed - {cpu} for mask in affinities(pid).values()), (pid, affinities(pid))
        finally:
            summary = finish(proc, signal.SIGINT)
    assert summary["serving"]["requests"]["errors"] == 0
