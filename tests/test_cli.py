"""The srghn-ctl command line: a light --help, clear errors for bad input, and the evolve outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from srghn.cli import app

runner = CliRunner()


def test_cli_imports_no_torch():
    """`srghn-ctl --help` must answer fast: importing the CLI may not pull in torch or gymnasium."""
    code = "import sys, srghn.cli; print(sorted(m for m in ('torch', 'gymnasium', 'mujoco') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("evolve", "profiles"):
        assert command in result.output
    assert "--switch-at" in runner.invoke(app, ["evolve", "--help"]).output


@pytest.mark.parametrize(("args", "message"), [
    (["evolve", "--robot", "spot"], "unknown robot 'spot'"),
    (["evolve", "--generations", "10", "--switch-at", "10"], "--switch-at 10 is not before the end"),
    (["evolve", "--population", "0"], "--population must be >= 1"),
    (["evolve", "--generations", "ten"], "Invalid value for '--generations'"),
    (["evolve", "--switch-back-at", "5"], "without --switch-at"),
])
def test_bad_arguments_exit_2_with_a_message(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_bad_profile_file_names_the_field(tmp_path):
    from srghn.sim.profiles import PROFILE_DIR

    path = tmp_path / "bad.toml"
    path.write_text((PROFILE_DIR / "cartpole.toml").read_text().replace("population = 10", "population = -1"))
    result = runner.invoke(app, ["evolve", "--robot", str(path)])
    assert result.exit_code == 2 and "population must be >= 1" in result.output


def test_profiles_lists_the_robots():
    result = runner.invoke(app, ["profiles", "--json"])
    assert result.exit_code == 0
    assert [p["name"] for p in json.loads(result.output)] == ["ant", "cartpole", "lunarlander"]


@pytest.mark.slow
def test_evolve_cartpole_solves_switches_and_recovers(tmp_path):
    """End to end through the installed console script: >= 475 before the switch, back to it after."""
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "srghn.cli", "evolve", "--robot", "cartpole", "--generations", "60",
         "--switch-at", "30", "--seed", "0", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=900,  # a hang guard only: ~30 s on 2 idle cores, far more when busy
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # stdout holds exactly one JSON document
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 60 and summary["completed"]
    assert max(r["best"] for r in records[:30]) >= 475 and records[29]["best"] >= 475
    (switch,) = summary["switches"]
    assert switch["switch_at"] == 30 and switch["regime"] == "inverted"
    assert switch["target_regained"] is not None and switch["target_regained"] <= 29
    assert all(switch["regained"][level] is not None for level in ("50", "90", "95"))
    for name in ("fitness.png", "population.npz", "champion.npz", "summary.json", "run.json"):
        assert (out / name).exists()


def test_ctrl_c_keeps_the_generations_done(tmp_path):
    """SIGINT mid-run: exit 130, and the population, champion and summary of what was done are on disk."""
    import signal
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "srghn.cli", "evolve", "--robot", "cartpole",
                             "--generations", "100000", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):  # wait for real progress
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no generation finished within 60 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    summary = json.loads((out / "summary.json").read_text())
    done = len(metrics.read_text().splitlines())
    assert summary["completed"] is False and summary["generations"] == done >= 3
    for name in ("population.npz", "champion.npz", "fitness.png"):
        assert (out / name).stat().st_size > 0


def test_progress_paces_only_the_work_this_command_did(monkeypatch, capsys):
    """A bench resumed with one run done and the next checkpointed at generation 40: the time left comes from
    the generations this command ran, not from those read back."""
    from srghn.commands import progress as shown

    now = [0.0]
    monkeypatch.setattr(shown.time, "monotonic", lambda: now[0])
    with shown.Progress("bench", 1000) as progress:
        progress.skip(200)  # run 0: finished before
        progress.skip(40)  # run 1 goes on from its checkpoint at generation 40
        progress.update()
        for _ in range(41, 51):
            now[0] += 10.0
            progress.update()
    last = capsys.readouterr().err.strip().splitlines()[-1]
    # 11 generations in 100 s, 749 to go: 6809 s (counting the 240 read back would say about 5 min)
    assert "251/1000" in last and "about 113 min left" in last


def test_the_simulated_robot_has_one_command_line():
    """`srghn-ctl robot-sim` and `python -m srghn.deploy.clients.robot_sim` (what a daemon's --sim-robot runs)
    take the same flags: a flag added to one is there in the other."""
    import re

    def flags(*command: str) -> set[str]:
        done = subprocess.run([sys.executable, "-m", *command, "--help"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "COLUMNS": "200"})
        assert done.returncode == 0, done.stderr
        return set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", done.stdout))

    cli = flags("srghn.cli", "robot-sim")
    assert {"--fault-def", "--name", "--record", "--state-dir", "--json", "--control"} <= cli
    assert cli == flags("srghn.deploy.clients.robot_sim")
