"""The systemd units in deploy/process/systemd: they run commands that exist, and the server speaks sd_notify --
readiness once it serves, liveness from its serving loop -- through a server's death and its standby taking over."""

from __future__ import annotations

import configparser
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from srghn.cli import app

UNITS = Path(__file__).resolve().parents[1] / "deploy" / "process" / "systemd"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(UNITS / name)
    return parser


def test_units_run_commands_that_exist() -> None:
    server, daemon = unit("srghn-server.service"), unit("srghn-daemon.service")
    assert server["Service"]["Type"] == "notify" and server["Service"]["NotifyAccess"] == "all"
    assert server["Service"]["Restart"] == daemon["Service"]["Restart"] == "always"
    assert "WatchdogSec" in server["Service"] and "srghn-server.service" in daemon["Unit"]["After"]
    for parsed in (server, daemon):
        argv = shlex.split(parsed["Service"]["ExecStart"])
        assert argv[0].endswith("/srghn-ctl")
        command, options = argv[1], [a for a in argv[2:] if a.startswith("--")]
        helped = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
        assert helped.exit_code == 0
        for option in options:
            assert option in helped.output, f"{command} has no {option}"


@pytest.mark.slow
def test_the_server_reports_readiness_and_liveness_to_systemd(tmp_path: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    with tempfile.TemporaryDirectory(prefix="sd") as socks:
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
        service = subprocess.Popen([sys.executable, "-m", "srghn.cli", "serve", "--robot", "cartpole", "--state-dir",
                                    str(tmp_path / "state"), *(f"--{role}=ipc://{socks}/{role[0]}.sock"
                                                               for role in ("control", "admin", "telemetry"))],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            ready = received(notify, "READY=1")
            first = int(ready.split("(pid ")[1].rstrip(")"))
            received(notify, "WATCHDOG=1")
            os.kill(first, signal.SIGKILL)  # the serving server dies; its standby takes over and says so
            again = received(notify, "READY=1")
            assert int(again.split("(pid ")[1].rstrip(")")) != first
            received(notify, "WATCHDOG=1")
            service.send_signal(signal.SIGTERM)
            received(notify, "STOPPING=1")
            assert service.wait(60) == 0, service.stderr.read()
        finally:
            if service.poll() is None:
                service.kill()
    notify.close()


def received(sock: socket.socket, wanted: str) -> str:
    """The next datagram that holds ``wanted`` (others, e.g. earlier watchdog pings, are passed over)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = sock.recv(4096).decode()
        if wanted in message.split("\n"):
            return message
    raise AssertionError(f"no {wanted} from the service")
