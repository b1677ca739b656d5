"""Processes that never evolve anything load without torch: the live server and its helpers, the clients, robot
profiles and configs (so the simulated robot and the CLI's serving commands start in a fraction of a second)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "torch_geometric")
SLOW = ("cma", "scipy", "matplotlib", "mcap")
"""Libraries that take seconds to import here (pycma pulls in scipy.stats and matplotlib), or that only the
recorder process needs."""
LIGHT = {
    "srghn.cli": HEAVY + SLOW + ("gymnasium", "mujoco", "zmq", "onnxruntime"),
    "srghn.sim.preflight": HEAVY + SLOW,
    "srghn.deploy.recording.tap": HEAVY + SLOW + ("gymnasium", "zmq"),
    "srghn.deploy.recording.writer": HEAVY + SLOW + ("gymnasium", "zmq"),
    "srghn.deploy.recording.files": HEAVY + SLOW + ("gymnasium", "zmq"),
    "srghn.deploy.server.process": HEAVY + SLOW + ("gymnasium", "mujoco"),
    "srghn.deploy.server.supervisor": HEAVY + ("gymnasium", "mujoco", "numpy", "zmq"),
    "srghn.deploy.clients.client": HEAVY + ("gymnasium", "mujoco"),
    "srghn.deploy.clients.operator": HEAVY + ("gymnasium", "mujoco"),
    "srghn.deploy.wire.keys": HEAVY + ("gymnasium", "mujoco"),
    "srghn.sim.profiles": HEAVY + SLOW,
    "srghn.controller.configs": HEAVY,
    "srghn.deploy.clients.robot_sim": HEAVY,
    "srghn.deploy.clients.robot_command": HEAVY + SLOW + ("gymnasium", "mujoco", "zmq"),
    # the settings `srghn-ctl` makes (and checks) before its heavy imports
    "srghn.sim.settings": HEAVY + SLOW,
    "srghn.deploy.daemon.settings": HEAVY + SLOW,
}


@pytest.mark.parametrize("module", sorted(LIGHT))
def test_module_imports_nothing_heavy(module: str) -> None:
    code = (f"import sys, {module}; from srghn.sim.profiles import load_profile; " if module == "srghn.sim.profiles"
            else f"import sys, {module}; ")
    code += f"print(sorted(m for m in {LIGHT[module]!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"{module} pulls in {done.stdout.strip()}"


def test_profiles_load_without_torch() -> None:
    code = ("import sys; from srghn.sim.profiles import available_profiles, load_profile; "
            "[load_profile(n) for n in available_profiles()]; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
