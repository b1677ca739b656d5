"""``srghn-ctl`` champions commands: the evolve -> gate -> promote flow end to end, and errors for bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from champion_helpers import passing_report, variant
from typer.testing import CliRunner

from srghn.cli import app
from srghn.controller.onnx_policy import OnnxPolicy
from srghn.deploy.registry.store import ONNX_SUFFIX, Registry
from srghn.sim.profiles import PROFILE_DIR

COMMANDS = ("champions", "show", "lineage", "gate", "promote", "rollback", "export", "history", "evolve")
runner = CliRunner()


def ctl(*args: str, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture
def state(registry: Registry, cartpole_model: bytes) -> Path:
    """A state dir with champions a (live), b (passed, gated against a) and c (candidate, child of b)."""
    for cid, parents in (("a", ()), ("b", ("a",)), ("c", ("b",))):
        registry.register(champion_id=cid, robot="cartpole", model=variant(cartpole_model, cid),
                          params=[0.0], policy={"obs_dim": 4, "act_dim": 2, "hidden": [32], "discrete": True},
                          parents=parents, fitness={"fitness": 1.0})
    registry.store_report("a", passing_report("a", "cartpole", None))
    registry.promote("a", "tester")
    registry.store_report("b", passing_report("b", "cartpole", "a"))
    return registry.state_dir


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = ctl(command, "--help")
    assert result.exit_code == 0 and "Usage" in result.output and len(result.output) > 200


@pytest.mark.slow
def test_evolve_registers_candidates_then_gate_promote_export_through_the_cli(tmp_path: Path) -> None:
    # the built-in cartpole profile, but with a floor a 3-generation champion can clear
    profile = tmp_path / "cartpole-demo.toml"
    profile.write_text((PROFILE_DIR / "cartpole.toml").read_text().replace("all = 100.0", "all = 5.0"))
    state = tmp_path / "state"
    result = ctl("evolve", "--robot", profile, "--generations", 3, "--state-dir", state, "--out", tmp_path / "run",
                 "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(summary["registered"]) == 3

    listed = json.loads(ctl("champions", "--json", "--state-dir", state).stdout)
    assert sorted(c["id"] for c in listed) == sorted(summary["registered"])
    best = summary["registered"][0]
    champion = next(c for c in listed if c["id"] == best)
    assert champion["status"] == "candidate" and champion["generation"] == 3 and champion["regime"] == "nominal"
    assert champion["fitness"]["rank"] == 1 and champion["fitness"]["population"] == 10
    assert champion["parents"] and champion["parents"][0].startswith(best.rsplit("-i", 1)[0])
    assert best.endswith(f"-i{summary['champion']['id']}")

    gated = ctl("gate", best, "--state-dir", state)
    assert gated.exit_code == 0, gated.output
    assert "PASSED" in gated.stdout and "latency_p99" in gated.stdout
    promoted = ctl("promote", best, "--reason", "first field trial", "--state-dir", state)
    assert promoted.exit_code == 0 and f"promoted {best}" in promoted.stdout
    assert ctl("champions", "--status", "live", "--json", "--state-dir", state).stdout.count('"id"') == 1

    shown = ctl("show", best, "--state-dir", state)
    assert shown.exit_code == 0 and "verified" in shown.stdout and "latency_p99" in shown.stdout
    report = json.loads(ctl("show", best, "--json", "--state-dir", state).stdout)["gate_report"]
    assert report["passed"] and "floor[nominal]" in [g["name"] for g in report["gates"]]
    tree = ctl("lineage", best, "--state-dir", state)
    assert tree.exit_code == 0 and champion["parents"][0] in tree.stdout
    line = json.loads(ctl("lineage", best, "--json", "--state-dir", state).stdout)["line"]
    assert line[0]["id"] == best and line[1]["id"] == champion["parents"][0]  # back through the run's records ...
    assert line[-1]["generation"] is None and line[-1]["root_of_run"]["origin"] == "scratch"  # ... to its start
    assert f"first ancestor: {line[-1]['id']}" in tree.stdout

    onnx_file = tmp_path / "policy.onnx"
    exported = ctl("export", best, "-o", onnx_file, "--state-dir", state)
    assert exported.exit_code == 0
    assert onnx_file.stat().st_mode & 0o777 == 0o644  # a model to hand around (the registry's own stay 0600)
    with Registry.open(state) as registry:
        assert onnx_file.read_bytes() == registry.load_model(best)
    assert OnnxPolicy(onnx_file.read_bytes()).metadata["srghn.champion_id"] == best

    back = ctl("rollback", "--state-dir", state)
    assert back.exit_code == 1 and "no previous live champion" in back.output
    events = json.loads(ctl("history", "--json", "--state-dir", state).stdout)
    assert [e["kind"] for e in events] == ["register"] * 3 + ["gate", "promote", "refused"]
    assert events[4]["reason"] == "first field trial" and events[4]["to"] == best


def test_evolve_with_no_register_leaves_the_state_dir_alone(tmp_path: Path) -> None:
    result = ctl("evolve", "--robot", "cartpole", "--generations", 1, "--population", 2, "--no-register",
                 "--state-dir", tmp_path / "state", "--out", tmp_path / "run", "--json")
    assert result.exit_code == 0, result.output
    assert "registered" not in json.loads(result.stdout.strip().splitlines()[-1])
    assert (tmp_path / "run" / "population.npz").exists() and not (tmp_path / "state").exists()


def test_promote_rollback_and_history_through_the_cli(state: Path) -> None:
    assert ctl("promote", "b", "--reason", "better", "--actor", "ops", "--state-dir", state).exit_code == 0
    back = ctl("rollback", "--reason", "b wobbles", "--state-dir", state)
    assert back.exit_code == 0 and "a is live (was b)" in back.stdout
    again = ctl("rollback", "--to", "b", "--robot", "cartpole", "--state-dir", state)
    assert again.exit_code == 0 and "b is live (was a)" in again.stdout
    refused = ctl("promote", "c", "--state-dir", state)
    assert refused.exit_code == 1 and "no gate report" in refused.output
    events = json.loads(ctl("history", "--json", "--robot", "cartpole", "--state-dir", state).stdout)
    moves = [(e["kind"], e["from"], e["to"]) for e in events if e["kind"] in ("promote", "rollback")]
    assert moves == [("promote", None, "a"), ("promote", "a", "b"), ("rollback", "b", "a"), ("rollback", "a", "b")]
    assert events[-1]["kind"] == "refused" and "ops" in [e["actor"] for e in events]
    table = ctl("history", "--limit", 2, "--state-dir", state)
    assert table.exit_code == 0 and "refused" in table.stdout and "register" not in table.stdout
    listing = ctl("champions", "--state-dir", state)
    assert listing.exit_code == 0 and "live" in listing.stdout and "(lkg)" in listing.stdout
    lineage = json.loads(ctl("lineage", "b", "--json", "--state-dir", state).stdout)
    assert lineage["parents"][0]["id"] == "a" and lineage["children"][0]["id"] == "c"


def test_the_state_dir_comes_from_the_environment_too(state: Path) -> None:
    result = ctl("champions", "--json", env={"SRGHN_STATE_DIR": str(state)})
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 3


def test_clear_errors_for_bad_input(state: Path, tmp_path: Path) -> None:
    missing = ctl("champions", "--state-dir", tmp_path / "nowhere")
    assert missing.exit_code == 2 and "does not exist" in missing.output and not (tmp_path / "nowhere").exists()
    unknown = ctl("show", "zzz", "--state-dir", state)
    assert unknown.exit_code == 2 and "no champion with id 'zzz'" in unknown.output
    assert ctl("lineage", "zzz", "--state-dir", state).exit_code == 2
    assert ctl("gate", "zzz", "--state-dir", state).exit_code == 2
    assert ctl("rollback", "--to", "zzz", "--state-dir", state).exit_code == 2
    status = ctl("champions", "--status", "bogus", "--state-dir", state)
    assert status.exit_code == 2 and "--status must be one of" in status.output
    robot = ctl("champions", "--robot", "spot", "--state-dir", state)
    assert robot.exit_code == 2 and "no champions registered for robot 'spot'" in robot.output
    assert ctl("history", "--limit", 0, "--state-dir", state).exit_code == 2
    assert ctl("promote", "--state-dir", state).exit_code == 2  # missing ID
    assert ctl("export", "a", "--state-dir", state).exit_code == 2  # missing -o
    assert ctl("champions", "--frobnicate").exit_code == 2
    force = ctl("promote", "b", "--force", "--state-dir", state)
    assert force.exit_code == 2 and "--force needs --reason" in force.output
    bad_dir = ctl("export", "a", "-o", tmp_path / "no" / "such" / "x.onnx", "--state-dir", state)
    assert bad_dir.exit_code == 2 and "does not exist" in bad_dir.output
    registry_bytes = (state / "registry.db").read_bytes()
    for inside in (state / "registry.db", state / "x.onnx"):  # the registry itself, or anything beside it
        over = ctl("export", "a", "-o", inside, "--state-dir", state)
        assert over.exit_code == 2 and "inside the state directory" in over.output
    assert (state / "registry.db").read_bytes() == registry_bytes and not (state / "x.onnx").exists()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "registry.db").write_bytes(b"not a database" * 64)
    junk = ctl("history", "--state-dir", tmp_path / "junk")
    assert junk.exit_code == 2 and "not a readable SQLite registry" in junk.output  # bad input (issue 36)


def test_a_corrupted_artifact_is_refused_by_export_and_rollback(state: Path, tmp_path: Path) -> None:
    assert ctl("promote", "b", "--reason", "newer", "--state-dir", state).exit_code == 0
    with Registry.open(state) as registry:
        path = registry.artifacts.path(registry.get("a").artifact_sha256, ONNX_SUFFIX)
    path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 0xFF]))
    exported = ctl("export", "a", "-o", tmp_path / "a.onnx", "--state-dir", state)
    assert exported.exit_code == 1 and "is corrupted" in exported.output and not (tmp_path / "a.onnx").exists()
    back = ctl("rollback", "--reason", "b wobbles", "--state-dir", state)
    assert back.exit_code == 1 and "is corrupted" in back.output and "b stays live" in back.output
    with Registry.open(state) as registry:
        assert registry.live("cartpole").id == "b" and registry.check() == []


def test_the_serving_modules_do_not_import_torch() -> None:
    import subprocess

    code = ("import sys; import srghn.deploy.registry.store, srghn.deploy.registry.artifacts, "
            "srghn.deploy.process.state, "
            "srghn.controller.onnx_policy; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
