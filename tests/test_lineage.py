"""Lineage all the way back (issue 13): a run's ancestry is kept compactly, a registry keeps every registered
champion's chain, and `srghn-ctl lineage` walks a champion of a restarted daemon back to its first ancestor."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from champion_helpers import cartpole_controller

from srghn.deploy.daemon.champions import register_policy
from srghn.deploy.registry.store import SCHEMA_VERSION, Registry
from srghn.sim.ancestry import Ancestry
from srghn.sim.profiles import load_profile

CLI = [sys.executable, "-m", "srghn.cli"]


def test_ancestry_keeps_only_the_living_populations_lines() -> None:
    ancestry = Ancestry.from_initial({"ids": [0, 1, 2], "parent_ids": [-1, -1, -1]})
    ancestry.add([[3, 0], [4, 1]], generation=0)  # population now 0, 3, 4 (2 died out)
    ancestry.add([[5, 3], [6, 3]], generation=1)  # population now 5, 6, 4
    ancestry.add([[7, 5]], generation=2)  # population now 7, 6, 5
    ancestry.prune([7, 6, 5])
    assert sorted(ancestry.births) == [0, 3, 5, 6, 7]  # 1, 2 and 4 have no living descendant
    assert ancestry.chain(7) == [(7, 5, 2), (5, 3, 1), (3, 0, 0), (0, -1, None)]
    assert Ancestry.from_json(ancestry.to_json()).births == ancestry.births


def test_a_registry_walks_a_champion_back_through_its_run_to_the_champion_the_run_grew_from(tmp_path: Path) -> None:
    cartpole = load_profile("cartpole")
    with Registry.open(tmp_path, create=True) as registry:
        register_policy(registry, cartpole, cartpole_controller((0, 0, 1, 1)), champion_id="cartpole-factory-x")
        registry.record_run("run-a", "cartpole", "factory", "cartpole-factory-x")
        ancestry = Ancestry.from_initial({"ids": [0, 1], "parent_ids": [-1, 0]})
        ancestry.add([[2, 1]], 0)
        ancestry.add([[3, 2]], 1)
        register_policy(registry, cartpole, cartpole_controller((0, 0, 1, 1)), champion_id="run-a-i3",
                        parents=("run-a-i2",), meta={"run_tag": "run-a", "individual": 3})
        registry.record_ancestry("run-a", ancestry.chain(3))
        line = registry.line("run-a-i3")
        assert [e["id"] for e in line] == ["run-a-i3", "run-a-i2", "run-a-i1", "run-a-i0", "cartpole-factory-x"]
        assert [e["generation"] for e in line[1:4]] == [0, None, None]
        assert line[3]["root_of_run"] == {"run": "run-a", "origin": "factory"} and line[-1]["registered"]
        assert registry.lineage("run-a-i3")["first_ancestor"]["id"] == "cartpole-factory-x"


def test_a_version_1_registry_is_upgraded_and_keeps_its_champions(tmp_path: Path) -> None:
    cartpole = load_profile("cartpole")
    with Registry.open(tmp_path, create=True) as registry:
        register_policy(registry, cartpole, cartpole_controller((0, 0, 1, 1)), champion_id="old")
    db = sqlite3.connect(tmp_path / "registry.db")  # as a registry of schema version 1 was: no new tables
    for table in ("runs", "ancestry", "regimes", "other_reports"):
        db.execute(f"DROP TABLE {table}")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with Registry.open(tmp_path) as registry:  # read commands open without create: still upgraded
        assert registry.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert registry.get("old").status == "candidate" and registry.line("old")[0]["id"] == "old"
        assert registry.store_regime("cartpole", "identified-x", {"description": "d", "permutation": [1, 0]})
        assert registry.regimes("cartpole") == {"identified-x": {"description": "d", "permutation": [1, 0]}}


def test_a_version_2_registry_is_upgraded_with_the_other_reports_table(tmp_path: Path) -> None:
    cartpole = load_profile("cartpole")
    with Registry.open(tmp_path, create=True) as registry:
        register_policy(registry, cartpole, cartpole_controller((0, 0, 1, 1)), champion_id="old")
    db = sqlite3.connect(tmp_path / "registry.db")  # as a registry of schema version 2 was
    db.execute("DROP TABLE other_reports")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    with Registry.open(tmp_path) as registry:
        assert registry.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert registry.get("old").other_reports == {}


def run_daemon(state: Path, socks: Path, *args: str) -> dict:
    endpoints = [f"--{role}=ipc://{socks}/{role[0]}.sock" for role in ("control", "admin", "telemetry")]
    done = subprocess.run([*CLI, "run", "--robot", "cartpole", "--state-dir", str(state), "--json", *endpoints,
                           "--workers", "1", "--no-auto-promote", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_a_champion_registered_after_a_restart_is_walked_back_to_the_runs_first_individual(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with tempfile.TemporaryDirectory(prefix="sg") as socks:
        first = run_daemon(state, Path(socks), "--generations", "6", "--gate-every", "3", "--seed", "3",
                           "--init", "scratch")  # (the default starts from the factory: tests/test_factory.py)
        # Restarted in another regime: its candidates are held to that regime's champions, so one registers.
        second = run_daemon(state, Path(socks), "--generations", "6", "--gate-every", "3", "--regime", "inverted")
    assert first["generation"] == 6 and second["generation"] == 12 and second["candidates"]["registered"] >= 1
    with Registry.open(state) as registry:
        after = [c for c in registry.list("cartpole") if c.generation is not None and c.generation >= 6]
        assert after, [c.id for c in registry.list("cartpole")]
        champion = after[0]
    done = subprocess.run([*CLI, "lineage", champion.id, "--json", "--state-dir", str(state)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)["line"]
    generations = [e["generation"] for e in line]
    assert line[0]["id"] == champion.id and line[0]["regime"] == "inverted"
    # one ancestor per generation at most, back past the restart (generation 6) to the scratch start
    assert all(a > b for a, b in zip(generations[:-1], generations[1:-1], strict=False))
    assert any(g is not None and g < 6 for g in generations[1:])
    assert generations[-1] is None and line[-1]["root_of_run"]["origin"] == "scratch"
    text = subprocess.run([*CLI, "lineage", champion.id, "--state-dir", str(state)], capture_output=True, text=True,
                          timeout=120).stdout
    assert f"first ancestor: {line[-1]['id']}" in text
