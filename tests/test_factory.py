"""Factory populations: build from a run, export with the `export` contract, grow runs and daemons from them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from srghn import ConfigError
from srghn.cli import app
from srghn.controller.checkpoint import load_population
from srghn.controller.onnx_policy import OnnxPolicy
from srghn.deploy.registry.store import Registry
from srghn.safety.stress import record_observations
from srghn.sim.factory import factory_path, load_factory
from srghn.sim.profiles import PROFILE_DIR, load_profile
from srghn.sim.records import ancestry, read_records

CLI = [sys.executable, "-m", "srghn.cli"]


def ctl(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    """``srghn-ctl ARGS``: ``run`` (the daemon and its processes) as a process of its own, the other commands in this
    interpreter (each a fresh process would spend most of its time importing torch)."""
    words = [str(a) for a in args]
    if words[0] == "run":
        done = subprocess.run([*CLI, *words], capture_output=True, text=True, timeout=300)
    else:
        with mock.patch.object(sys, "argv", ["srghn-ctl", *words]):  # provenance records the command line
            result = CliRunner().invoke(app, words)
        done = subprocess.CompletedProcess(words, result.exit_code, result.stdout, result.stderr)
    if check:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def robot(tmp_path_factory) -> Path:
    """A CartPole profile of its own (it normalizes observations) with a factory built from a short run."""
    root = tmp_path_factory.mktemp("factory")
    profile = root / "pole.toml"
    profile.write_text((PROFILE_DIR / "cartpole.toml").read_text().replace('name = "cartpole"', 'name = "pole"'))
    assert load_profile(profile).observation.normalize
    ctl("evolve", "--robot", profile, "--generations", 4, "--population", 4, "--backend", "inprocess",
        "--no-register", "--out", root / "run")
    done = ctl("factory", "build", "--robot", profile, "--from", root / "run")
    assert "wrote" in done.stdout and factory_path(load_profile(profile)).is_file()
    return profile


def test_factory_export_acts_as_the_factory_champion(robot: Path, tmp_path: Path) -> None:
    profile = load_profile(robot)
    factory = load_factory(profile)
    assert factory.norm is not None and factory.ghn is not None
    np.testing.assert_array_equal(factory.ghn.generate(torch.from_numpy(factory.ghn_params)[None])[0].numpy(),
                                  factory.params)
    ctl("factory", "export", robot, "-o", tmp_path / "pole.onnx")
    policy = OnnxPolicy((tmp_path / "pole.onnx").read_bytes())
    assert policy.norm == factory.norm and policy.spec == profile.policy
    raw = record_observations(profile, factory.params, seed=4, episodes=4, max_steps=200, norm=factory.norm)
    expected = profile.policy.act(np.repeat(factory.params[None], len(raw), 0), factory.norm.apply(raw))
    np.testing.assert_array_equal(policy.act(raw), expected)  # raw observations in, the champion's actions out
    shown = json.loads(ctl("factory", "show", robot, "--json").stdout)
    assert shown["robot"] == "pole" and shown["generations"] == 4 and shown["env_steps"] > 0
    assert shown["standard_return"]["seeds"] == [0, 1, 2, 3, 4] and shown["command"].startswith("srghn-ctl evolve")
    assert "factory population of pole" in ctl("factory", "show", robot).stdout


def test_evolve_grows_its_population_from_the_factory_or_starts_from_scratch(robot: Path, tmp_path: Path) -> None:
    factory = load_factory(load_profile(robot))
    ctl("evolve", "--robot", robot, "--generations", 1, "--population", 5, "--backend", "inprocess",
        "--no-register", "--init", "factory", "--out", tmp_path / "grown")
    run = json.loads((tmp_path / "grown" / "run.json").read_text())
    assert run["initial"]["origin"]["kind"] == "factory"
    assert run["initial"]["parent_ids"] == [-1, 0, 0, 0, 0]  # the original, then its self-mutated children
    ctl("evolve", "--robot", robot, "--generations", 1, "--population", 5, "--backend", "inprocess",
        "--no-register", "--init", "scratch", "--seed", 1, "--out", tmp_path / "scratch")
    scratch = load_population(tmp_path / "scratch" / "population.npz").strategy
    grown = load_population(tmp_path / "grown" / "population.npz").strategy
    assert grown.ghn.basis_seed == factory.ghn.basis_seed and scratch.ghn.basis_seed != factory.ghn.basis_seed
    bad = ctl("evolve", "--robot", "cartpole", "--init", "nowhere", "--out", tmp_path / "x", check=False)
    assert bad.returncode == 2 and "--init 'nowhere'" in bad.stderr


def test_a_daemon_without_a_population_starts_from_the_factory(robot: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    # In the inverted regime: its evolved candidates are held to that regime's champions (none yet), not to the
    # factory champion released in the first place (the release rule, docs/daemon.md), so they are registered.
    done = ctl("run", "--robot", robot, "--generations", 4, "--gate-every", 2, "--population", 4, "--workers", 1,
               "--state-dir", state, "--regime", "inverted")
    assert "gate pole-factory-" in done.stderr  # the operator's log names the factory champion's gate
    home = state / "daemon" / "pole"
    run = json.loads((home / "run.json").read_text())
    assert run["initial"]["origin"]["kind"] == "factory"
    with Registry.open(state) as registry:
        candidates = registry.list("pole")
        events = registry.history("pole")
        factory = next(c for c in candidates if c.meta.get("source") == "factory")
    # the factory champion is registered and gated before anything is evolved, and goes live if it passes
    assert events[0].kind == "register" and events[0].to_id == factory.id and factory.id.startswith("pole-factory-")
    promotions = [e.to_id for e in events if e.kind == "promote"]
    assert factory.status in ("passed", "failed", "live", "retired")
    if factory.gate_report.passed:
        assert promotions[0] == factory.id
        assert f"promoted {factory.id}" in done.stderr
    evolved = [c for c in candidates if c.meta.get("source") != "factory"]
    assert evolved, "the daemon registered no evolved candidate"
    first = min(evolved, key=lambda c: c.created_at)
    line = ancestry(first.meta["individual"], read_records(home / "metrics.jsonl"))
    root = line[-1]
    assert root in run["initial"]["ids"]
    assert root == 0 or run["initial"]["parent_ids"][run["initial"]["ids"].index(root)] == 0  # the factory GHN
    with Registry.open(state) as registry:  # the registry walks the same line, on to the factory champion
        line = registry.line(first.id)
    assert [int(e["id"].rsplit("-i", 1)[1]) for e in line[:-1]] == line_ids(first.meta["individual"], home)
    assert line[-1]["id"] == factory.id and line[-2]["root_of_run"]["origin"] == "factory"


def line_ids(individual: int, home: Path) -> list[int]:
    """The individual and its ancestors back to the run's first population, from the run's records."""
    line = ancestry(individual, read_records(home / "metrics.jsonl"))
    return line if line[-1] == 0 else [*line, 0]  # a root grown from the factory GHN is that GHN's child


def test_a_robot_without_a_factory_says_how_to_build_one(tmp_path: Path) -> None:
    profile = tmp_path / "lone.toml"
    shutil.copy(PROFILE_DIR / "cartpole.toml", profile)
    with pytest.raises(ConfigError, match="factory build --robot"):
        load_factory(load_profile(profile))
    done = ctl("factory", "show", profile, check=False)
    assert done.returncode == 2 and "has no factory population" in done.stderr


def test_factory_build_ships_the_individual_with_the_best_multi_seed_return(tmp_path: Path) -> None:
    from srghn.controller.checkpoint import save_population
    from srghn.sim.factory import build_factory, standard_return

    profile_path = tmp_path / "lucky.toml"
    profile_path.write_text((PROFILE_DIR / "cartpole.toml").read_text().replace('name = "cartpole"', 'name = "lucky"'))
    profile = load_profile(profile_path)
    ctl("evolve", "--robot", profile_path, "--generations", 6, "--population", 6, "--backend", "inprocess",
        "--no-register", "--out", tmp_path / "run")
    population = load_population(tmp_path / "run" / "population.npz")
    strategy = population.strategy
    means = [standard_return(profile, strategy.policies[i], population.norm, range(10))["mean"] for i in range(6)]
    best, worst = int(np.argmax(means)), int(np.argmin(means))
    assert means[best] > means[worst]
    strategy.fitness[worst] = np.nanmax(strategy.fitness) + 100.0  # the worst gait had the luckiest last episode
    save_population(tmp_path / "run" / "population.npz", strategy, obs_stats=population.obs_stats,
                    norm=population.norm)
    provenance = build_factory(profile, tmp_path / "run")
    factory = load_factory(profile)
    np.testing.assert_array_equal(factory.params, strategy.policies[best])
    np.testing.assert_array_equal(factory.ghn_params, strategy.params[best].numpy())
    selection = provenance["selection"]
    assert selection["fittest_id"] == strategy.ids[worst] and selection["chosen_id"] == strategy.ids[best]
    assert provenance["champion"]["id"] == strategy.ids[best]
    assert selection["means"][int(strategy.ids[best])] == pytest.approx(means[best], abs=0.01)


def test_a_factory_grown_from_earlier_runs_records_every_stage(tmp_path: Path) -> None:
    profile = tmp_path / "chain.toml"
    profile.write_text((PROFILE_DIR / "cartpole.toml").read_text().replace('name = "cartpole"', 'name = "chain"'))

    def evolve(out: str, *extra: object) -> None:
        ctl("evolve", "--robot", profile, "--generations", 2, "--population", 4, "--backend", "inprocess",
            "--no-register", "--out", tmp_path / out, *extra)

    evolve("first")
    ctl("factory", "build", "--robot", profile, "--from", tmp_path / "first")
    evolve("grown", "--init", "factory")
    evolve("again", "--init", tmp_path / "grown", "--update-clip", 0.25,  # fine-tuned at a small, shrinking clip
           "--update-clip-decay", 0.9, "--update-clip-min", 0.1)
    grown = json.loads((tmp_path / "grown" / "run.json").read_text())  # as if evolved where the package lay elsewhere
    grown["initial"]["origin"]["path"] = str(tmp_path / "elsewhere" / "chain.factory.npz")
    (tmp_path / "grown" / "run.json").write_text(json.dumps(grown))
    ctl("factory", "build", "--robot", profile, "--from", tmp_path / "again")
    shown = json.loads(ctl("factory", "show", profile, "--json").stdout)
    # what grows from the factory adapts at the profile's clip, not at the one it was fine-tuned with
    assert load_factory(load_profile(profile)).ghn.config.update_clip == load_profile(profile).ghn.update_clip == 1.0
    assert shown["update_clip"] == {"pretraining": 0.25, "pretraining_decay": 0.9, "pretraining_min": 0.1,
                                    "shipped": 1.0}
    lineage = shown["lineage"]
    assert [Path(stage["source_run"]).name for stage in lineage] == ["first", "grown", "again"]
    assert "--init factory" in lineage[1]["command"] and f"--init {tmp_path / 'grown'}" in lineage[2]["command"]
    assert shown["total_env_steps"] == sum(stage["env_steps"] for stage in lineage) > shown["env_steps"]
    table = ctl("factory", "show", profile).stdout
    assert "stage 3" in table and "total env steps" in table

    evolve("bypath", "--init", factory_path(load_profile(profile)))  # the factory file named by its path
    ctl("factory", "build", "--robot", profile, "--from", tmp_path / "bypath")
    shown = json.loads(ctl("factory", "show", profile, "--json").stdout)
    assert [Path(stage["source_run"]).name for stage in shown["lineage"]] == ["first", "grown", "again", "bypath"]

    (tmp_path / "grown" / "population.npz").unlink()  # a source gone is said so, not guessed
    ctl("factory", "build", "--robot", profile, "--from", tmp_path / "again")
    shown = json.loads(ctl("factory", "show", profile, "--json").stdout)
    assert "gone or changed" in shown["lineage"][0]["untraced"] and shown["total_env_steps"] is None
    assert Path(shown["lineage"][1]["source_run"]).name == "again"
    assert "unknown: a stage is untraced" in ctl("factory", "show", profile).stdout


def test_a_factory_champion_for_a_fault_is_built_in_its_regime_and_kept_there_by_a_daemon(tmp_path: Path) -> None:
    from srghn.deploy.registry.portfolio import gate_score, portfolio
    from srghn.sim.factory import factory_id, standard_return

    path = tmp_path / "faulty.toml"
    path.write_text((PROFILE_DIR / "cartpole.toml").read_text().replace('name = "cartpole"', 'name = "faulty"'))
    profile = load_profile(path)
    state = tmp_path / "state"

    def evolve(out: str, *extra: object) -> None:
        ctl("evolve", "--robot", path, "--generations", 6, "--population", 6, "--backend", "inprocess",
            "--no-register", "--out", tmp_path / out, *extra)

    def run_daemon() -> None:
        ctl("run", "--robot", path, "--generations", 1, "--population", 4, "--workers", 1, "--state-dir", state)

    evolve("nominal")
    ctl("factory", "build", "--robot", path, "--from", tmp_path / "nominal")
    run_daemon()  # a robot in service before its factory shipped a champion for the fault
    evolve("inverted", "--init", "factory", "--switch-at", 0, "--switch-regime", "inverted")
    refused = ctl("factory", "build", "--robot", path, "--from", tmp_path / "inverted", check=False)
    assert refused.returncode == 2 and "ended in regime 'inverted', not 'nominal'" in refused.stderr
    unknown = ctl("factory", "build", "--robot", path, "--from", tmp_path / "inverted", "--regime", "upside",
                  check=False)
    assert unknown.returncode == 2 and "--regime must be one of" in unknown.stderr
    ctl("factory", "build", "--robot", path, "--from", tmp_path / "inverted", "--regime", "inverted")

    fault = load_factory(profile, "inverted")
    shown = json.loads(ctl("factory", "show", path, "--regime", "inverted", "--json").stdout)
    assert shown["regime"] == "inverted" and "--switch-regime inverted" in shown["command"]
    assert shown["standard_return"] == standard_return(profile, fault.params, fault.norm, regime="inverted")
    assert "champion for inverted" in ctl("factory", "show", path).stdout
    assert load_factory(profile).meta["factory"]["regime"] == "nominal"  # the nominal factory is untouched
    ctl("factory", "export", path, "--regime", "inverted", "-o", tmp_path / "inverted.onnx")
    raw = record_observations(profile, fault.params, seed=1, episodes=2, max_steps=100, norm=fault.norm)
    np.testing.assert_array_equal(OnnxPolicy((tmp_path / "inverted.onnx").read_bytes()).act(raw),
                                  profile.policy.act(np.repeat(fault.params[None], len(raw), 0), fault.norm.apply(raw)))

    run_daemon()  # its next start brings the new champion in; the nominal factory is not released again
    with Registry.open(state) as registry:
        champion = registry.get(factory_id(profile, "inverted"))
        chosen = portfolio(registry, "faulty")
        registered = [e.to_id for e in registry.history("faulty") if e.kind == "register"]
    assert registered.count(factory_id(profile)) == 1 and registered.count(champion.id) == 1
    # registered in its regime, gated there (not in the shadow regime the daemon started in), never made live
    assert champion.regime == "inverted" and champion.status == "passed"
    report = json.loads(champion.gate_report.to_json())
    assert gate_score(report, "inverted") is not None and gate_score(report, "nominal") is None
    assert champion.gate_report.passed, champion.gate_report.failed_hard + champion.gate_report.failed_soft
    assert chosen["inverted"].id == champion.id  # a robot identified as inverted is served it at once
