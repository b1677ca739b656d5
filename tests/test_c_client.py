"""The C client shipped in clients/c: built here with gcc against libzmq (Debian's libzmq3-dev; `make test` installs
both), then driven against a real daemon (``srghn-ctl run``); every answer is checked against the Python
client's answer to the same request."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from server_helpers import live_champion

from srghn.deploy.clients.client import AdminClient, ControlClient
from srghn.deploy.wire import protocol as p
from srghn.errors import ServerUnavailable

pytestmark = pytest.mark.slow

CLIENT_DIR = Path(__file__).resolve().parents[1] / "clients" / "c"
LIVE = "cp-c-live"


def build(directory: Path) -> Path:
    done = subprocess.run(["make", "-C", str(CLIENT_DIR), f"BUILD={directory}"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"the C client does not build (gcc and libzmq3-dev needed):\n{done.stderr}"
    return directory


def test_c_client_acts_steps_and_informs_like_the_python_client_against_a_real_daemon(tmp_path, cartpole_model):
    binaries = build(tmp_path / "build")
    state = tmp_path / "state"
    live_champion(state, LIVE, cartpole_model)
    with tempfile.TemporaryDirectory(prefix="sc") as socks:
        control, admin_endpoint = f"ipc://{socks}/c.sock", f"ipc://{socks}/a.sock"
        daemon = subprocess.Popen([sys.executable, "-m", "srghn.cli", "run", "--robot", "cartpole", "--state-dir",
                                   str(state), "--json", "--workers", "1", "--no-auto-promote",
                                   f"--control={control}", f"--admin={admin_endpoint}",
                                   f"--telemetry=ipc://{socks}/t.sock"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            with AdminClient(admin_endpoint, timeout_s=2) as admin, ControlClient(control) as python:
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline:
                    try:
                        if (admin.status()["evolution"] or {}).get("generation", 0) >= 1:
                            break
                    except ServerUnavailable:
                        pass
                    time.sleep(0.2)
                else:
                    raise AssertionError("the daemon did not start evolving")

                info = subprocess.run([binaries / "srghn_tool", "info", control], capture_output=True, text=True,
                                      timeout=30)
                assert info.returncode == 0, info.stderr
                assert json.loads(info.stdout) == python.info()

                rng = np.random.default_rng(7)
                observations = (rng.standard_normal((40, 4)) * 0.2).astype(np.float32)
                lines = [("act " + " ".join(f"{v:.9g}" for v in obs)) for obs in observations]
                lines += ["step 1 0 0 " + " ".join(f"{v:.9g}" for v in observations[0]),
                          "act 0.1 0.2 0.3",  # three values: WRONG_DIMENSION
                          "act nan 0 0 0",    # NOT_FINITE
                          "step 1 1 0 " + " ".join(f"{v:.9g}" for v in observations[1])]
                run = subprocess.run([binaries / "srghn_tool", "--id", "c-robot", "run", control],
                                     input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
                assert run.returncode == 0, run.stderr
                replies = [json.loads(line) for line in run.stdout.splitlines()]
                assert len(replies) == len(lines)
                for obs, reply in zip(observations, replies, strict=False):
                    expected = python.act(obs)
                    assert reply["rc"] == 0, reply
                    assert reply["action"] == expected.action.tolist()
                    assert (reply["source"], reply["flags"], reply["serial"], reply["champion"]) == (
                        int(expected.source), expected.flags, expected.serial, expected.champion) == (
                        int(p.Source.LIVE), 0, expected.serial, LIVE)
                step, wrong, nan, last = replies[40:]
                assert step == last == {"rc": 0}
                assert wrong["rc"] == p.ErrorCode.WRONG_DIMENSION and "takes 4" in wrong["error"]
                assert nan["rc"] == p.ErrorCode.NOT_FINITE and "NaN or Inf" in nan["error"]

                robot = subprocess.run([binaries / "example_robot", control, "600", "0"], capture_output=True,
                                       text=True, timeout=120)
                assert robot.returncode == 0, robot.stderr
                assert f"served by {LIVE}" in robot.stdout and robot.stdout.strip().endswith("0 timeouts")
                clients = {c["client"]: c for c in admin.status()["clients"]}
                assert clients["c-robot"]["steps"] == 2 and clients["c-robot"]["episodes"] == 1
                assert clients["example-robot"]["steps"] == 600
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                daemon.kill()
                raise
    assert daemon.returncode == 0
