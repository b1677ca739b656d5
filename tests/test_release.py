"""The daemon's release rule (issue 13): candidates are held to the best champion that passed in their own regime, both
played on whole episodes from the gates' seeds, a candidate that fails its gates never blocks later ones, and weak
champions of any regime fail a hard floor.

The daemon's real release path runs (its episodes on the gate seeds, export, registry file, gate suite in the
simulator); only the population is replaced by a fixed sequence of shadow champions, so the test says which
shadow fitness each candidate had -- which the rule must not look at."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
from champion_helpers import cartpole_controller

from srghn.deploy.daemon.champions import gate_champion, register_policy
from srghn.deploy.daemon.daemon import Daemon
from srghn.deploy.daemon.settings import DaemonSettings
from srghn.deploy.registry.store import PARAMS_SUFFIX, Registry
from srghn.sim.driver import ChampionPolicy
from srghn.sim.profiles import load_profile
from srghn.sim.records import GenerationRecord

CARTPOLE = load_profile("cartpole")
GOOD, WEAK = (0.0, 0.0, 1.0, 1.0), (0.0, 0.0, 1.0, 0.0)  # nominal: 500 vs about 42 steps on the gate seeds
MEDIOCRE = (0.7, 1.0, 1.0, 1.0)  # about 384 steps on the gate seeds
INVERTED_GOOD, INVERTED_WEAK = tuple(-g for g in GOOD), tuple(-g for g in WEAK)  # the same in the inverted regime


class ShadowChampions:
    """Stands in for the evolution driver: the champion the population holds now."""

    def __init__(self) -> None:
        self.current: ChampionPolicy | None = None

    def champion(self) -> ChampionPolicy:
        return self.current


def record(generation: int, regime: str, fitness: float) -> GenerationRecord:
    return GenerationRecord(generation=generation, regime=regime, best=fitness, mean=fitness / 2, median=fitness / 2,
                            best_return=fitness, champion_fitness=fitness, diversity=0.1, mutation_rate_mean=None,
                            mutation_rate_std=None, evaluations=20, env_steps=1000, total_env_steps=1000 * generation)


def composed(state: Path, profile=CARTPOLE, tag: str = "cartpole-s0-test") -> Daemon:
    """A daemon's collaborators on a real registry file, with no server (auto-promote is off)."""
    daemon = Daemon(DaemonSettings(profile, state, auto_promote=False))
    daemon.load(Registry.open(state, create=True))
    daemon.home.mkdir(parents=True, exist_ok=True)
    daemon.files.tag = tag
    daemon.compose(None)
    return daemon


@pytest.fixture
def daemon(tmp_path: Path):
    daemon = composed(tmp_path / "state")
    yield daemon
    daemon.registry.close()


def offer(daemon: Daemon, driver: ShadowChampions, individual: int, gains: tuple, fitness: float, generation: int,
          regime: str = "nominal") -> str:
    """The population's champion is now ``individual`` (a hand-made controller scored ``fitness`` in the shadow
    simulator); the daemon considers it for release. Returns its registry id."""
    driver.current = ChampionPolicy(cartpole_controller(gains), None, fitness, individual, -1)
    daemon.release.offer_evolved(driver.champion(), record(generation, regime, fitness))
    return f"{daemon.files.tag}-i{individual}"


def test_a_candidate_that_fails_its_gates_does_not_stall_later_releases(daemon: Daemon) -> None:
    driver = ShadowChampions()
    weak = offer(daemon, driver, 7, WEAK, 500.0, generation=5)  # a lucky shadow score; balances ~42 steps
    assert daemon.registry.get(weak).status == "failed"  # no bar yet: registered, then failed
    assert "floor[nominal]" in daemon.registry.get(weak).gate_report.failed_hard
    # The same individual is not registered again; a later, really good champion is.
    offer(daemon, driver, 7, WEAK, 500.0, generation=10)
    assert daemon.shared.counts()["registered"] == 1
    good = offer(daemon, driver, 12, GOOD, 480.0, generation=15)
    assert daemon.registry.exists(good) and daemon.registry.get(good).status == "passed"
    assert daemon.shared.counts() == {**daemon.shared.counts(), "registered": 2, "gate_passed": 1, "gate_failed": 1}


def test_candidates_are_held_to_the_best_champion_that_passed_in_their_own_regime(daemon: Daemon) -> None:
    driver = ShadowChampions()
    nominal = offer(daemon, driver, 3, MEDIOCRE, 480.0, generation=5)  # about 384 steps on the gate seeds
    assert daemon.registry.get(nominal).status == "passed"
    # No regression: a candidate that does no better on the gates' episodes is not even registered, whatever
    # its shadow score ...
    assert not daemon.registry.exists(offer(daemon, driver, 4, MEDIOCRE, 499.0, generation=10))
    # ... a better one is, though its shadow score is below the first one's ...
    better = offer(daemon, driver, 5, GOOD, 350.0, generation=15)
    assert daemon.registry.get(better).status == "passed"
    assert daemon.registry.get(better).fitness["release_fitness"] == 500.0
    # ... and the first candidate of another regime is compared with that regime's champions only.
    inverted = offer(daemon, driver, 6, INVERTED_GOOD, 300.0, generation=20, regime="inverted")
    assert daemon.registry.get(inverted).status == "passed"
    assert not daemon.registry.exists(offer(daemon, driver, 7, GOOD, 499.0, generation=25))  # 500 showed: the cap


def test_where_the_gates_cut_episodes_short_a_candidate_is_measured_as_the_champion_it_is_held_to(
        tmp_path: Path) -> None:
    """The shadow simulator plays whole episodes (500 steps here), the gates 100: every candidate's shadow fitness
    beats any gate score. Compared with each other, a champion worse than the live one was gated, and passed (the
    regression gate's tolerance), so the live champion could be replaced by a worse one step by step."""
    short = dataclasses.replace(CARTPOLE, gates=dataclasses.replace(CARTPOLE.gates, max_steps=100))
    daemon = composed(tmp_path / "state", short, "cartpole-s0-short")
    try:
        driver = ShadowChampions()
        good = offer(daemon, driver, 1, GOOD, 500.0, generation=5)
        assert daemon.registry.get(good).status == "passed"
        assert not daemon.registry.exists(offer(daemon, driver, 2, MEDIOCRE, 384.0, generation=10))
        assert not daemon.registry.exists(offer(daemon, driver, 3, WEAK, 480.0, generation=15))
        assert daemon.shared.counts()["registered"] == 1
    finally:
        daemon.registry.close()


def test_a_stored_champion_whose_files_no_longer_verify_sets_no_bar(daemon: Daemon) -> None:
    driver = ShadowChampions()
    first = offer(daemon, driver, 3, GOOD, 500.0, generation=5)
    path = daemon.registry.artifacts.path(daemon.registry.get(first).params_sha256, PARAMS_SUFFIX)
    path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 1]))
    daemon.shared.forget_scores()  # as after a restart: nothing played yet
    # The bar cannot be played: the next candidate is registered and gated, not given up as a failed release.
    nxt = offer(daemon, driver, 4, MEDIOCRE, 400.0, generation=10)
    assert daemon.registry.exists(nxt) and daemon.shared.counts()["release_failed"] == 0


def test_a_weak_champion_of_the_inverted_regime_fails_a_hard_floor(daemon: Daemon) -> None:
    registry = daemon.registry
    register_policy(registry, CARTPOLE, cartpole_controller(GOOD), champion_id="nominal-live", regime="nominal",
                    fitness={"fitness": 500.0})
    assert gate_champion(registry, "nominal-live", "tester", CARTPOLE).passed
    registry.promote("nominal-live", "tester", reason="first")
    driver = ShadowChampions()
    weak = offer(daemon, driver, 9, INVERTED_WEAK, 60.0, generation=5, regime="inverted")
    report = registry.get(weak).gate_report
    assert not report.passed and registry.get(weak).status == "failed"
    floor = next(g for g in report.gates if g.name == "floor[inverted]")
    assert floor.hard and floor.measured < floor.threshold == 100.0


def test_the_regime_incumbent_sets_a_floor_where_no_absolute_one_is_declared(tmp_path: Path) -> None:
    bare = dataclasses.replace(CARTPOLE, gates=dataclasses.replace(CARTPOLE.gates, floors=MappingProxyType({})))
    with Registry.open(tmp_path / "state", create=True) as registry:
        register_policy(registry, bare, cartpole_controller(INVERTED_GOOD), champion_id="inv-good", regime="inverted",
                        fitness={"fitness": 500.0})
        first = gate_champion(registry, "inv-good", "tester", bare)
        assert first.passed and not any(g.name.startswith("incumbent_floor") for g in first.gates)
        register_policy(registry, bare, cartpole_controller(INVERTED_WEAK), champion_id="inv-weak", regime="inverted",
                        fitness={"fitness": 60.0})
        report = gate_champion(registry, "inv-weak", "tester", bare)
        derived = next(g for g in report.gates if g.name == "incumbent_floor[inverted]")
        safe = next(g for g in report.gates if g.name == "above_safe[inverted]")
        assert safe.passed  # better than pushing one way: the old gates let it through
        assert derived.hard and not derived.passed and "inv-good" in derived.detail
        assert np.isclose(derived.threshold, safe.threshold + 0.5 * (500.0 - safe.threshold))
        assert "incumbent_floor[inverted]" in report.failed_hard
