"""Issue 36: every line the CLI prints is what happened. Gating changes no champion; a rollback refusal says what
went live; the summaries say what the registry and the robot's own record say; bad input is one line and exit 2
before any process starts; tables never cut an id at 80 columns."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from champion_helpers import cartpole_controller, passing_report, variant
from cli_helpers import real_ctl, refused
from rich.console import Console
from typer.testing import CliRunner

from srghn.cli import app
from srghn.commands import console
from srghn.commands import run as run_command
from srghn.commands.events import RunEvents
from srghn.deploy.clients.robot_sim import RobotRun
from srghn.deploy.daemon.champions import gate_champion, register_policy
from srghn.deploy.registry.store import Registry
from srghn.sim.profiles import load_profile

runner = CliRunner()


def ctl(*args: object, width: int = 80):
    """The command as a user at a ``width``-column terminal sees it (the CLI's consoles are made at import)."""
    saved = console.out, console.err
    console.out, console.err = Console(width=width), Console(stderr=True, width=width)
    try:
        return runner.invoke(app, [str(a) for a in args])
    finally:
        console.out, console.err = saved


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# -- gating changes no champion ----------------------------------------------------------------------------------


@pytest.fixture
def live_nominal(tmp_path: Path) -> Path:
    """A real CartPole champion of regime nominal, gated there and live; a second one gated and passed."""
    cartpole = load_profile("cartpole")
    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        for cid in ("cartpole-factory-1c76b537", "cartpole-s3-9e1f0a-i193"):
            register_policy(registry, cartpole, cartpole_controller((0, 0, 1, 1)), champion_id=cid, regime="nominal",
                            fitness={"fitness": 500.0})
        assert gate_champion(registry, "cartpole-factory-1c76b537", "tester").passed
        registry.promote("cartpole-factory-1c76b537", "tester")
        assert gate_champion(registry, "cartpole-s3-9e1f0a-i193", "tester").passed
    return state


def test_a_gate_in_another_regime_is_stored_beside_and_changes_no_status(live_nominal: Path) -> None:
    live = "cartpole-factory-1c76b537"
    with Registry.open(live_nominal) as registry:
        before = registry.get(live)
    gated = ctl("gate", live, "--regime", "inverted", "--state-dir", live_nominal, width=200)
    assert gated.exit_code == 1, gated.output  # the nominal controller falls over with its motor inverted
    header = next(line for line in gated.output.splitlines() if "gates of" in line)
    assert "in regime inverted" in header and "vs live: itself" in header and "(none)" not in header
    assert "its status (live) and its own report are unchanged" in gated.output
    with Registry.open(live_nominal) as registry:
        after = registry.get(live)
        assert after.status == "live" and registry.live("cartpole").id == live
        assert after.gate_report == before.gate_report and after.gate_report.passed
        assert list(after.other_reports) == ["inverted"] and not after.other_reports["inverted"].passed
        assert after.other_reports["inverted"].champion_live
        assert registry.check() == []
        event = registry.history()[-1]
        assert event.kind == "gate" and event.detail["release"] is False and event.detail["regimes"] == "inverted"
    listed = json.loads(ctl("champions", "--status", "live", "--json", "--state-dir", live_nominal).stdout)
    assert [c["id"] for c in listed] == [live] and listed[0]["gate_report"]["passed"]
    table = ctl("champions", "--status", "live", "--state-dir", live_nominal, width=200).output
    row = next(line for line in table.splitlines() if live in line)
    assert "live" in row and "pass" in row and "FAIL" not in row
    # a second gate, and one of a passed champion in another regime: still nothing changes but the beside report
    ctl("gate", live, "--regime", "inverted", "--state-dir", live_nominal)
    assert ctl("gate", "cartpole-s3-9e1f0a-i193", "--regime", "inverted", "--state-dir", live_nominal).exit_code == 1
    with Registry.open(live_nominal) as registry:
        assert registry.get(live).status == "live"
        other = registry.get("cartpole-s3-9e1f0a-i193")
        assert other.status == "passed" and other.gate_report.passed and list(other.other_reports) == ["inverted"]
    shown = ctl("show", live, "--state-dir", live_nominal, width=200).output
    assert "own gate report of" in shown and "other report of" in shown


def test_a_release_gate_still_decides_a_candidate(live_nominal: Path) -> None:
    cartpole = load_profile("cartpole")
    with Registry.open(live_nominal) as registry:
        register_policy(registry, cartpole, cartpole_controller((0, 0, -1, -1)), champion_id="falls",
                        regime="nominal")
        assert not gate_champion(registry, "falls", "tester").passed
        assert registry.get("falls").status == "failed" and registry.get("falls").other_reports == {}


def test_the_gate_header_names_the_live_champion_it_compared_with(live_nominal: Path) -> None:
    done = ctl("gate", "cartpole-s3-9e1f0a-i193", "--state-dir", live_nominal, width=200)
    assert done.exit_code == 0, done.output
    assert "in regime nominal vs live cartpole-factory-1c76b537: PASSED" in done.output
    assert "stored as its gate report: cartpole-s3-9e1f0a-i193 is passed" in done.output


# -- what a rollback goes back to ----------------------------------------------------------------------------------


def two_went_live(registry: Registry, model: bytes) -> None:
    for cid in ("cartpole-factory-1c76b537", "cartpole-s3-9e1f0a-i193"):
        registry.register(champion_id=cid, robot="cartpole", model=variant(model, cid), params=[0.0],
                          policy={"obs_dim": 4, "act_dim": 2, "hidden": [32], "discrete": True})
    registry.store_report("cartpole-factory-1c76b537", passing_report("cartpole-factory-1c76b537", "cartpole", None))
    registry.promote("cartpole-factory-1c76b537", "tester")
    registry.store_report("cartpole-s3-9e1f0a-i193",
                          passing_report("cartpole-s3-9e1f0a-i193", "cartpole", "cartpole-factory-1c76b537"))
    registry.promote("cartpole-s3-9e1f0a-i193", "tester", "field test", force=True)


def test_a_second_rollback_is_refused_naming_the_champion_rolled_back_from(registry: Registry,
                                                                           cartpole_model: bytes) -> None:
    two_went_live(registry, cartpole_model)
    first = ctl("rollback", "--state-dir", registry.state_dir)
    assert first.exit_code == 0 and "cartpole-factory-1c76b537 is live (was cartpole-s3-9e1f0a-i193)" in first.output
    again = ctl("rollback", "--robot", "cartpole", "--state-dir", registry.state_dir, width=400)
    assert again.exit_code == 1
    assert "the only champion that went live" not in again.output
    assert "cartpole-s3-9e1f0a-i193 also went live, but a rollback took it off the stack" in again.output
    assert "`srghn-ctl rollback --to cartpole-s3-9e1f0a-i193`" in again.output
    assert registry.went_live("cartpole") == ["cartpole-factory-1c76b537", "cartpole-s3-9e1f0a-i193"]
    back = ctl("rollback", "--to", "cartpole-s3-9e1f0a-i193", "--state-dir", registry.state_dir)
    assert back.exit_code == 0 and registry.live("cartpole").id == "cartpole-s3-9e1f0a-i193"


def test_the_only_champion_that_went_live_is_said_so(registry: Registry, cartpole_model: bytes) -> None:
    registry.register(champion_id="a", robot="cartpole", model=cartpole_model, params=[0.0],
                      policy={"obs_dim": 4, "act_dim": 2, "hidden": [32], "discrete": True})
    registry.store_report("a", passing_report("a", "cartpole", None))
    registry.promote("a", "tester")
    refused = ctl("rollback", "--state-dir", registry.state_dir, width=400)
    assert refused.exit_code == 1 and "a is the only champion that went live for robot cartpole" in refused.output


# -- summaries say what the registry and the robot's record say ----------------------------------------------------


def faulted_robot() -> RobotRun:
    """5 whole episodes in nominal, one cut by the fault, then 6 short ones in inverted under two champions."""
    run = RobotRun()
    factory, i2365 = "cartpole-factory-1c76b537", "cartpole-s0-3f2a1c-i2365"
    record = [("nominal", factory, 500.0)] * 5 + [("nominal→inverted", factory, 120.0)]
    record += [("inverted", factory, 9.0)] * 4 + [("inverted", i2365, 480.0)] * 2
    for regime, champion, value in record:
        run.episodes += 1
        run.returns.append(value)
        run.finished_by.append(champion)
        run.episode_regimes.append(regime)
    run.steps_in.update({("nominal", "cartpole-factory-1c76b537"): 2600, ("inverted", "cartpole-factory-1c76b537"): 56,
                         ("inverted", "cartpole-s0-3f2a1c-i2365"): 960})
    run.served_by.update({"cartpole-factory-1c76b537": 2656, "cartpole-s0-3f2a1c-i2365": 960})
    run.steps = 3616
    run.fault = {"regime": "inverted", "at_step": 2520, "at_episode": 5}
    return run


def test_the_robot_summary_never_mixes_episodes_across_a_fault() -> None:
    run = faulted_robot()
    rows = run.summary()["by_regime"]
    assert [(r["regime"], r["champion"], r["episodes"], r["mean_return"]) for r in rows] == [
        ("nominal", "cartpole-factory-1c76b537", 5, 500.0),
        ("nominal→inverted", "cartpole-factory-1c76b537", 1, 120.0),
        ("inverted", "cartpole-factory-1c76b537", 4, 9.0),
        ("inverted", "cartpole-s0-3f2a1c-i2365", 2, 480.0)]
    assert sum(r["episodes"] for r in rows) == run.episodes and sum(r["steps"] for r in rows) == run.steps


def daemon_summary(registry: Registry, robot: dict) -> dict:
    live = registry.live("cartpole")
    lkg = registry.last_known_good("cartpole")
    return {"robot": "cartpole", "stopped_by": "bound", "duration_s": 60.0, "generations_this_run": 40,
            "generation": 40, "regime": "inverted", "champion_fitness": 2417.6,
            "candidates": {"registered": 2, "gate_passed": 2, "gate_failed": 0, "promoted": 2},
            "live": live.id, "live_fitness": live.headline_fitness, "live_regime": live.regime,
            "last_known_good": lkg.id, "server_stopped": True, "serving": None, "robot_sim": robot,
            "robots": [{"client": "sim-robot", "regime": "nominal", "champion": "cartpole-factory-1c76b537"}],
            "files": {"home": "runs/state/daemon"}}


def test_the_daemon_summary_lines_match_the_registry_and_the_robots_record(registry: Registry,
                                                                          cartpole_model: bytes) -> None:
    two_went_live(registry, cartpole_model)
    robot = faulted_robot().summary()
    summary = daemon_summary(registry, robot)
    buffer = io.StringIO()
    wide = Console(file=buffer, width=400)
    saved, console.out = console.out, wide
    try:
        run_command._print_daemon_summary(summary)
    finally:
        console.out = saved
    text = " ".join(re.sub(r"[│┃┌┐└┘─┬┴]", " ", buffer.getvalue()).split())
    live = registry.live("cartpole")
    fitness = console.fmt(live.headline_fitness)
    assert f"live (registry) {live.id}: evolved in regime {live.regime or '?'}, fitness {fitness}" in text
    assert "evolution's best fitness 2417.6 in the shadow simulator" in text
    assert "robot sim-robot in regime nominal, served cartpole-factory-1c76b537 at the end" in text
    for row in robot["by_regime"]:
        if "→" in row["regime"]:
            expected = (f"episodes cut by the change {row['regime']}: served by {row['champion']} {row['episodes']} "
                        "episode")
        else:
            expected = (f"in {row['regime']}: served by {row['champion']} {row['steps']:,} steps, {row['episodes']} "
                        f"episode{'s' if row['episodes'] != 1 else ''} ended, mean return {row['mean_return']:.1f}")
        assert expected in text, (expected, text)
    assert "mean return 64.5" not in text  # the mean across the fault


def test_the_champions_list_fitness_is_the_registrys(registry: Registry, cartpole_model: bytes) -> None:
    two_went_live(registry, cartpole_model)
    with registry._tx() as db:  # a factory champion carries its standard return, not a shadow fitness
        db.execute("UPDATE champions SET fitness = ? WHERE id = ?",
                   (json.dumps({"standard_return": 487.25}), "cartpole-factory-1c76b537"))
    table = ctl("champions", "--state-dir", registry.state_dir, width=200).output
    row = next(line for line in table.splitlines() if "cartpole-factory-1c76b537" in line)
    assert "487.2" in row and registry.get("cartpole-factory-1c76b537").headline_fitness == 487.25


def test_status_without_a_server_lists_the_registrys_live_champions(registry: Registry, cartpole_model: bytes) -> None:
    two_went_live(registry, cartpole_model)
    done = ctl("status", "--state-dir", registry.state_dir)
    assert done.exit_code == 0
    assert f"cartpole: live {registry.live('cartpole').id}" in done.output


# -- tables never cut an id ------------------------------------------------------------------------------------------


def many_events(registry: Registry, model: bytes, n: int = 6) -> list[str]:
    ids = [f"cartpole-s{i}-1c76b5-i{1000 + i}" for i in range(n)]
    for i, cid in enumerate(ids):
        registry.register(champion_id=cid, robot="cartpole", model=variant(model, cid), params=[0.0],
                          policy={"obs_dim": 4, "act_dim": 2, "hidden": [32], "discrete": True},
                          parents=(ids[i - 1],) if i else (), fitness={"fitness": 100.0 + i}, regime="nominal")
        registry.store_report(cid, passing_report(cid, "cartpole", ids[i - 1] if i else None))
        registry.promote(cid, "tester", reason="a reason long enough to have wrapped at seven characters before")
    return ids


@pytest.mark.parametrize("width", [80, 120])
def test_no_listing_cuts_an_id(registry: Registry, cartpole_model: bytes, width: int) -> None:
    ids = many_events(registry, cartpole_model)
    for args in (["champions"], ["champions", "--status", "retired"], ["history"], ["show", ids[-1]]):
        done = ctl(*args, "--state-dir", registry.state_dir, width=width)
        assert done.exit_code == 0, done.output
        assert max(len(line) for line in done.output.splitlines()) <= width, done.output
        words = set(re.findall(r"[\w.-]+", done.output))
        mentioned = [cid for cid in ids if cid[:14] in done.output]
        assert mentioned and all(cid in words for cid in mentioned), done.output


def test_history_is_one_line_an_event_at_a_wide_terminal_and_compact_at_80(registry: Registry,
                                                                          cartpole_model: bytes) -> None:
    many_events(registry, cartpole_model, 5)  # 15 events
    events = registry.history()
    wide = lines(ctl("history", "--state-dir", registry.state_dir, width=250).output)
    assert len(wide) == len(events) + 1
    narrow = lines(ctl("history", "--state-dir", registry.state_dir, width=80).output)
    assert len(narrow) <= 3 * len(events) + 1


@pytest.mark.parametrize("command", [["champions"], ["history"], ["keys", "list"], ["profiles"], ["status"],
                                     ["lineage", "cartpole-s0-1c76b5-i1000"], ["show", "cartpole-s0-1c76b5-i1000"]])
def test_every_listing_has_json(registry: Registry, cartpole_model: bytes, command: list[str]) -> None:
    many_events(registry, cartpole_model, 2)
    state = [] if command == ["profiles"] else ["--state-dir", registry.state_dir]
    done = ctl(*command, "--json", *state)
    assert done.exit_code == 0, done.output
    json.loads(done.stdout)


# -- bad input: one line, exit 2, before any process starts --------------------------------------------------------

def test_an_unwritable_state_dir_or_out_is_one_line(tmp_path: Path) -> None:
    refused(real_ctl("run", "--generations", "1", "--state-dir", "/proc/x"), "state directory /proc/x: /proc is not")
    refused(real_ctl("evolve", "--generations", "1", "--out", "/proc/x", "--no-register"),
            "--out /proc/x: /proc is not")


def test_a_corrupted_registry_is_refused_before_the_daemon_starts_anything(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "registry.db").write_bytes(b"not a database" * 512)
    done = real_ctl("run", "--generations", "1", "--sim-robot", "--state-dir", state)
    refused(done, "is not a readable SQLite registry")
    assert sorted(p.name for p in state.iterdir()) == ["registry.db"]  # no run files, logs, sockets, daemon dir


def test_an_unknown_champion_is_told_before_the_simulator_is_imported(live_nominal: Path) -> None:
    started = time.monotonic()
    done = real_ctl("gate", "cartpole-nosuch", "--state-dir", live_nominal)
    refused(done, "no champion with id 'cartpole-nosuch'")
    assert time.monotonic() - started < 30  # was 5-16 s; the import of torch is what the HEAVY check rules out
    refused(real_ctl("gate", "cartpole-factory", "--regime", "sideways", "--state-dir", live_nominal),
            "--regime 'sideways' is not a regime of cartpole")


def test_keys_list_without_keys_is_an_empty_list(tmp_path: Path) -> None:
    done = ctl("keys", "list", "--state-dir", tmp_path / "state")
    assert done.exit_code == 0 and "no authorized keys" in done.output
    assert json.loads(ctl("keys", "list", "--json", "--state-dir", tmp_path / "state").stdout) == []


def test_a_missing_profile_path_is_named_as_such(tmp_path: Path) -> None:
    done = real_ctl("run", "--robot", tmp_path / "missing.toml", "--state-dir", tmp_path / "s")
    refused(done, f"profile file {tmp_path / 'missing.toml'} does not exist")
    assert "or give the path of a .toml profile" not in done.stderr


def test_an_unknown_fault_never_points_at_an_option_run_lacks(tmp_path: Path) -> None:
    done = real_ctl("run", "--sim-robot", "--fault", "nosuchfault", "--fault-at", "10", "--state-dir", tmp_path / "s")
    refused(done, "--fault 'nosuchfault' is not a regime of cartpole")
    assert "--fault-def" not in done.stderr
    # the simulated robot has one command line, with --fault-def, both ways: so both say so, in the same words
    robot_sim = real_ctl("robot-sim", "--fault", "nosuchfault", "--fault-at", "10", "--state-dir", tmp_path / "s")
    refused(robot_sim, "--fault 'nosuchfault' is not a regime of cartpole")
    module = subprocess.run([sys.executable, "-m", "srghn.deploy.clients.robot_sim", "--control", "ipc:///nonexistent",
                             "--fault", "nosuchfault", "--fault-at", "10"], capture_output=True, text=True, timeout=60)
    assert module.returncode == 2 and "(or define it with --fault-def)" in module.stderr
    assert module.stderr.strip() and module.stderr.strip() in robot_sim.stderr


def test_a_second_pause_is_refused_as_changing_nothing() -> None:
    from srghn.deploy.server.admin import Admin

    status = {"evolution": {"paused": False}}
    passed, replies = [], []
    admin = Admin.__new__(Admin)
    admin.status, admin.to_daemon, admin.publish = (lambda: status), (lambda c: passed.append(c.cmd) or True), \
        (lambda *a: None)
    admin.asked_paused = None
    from srghn.deploy.wire.messages import Command

    for _ in range(2):
        admin.pass_on(Command("pause", "tester", None), 1, replies.append)
    assert passed == ["pause"] and replies[0]["accepted"] == "pause" and replies[1]["unchanged"]
    assert "already paused" in replies[1]["note"]
    status["evolution"]["paused"] = True  # the daemon applied it
    admin.pass_on(Command("pause", "tester", None), 1, replies.append)
    admin.pass_on(Command("resume", "tester", None), 1, replies.append)
    assert passed == ["pause", "resume"] and replies[2]["unchanged"] and replies[3]["accepted"] == "resume"


def test_the_cli_says_a_second_pause_in_one_line_with_exit_2(monkeypatch) -> None:
    from srghn.deploy.clients import operator

    monkeypatch.setattr(operator.Operator, "command", lambda self, cmd, **f: {
        "accepted": None, "unchanged": True, "regime": None, "note": "evolution is already paused; nothing changed"})
    done = ctl("pause")
    assert done.exit_code == 2 and lines(done.output) == [
        "error: pause: evolution is already paused; nothing changed; `srghn-ctl resume` resumes it"]


# -- noise -----------------------------------------------------------------------------------------------------------


def test_a_robot_with_few_episodes_still_draws_a_reward_curve(tmp_path: Path) -> None:
    from srghn.deploy.clients import robot_sim
    from srghn.sim.plots import plot_robot

    run = RobotRun()
    for step in range(1, 3601):  # an Ant at 20 steps a second for 180 s: 3 episodes, 72 windows
        run.steps = step
        run.add_reward(1.0 if step < 1800 else -1.0, "ant-i1" if step < 2000 else "ant-i2")
    rewards = run.summary()["rewards"]
    assert rewards["window"] == robot_sim.REWARD_WINDOW and len(rewards["ended_at"]) == 3600 // robot_sim.REWARD_WINDOW
    assert rewards["mean_reward"][0] == 1.0 and rewards["mean_reward"][-1] == -1.0
    assert rewards["served_by"][0] == "ant-i1" and rewards["served_by"][-1] == "ant-i2"
    path = plot_robot([900.0, 800.0, -50.0], [1000, 2000, 3000], ["ant-i1", "ant-i1", "ant-i2"], tmp_path / "r.png",
                      fault_at=1800, rewards=rewards)
    assert path.stat().st_size > 10_000


def test_the_reward_curve_stays_bounded_on_a_long_run() -> None:
    from srghn.deploy.clients import robot_sim

    run = RobotRun()
    for step in range(1, robot_sim.REWARD_WINDOW * robot_sim.MAX_WINDOWS * 2 + 1):
        run.steps = step
        run.add_reward(0.5, "a")
    assert len(run.rewards) < robot_sim.MAX_WINDOWS and run.window > robot_sim.REWARD_WINDOW
    assert all(r[1] == 0.5 for r in run.rewards)


def test_a_halfcheetah_profile_makes_no_settotalmass_noise(tmp_path: Path) -> None:
    code = ("from srghn.sim.profiles import load_profile\nfrom srghn.sim.evaluator import make_env\n"
            "p = load_profile('docs/examples/halfcheetah.toml')\n"
            "for _ in range(3):\n    env = make_env(p); env.reset(seed=0); env.set_regime('payload'); env.close()\n")
    import srghn

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(srghn.__file__).parent)
    assert done.returncode == 0, done.stderr
    assert "settotalmass" not in done.stdout + done.stderr


def test_event_lines_are_never_wrapped_in_a_log() -> None:
    buffer = io.StringIO()
    saved, console.err = console.err, Console(file=buffer, width=40, soft_wrap=True)
    try:
        print_event = RunEvents()
        print_event("drift", {"client": "a-robot-with-a-long-name-0123456789", "from": "nominal",
                                   "to": "weak_back_leg", "switched": True})
        print_event("gate", {"champion": "halfcheetah-s0-1c76b5-i1234", "fitness": 12.5, "regime": "nominal",
                                  "passed": False, "failed_hard": ["floor[nominal]"], "failed_soft": []})
    finally:
        console.err = saved
    assert len(buffer.getvalue().splitlines()) == 2, buffer.getvalue()


def test_factory_show_names_a_profile_file_that_is_not_shipped() -> None:
    from srghn.sim.profiles import PROFILE_DIR

    shown = ctl("factory", "show", "ant", width=400).output
    command = next(line for line in shown.splitlines() if "command" in line)
    named = re.search(r"--robot (\S+)", command).group(1)
    if Path(named).is_file() or named == "ant":
        pytest.skip("the factory's command names a profile this machine has")
    assert "is not shipped" in shown and f"{named} was the builder's copy of ant's profile" in shown
    again = next(line for line in shown.splitlines() if "reproduce with" in line)
    assert "--robot ant " in again and "--update-clip-decay 0.99" in again and "--update-clip-min 0.003" in again
    assert (PROFILE_DIR / "ant.toml").is_file()
