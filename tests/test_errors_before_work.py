"""Bad input is refused before any work (issue 14): one line naming the problem, exit code 2, torch never
imported, no run folder, no registry, nothing printed as started. Each case runs the real console entry point in
a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import real_ctl as ctl
from cli_helpers import refused

from srghn.deploy.process.state import DAEMON, hold_lock


def nothing_made(state: Path, out: Path | None = None) -> None:
    assert not (state / "registry.db").exists() and not (state / "daemon").exists()
    assert out is None or not out.exists()


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path / "state"


def bad_obs_profile(tmp_path: Path) -> Path:
    from srghn.sim.profiles import PROFILE_DIR

    path = tmp_path / "wide.toml"
    path.write_text((PROFILE_DIR / "cartpole.toml").read_text().replace("dim = 4", "dim = 5")
                    .replace('name = "cartpole"', 'name = "wide"'))
    return path


@pytest.mark.parametrize(("args", "message"), [
    (["--fault-at", "100"], "--fault and --fault-at need --sim-robot"),
    (["--sim-robot", "--fault-at", "100"], "--fault and --fault-at go together"),
    (["--sim-robot", "--fault", "inverted", "--fault-at", "-3"], "--fault-at must be >= 0"),
    (["--sim-robot", "--robot-rate", "-1"], "--robot-rate must be >= 0"),
    (["--robot-rate", "50"], "--robot-rate needs --sim-robot"),
    (["--duration", "-5"], "--duration must be a positive number"),
    (["--generations", "0"], "--generations must be >= 1"),
    (["--regime", "sideways"], "--regime 'sideways' is not a regime of cartpole"),
    (["--record", "--record-file-mb", "0"], "--record-file-mb must be >= 0.1"),
    (["--robot", "spot"], "unknown robot 'spot'"),
    (["--serve-cpu", "4096"], "--serve-cpu 4096 is not one of the CPUs"),
    (["--serve-cpu", "fast"], "--serve-cpu 'fast' must be a CPU number, 'auto' or 'none'"),
])
def test_run_refuses_bad_flags_before_any_work(state, args, message):
    done = ctl("run", "--generations", "1", "--state-dir", str(state), *args)
    refused(done, message)
    nothing_made(state)


def test_a_state_dir_that_is_a_file_is_refused(tmp_path):
    state = tmp_path / "state"
    state.write_text("not a directory")
    refused(ctl("run", "--generations", "1", "--state-dir", str(state)), "is not a directory")
    out = tmp_path / "evolve-out"
    refused(ctl("evolve", "--generations", "1", "--out", str(out), "--state-dir", str(state)), "is not a directory")
    assert not out.exists()  # refused before the evolution, not after it


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_state_dir_is_refused(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir(mode=0o500)
    try:
        refused(ctl("run", "--generations", "1", "--state-dir", str(parent / "state")), "is not writable")
    finally:
        parent.chmod(0o700)


def test_an_observation_dimension_mismatch_is_refused_before_a_run_folder_exists(tmp_path, state):
    profile = bad_obs_profile(tmp_path)
    out = tmp_path / "out"
    refused(ctl("evolve", "--robot", str(profile), "--generations", "1", "--out", str(out), "--state-dir", str(state)),
            "observation.dim is 5")
    nothing_made(state, out)
    refused(ctl("run", "--robot", str(profile), "--generations", "1", "--state-dir", str(state)),
            "observation.dim is 5")
    nothing_made(state)


def test_evolve_refuses_an_out_that_holds_a_run(tmp_path, state):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text("{}")
    refused(ctl("evolve", "--out", str(out), "--state-dir", str(state)), "already holds a run; pass --resume")
    refused(ctl("evolve", "--out", str(tmp_path / "none"), "--resume"), "holds no checkpointed run")


def test_evolve_refuses_a_bad_update_clip(tmp_path, state):
    out = tmp_path / "out"
    refused(ctl("evolve", "--update-clip", "0", "--out", str(out), "--state-dir", str(state)),
            "--update-clip must be finite and > 0, got 0.0")
    refused(ctl("evolve", "--update-clip-decay", "2", "--out", str(out), "--state-dir", str(state)),
            "--update-clip-decay must be in (0, 1], got 2.0")
    nothing_made(state, out)


def test_a_second_daemon_is_refused_before_it_says_anything(state):
    state.mkdir()
    with hold_lock(state, DAEMON):
        done = ctl("run", "--generations", "1", "--state-dir", str(state))
    refused(done, "another daemon")
    assert not (state / "daemon").exists()


def test_watch_refuses_an_unknown_topic_listing_the_topics(state):
    done = ctl("watch", "--topic", "bogus", "--state-dir", str(state))
    refused(done, "--topic 'bogus' is not a telemetry topic; topics: generation, gate, promotion")


def test_version():
    from srghn import __version__

    done = subprocess.run([sys.executable, "-m", "srghn.cli", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"srghn-ctl {__version__}"


def test_help_fits_80_columns():
    for args in ([], ["run"], ["evolve"], ["record", "export"], ["watch"]):
        done = subprocess.run([sys.executable, "-m", "srghn.cli", *args, "--help"], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "COLUMNS": "80"})
        assert done.returncode == 0, done.stderr
        assert max(len(line) for line in done.stdout.splitlines()) <= 80, done.stdout


def test_run_takes_a_regime_the_daemon_identified(tmp_path, state):
    """One --regime check, the daemon's: a regime of the profile or one the daemon identified (the registry holds
    those, and the daemon checks them there). Refused here for the --init that comes after it, not for the regime."""
    done = ctl("run", "--regime", "identified-1c2d3e4f", "--init", str(tmp_path / "nothing"), "--state-dir", str(state))
    refused(done, "--init")
    assert "--regime" not in done.stderr
    nothing_made(state)


def test_the_settings_are_checked_when_made(tmp_path):
    from srghn import ConfigError
    from srghn.deploy.daemon.settings import DaemonSettings
    from srghn.sim.profiles import load_profile
    from srghn.sim.settings import BenchSettings, EvolveSettings

    cartpole = load_profile("cartpole")
    assert DaemonSettings(cartpole, tmp_path, regime="identified-1c2d3e4f").regime == "identified-1c2d3e4f"
    for make, message in (
            (lambda: DaemonSettings(cartpole, tmp_path, regime="sideways"), "--regime 'sideways' is not a regime"),
            (lambda: DaemonSettings(cartpole, tmp_path, gate_every=0), "--gate-every must be >= 1, got 0"),
            (lambda: EvolveSettings(cartpole, tmp_path / "out", update_clip_decay=2.0), "--update-clip-decay"),
            (lambda: BenchSettings(cartpole, ("srghn",), (0,), 10, tmp_path / "b", jobs=2, backend="ray"), "--jobs"),
            (lambda: BenchSettings(cartpole, ("srghn",), (0,), 10, tmp_path / "b", switch_at=10), "--switch-at")):
        with pytest.raises(ConfigError, match=message):
            make()
