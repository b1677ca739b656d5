"""Signals only set a flag, and evolution stops between generations: a real daemon process gets SIGTERM at 30
random moments of its life -- attaching, evolving, checkpointing, gating a champion -- and every time it exits
cleanly and leaves a population that reloads and regenerates exactly the policies it saved, with exactly as
many generations recorded in metrics.jsonl as the population has lived through."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from srghn.controller.checkpoint import load_population
from srghn.deploy.process.state import SERVER, read_runfile
from srghn.sim.records import read_records

pytestmark = pytest.mark.slow

MOMENTS = 12
WINDOW_S = 3.0
"""Every other SIGTERM comes uniformly within this long after the daemon process starts (start-up, attaching,
the shadow worker starting, the first generations); the others uniformly within :data:`EVOLVING_S` after the
daemon has recorded a new generation, whatever the machine's speed (evolution, checkpoints, gating)."""
EVOLVING_S = 1.0


def run_daemon(state: str, endpoints: dict) -> None:
    """The daemon, as ``srghn-ctl run --attach`` runs it, in a process forked from a server that imported it."""
    from srghn.deploy.daemon.daemon import Daemon
    from srghn.deploy.daemon.settings import DaemonSettings
    from srghn.sim.profiles import load_profile

    settings = DaemonSettings(load_profile("cartpole"), Path(state), seed=3, population=6, episodes=2,
                              gate_every=2, auto_promote=True, workers=1, attach=True, **endpoints)
    Daemon(settings).run()


def test_sigterm_at_random_moments_always_leaves_a_whole_population(tmp_path) -> None:
    state = tmp_path / "state"
    rng = np.random.default_rng(12)
    with tempfile.TemporaryDirectory(prefix="st") as socks:
        endpoints = {role: f"ipc://{socks}/{role[0]}.sock" for role in ("control", "admin", "telemetry")}
        # the server runs the whole time, as under systemd; each daemon attaches to it
        server = subprocess.Popen([sys.executable, "-m", "srghn.cli", "serve", "--robot", "cartpole", "--state-dir",
                                   str(state), *(f"--{role}={ep}" for role, ep in endpoints.items())],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while read_runfile(state, SERVER) is None:
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
            time.sleep(0.1)
        forks = multiprocessing.get_context("forkserver")
        forks.set_forkserver_preload(["srghn.deploy.daemon.daemon"])  # torch is imported once, no torch thread forked
        outcomes, before = [], snapshot(state)
        try:
            for i in range(MOMENTS):
                daemon = forks.Process(target=run_daemon, args=(str(state), endpoints))
                recorded = records(state)
                daemon.start()
                if i % 2:  # once it evolves: wait for a new generation record (a file it appends to)
                    deadline = time.monotonic() + 300
                    while records(state) == recorded and daemon.is_alive() and time.monotonic() < deadline:
                        time.sleep(0.05)
                moment = rng.uniform(0.0, EVOLVING_S if i % 2 else WINDOW_S)
                time.sleep(moment)  # the random moment itself: what is measured is what the daemon does then
                os.kill(daemon.pid, signal.SIGTERM)
                daemon.join(120)
                if daemon.exitcode == -signal.SIGTERM:  # it came before the daemon took over its signals
                    assert snapshot(state) == before, f"a daemon killed {moment:.2f} s in changed the state"
                    continue
                assert daemon.exitcode == 0, f"the daemon did not stop cleanly {moment:.2f} s in"
                outcomes.append(check_saved_population(state))
                assert not i % 2 or outcomes[-1] > recorded, "a daemon that had evolved saved no more generations"
                before = snapshot(state)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    generations = [g for g in outcomes if g is not None]
    assert generations == sorted(generations), generations  # nothing recorded was ever lost
    assert server.returncode == 0


def records(state: Path) -> int:
    path = state / "daemon" / "cartpole" / "metrics.jsonl"
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def snapshot(state: Path) -> tuple[bytes | None, bytes | None]:
    home = state / "daemon" / "cartpole"
    return tuple((home / name).read_bytes() if (home / name).is_file() else None
                 for name in ("population.npz", "metrics.jsonl"))


def check_saved_population(state: Path) -> int | None:
    """The population on disk reloads, regenerates its own policies, and matches the metrics; its generation."""
    home = state / "daemon" / "cartpole"
    if not (home / "population.npz").is_file():
        return None  # stopped before the population was first saved
    saved = load_population(home / "population.npz")
    strategy, meta = saved.strategy, saved.meta
    with torch.no_grad():
        regenerated = strategy.ghn.generate(strategy.params).numpy()
    assert np.array_equal(regenerated, strategy.policies), "saved parameters and policies disagree"
    recorded = read_records(home / "metrics.jsonl") if (home / "metrics.jsonl").is_file() else []
    assert len(recorded) == strategy.generation == meta["generation"], (len(recorded), strategy.generation)
    assert [r.generation for r in recorded] == list(range(strategy.generation))
    return strategy.generation
