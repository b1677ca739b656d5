"""The daemon's repertoire search: for a regime without a champion, the elite the twin ranks best is released there
through the daemon's one release path (registered, gated in that regime) and served only when it passes; its
finalists' GHNs are queued to join the population (real registry, ONNX export and gates; CartPole's shipped
repertoire, played in-process)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from srghn.deploy.daemon.daemon import Daemon
from srghn.deploy.daemon.regime_following import Uncovered
from srghn.deploy.daemon.release import Candidate
from srghn.deploy.daemon.repertoire_search import RepertoireSearch, immigrate
from srghn.deploy.daemon.settings import DaemonSettings
from srghn.deploy.registry.store import Registry
from srghn.deploy.wire import messages as m
from srghn.sim.compensate import compensate
from srghn.sim.factory import load_factory
from srghn.sim.identify import Identification
from srghn.sim.profiles import load_profile
from srghn.sim.repertoire import load_repertoire
from srghn.sim.twin_search import SearchSettings, SearchStopped, StoredGait, play_stored, search_repertoire

CARTPOLE = load_profile("cartpole")
REPERTOIRE = load_repertoire(CARTPOLE)
SETTINGS = SearchSettings(short_steps=60, finalists=3, whole_episodes=1, backend="inprocess")


@pytest.fixture
def searcher(tmp_path: Path):
    state = tmp_path / "state"
    events: list[tuple[str, dict]] = []
    daemon = Daemon(DaemonSettings(CARTPOLE, state, auto_promote=False),
                    on_event=lambda topic, data: events.append((topic, data)))
    daemon.load(Registry.open(state, create=True))
    daemon.compose(None)
    sent: list[m.Message] = []
    search = RepertoireSearch(REPERTOIRE, state, daemon.shared, daemon.release, daemon.publish, sent.append,
                              SETTINGS)
    yield search, daemon, events, sent
    search.close()
    daemon.registry.close()


def offer(regime: str, explained: bool = True) -> Uncovered:
    found = Identification(regime, True, CARTPOLE.regime(regime), {}, explained=explained)
    return Uncovered("robot-1", regime, found.definition, found)


def test_the_elite_the_twin_ranks_best_is_released_gated_and_served(searcher) -> None:
    search, daemon, events, sent = searcher
    found = search_repertoire(CARTPOLE, REPERTOIRE, "nominal", settings=SETTINGS)
    expected = f"{REPERTOIRE.elite_id(found.best)}-for-nominal"
    assert search.answer("nominal")
    champion = daemon.registry.get(expected)
    assert champion.regime == "nominal" and champion.meta["source"] == "repertoire"
    assert champion.status == "passed" and champion.gate_report.passed
    assert any(isinstance(message, m.Sync) for message in sent), "the server is told to read the portfolio"
    queued = daemon.shared.take_immigrants()
    uids = REPERTOIRE.uids[found.finalists]
    written = uids[uids >= 0]  # finalists a GHN wrote (the iso-line emitter's have none to join with)
    assert [list(u) for _, u in queued] == ([list(written)] if written.size else [])
    gates = [d for t, d in events if t == "gate" and d.get("champion") == expected]
    assert gates and gates[0]["source"] == "repertoire" and gates[0]["passed"]


def test_an_elite_that_fails_its_gates_in_the_regime_is_not_served(searcher) -> None:
    search, daemon, events, sent = searcher
    assert not search.answer("inverted")  # nominal gaits push the cart the wrong way: none balances
    assert not sent and not daemon.shared.take_immigrants()
    assert daemon.registry.live("cartpole") is None
    assert [d for t, d in events if t == "adaptation"][-1]["passed"] is False


def test_each_regime_is_answered_once(searcher) -> None:
    search, daemon, events, _ = searcher
    search.respond(offer("inverted"), daemon.registry)
    search.respond(offer("inverted"), daemon.registry)
    search.wait()
    searches = [d for t, d in events if t == "adaptation" and d["event"] == "repertoire_search"]
    assert len(searches) == 1


def test_a_regime_the_robots_left_stops_its_search(searcher, monkeypatch) -> None:
    """The robot moves on (here: repaired) as the stored gaits start to play in the regime it was in: the search
    stops there, before any of them is released, and the one search thread is free for the regime it is in now."""
    from srghn.deploy.daemon import repertoire_search

    search, daemon, events, _ = searcher
    play = repertoire_search.play_stored

    def play_while_the_robot_moves(*args, **kwargs):
        search.respond(offer("nominal"), daemon.registry)
        return play(*args, **kwargs)

    monkeypatch.setattr(repertoire_search, "play_stored", play_while_the_robot_moves)
    search.respond(offer("inverted"), daemon.registry)
    search.wait()
    stages = [d["event"] for t, d in events if t == "adaptation" and d["regime"] == "inverted"]
    assert stages == ["repertoire_search", "repertoire_skipped"]
    assert not [d for t, d in events if t == "gate"], "nothing was released for the regime it left"
    monkeypatch.undo()
    search.respond(offer("inverted"), daemon.registry)  # back in it: searched again, to the end
    search.wait()
    stages = [d["event"] for t, d in events if t == "adaptation" and d["regime"] == "inverted"]
    assert stages[2:] == ["repertoire_search", "stored", "repertoire"]


@pytest.mark.parametrize("stop_after", [1, 2])
def test_a_search_stops_before_its_next_stage(stop_after: int) -> None:
    """Asked before the screen, before the whole episodes and before the stored gaits: the stage after the one
    where the answer turned to stop is never played."""
    asked = 0

    def should_stop() -> bool:
        nonlocal asked
        asked += 1
        return asked > stop_after

    stored = [flipped_factory()]
    with pytest.raises(SearchStopped):
        search_repertoire(CARTPOLE, REPERTOIRE, "inverted", settings=SETTINGS, stored=stored,
                          should_stop=should_stop)
    assert asked == stop_after + 1
    with pytest.raises(SearchStopped):
        play_stored(CARTPOLE, "inverted", stored, SETTINGS, should_stop=lambda: True)
    full, _ = play_stored(CARTPOLE, "inverted", stored, SETTINGS, should_stop=lambda: False)
    assert list(full) == ["flipped-factory"]


def test_nominal_is_the_factorys_to_answer(searcher) -> None:
    search, daemon, events, _ = searcher
    search.respond(offer("nominal"), daemon.registry)  # a robot identified before the factory champion passed
    search.wait()
    assert not [d for t, d in events if t == "adaptation"] and not daemon.registry.list("cartpole")


def test_immigrants_are_the_elites_own_ghns() -> None:
    factory = load_factory(CARTPOLE)
    from srghn.controller.evolution import SRGHNStrategy

    strategy = SRGHNStrategy(factory.ghn, CARTPOLE.evolution, 0)
    uids = REPERTOIRE.uids[REPERTOIRE.uids >= 0][:2]
    ids = immigrate(strategy, REPERTOIRE, uids)
    rows = [int(np.flatnonzero(strategy.ids == i)[0]) for i in ids]
    elites = [int(np.flatnonzero(REPERTOIRE.uids == u)[0]) for u in uids]
    # The population's GHNs write their policies in one batch, the repertoire's were written in others: float32
    # kernels may round a batch differently on another CPU (AMD EPYC here: 4.8e-7 apart, 60 of 452 weights).
    np.testing.assert_allclose(strategy.population()[rows], REPERTOIRE.policies[elites], rtol=1e-5, atol=1e-6)


def flipped_factory() -> StoredGait:
    """CartPole's factory champion with its pushes swapped: it balances where the motor is wired backwards."""
    factory = load_factory(CARTPOLE)
    return StoredGait("flipped-factory", compensate(CARTPOLE, factory.params, CARTPOLE.regime("inverted")),
                      factory.norm)


def test_stored_gaits_play_side_by_side_as_each_alone() -> None:
    """The stored gaits, each with its own normalizer (or none), play in one pass and score to the bit what each
    played alone scores: the Ant's factory champions, a weak leg's and one without its normalizer."""
    import dataclasses

    from srghn.sim.evaluator import InProcessEvaluator
    from srghn.sim.factory import regime_factories

    ant = load_profile("ant")
    short = dataclasses.replace(ant, env_kwargs={**ant.env_kwargs, "max_episode_steps": 60})
    factories = {"nominal": load_factory(ant), **regime_factories(ant)}
    gaits = [StoredGait(name, f.params, f.norm) for name, f in sorted(factories.items())[:3]]
    gaits.append(StoredGait("no-normalizer", gaits[0].params, None))
    together, steps = play_stored(short, "weak_back_left", gaits, SearchSettings(whole_episodes=2))
    alone_steps = 0
    for gait in gaits:
        evaluator = InProcessEvaluator(short)
        alone = evaluator.evaluate(np.asarray(gait.params)[None], np.array([1, 2]), "weak_back_left", gait.norm)
        evaluator.close()
        alone_steps += alone.env_steps
        assert together[gait.id] == (float(alone.fitness[0]), float(alone.returns[0])), gait.id
    assert steps == alone_steps
    assert together["no-normalizer"] != together[gaits[0].id], "the normalizer changed what the policy did"


def test_a_stored_gait_that_beats_every_elite_is_the_answer() -> None:
    """Stored champions play the finalists' whole episodes; one that beats every elite answers, one that does not
    leaves the answer to the repertoire."""
    flipped, plain = flipped_factory(), load_factory(CARTPOLE)
    found = search_repertoire(CARTPOLE, REPERTOIRE, "inverted", settings=SETTINGS,
                              stored=[flipped, StoredGait("factory", plain.params, plain.norm)])
    assert found.stored_best == "flipped-factory"
    assert found.answer == found.stored["flipped-factory"] and found.answer[0] > found.fitness
    assert found.stored["factory"][0] <= found.fitness  # nominal's gait falls in inverted, like every elite
    alone = search_repertoire(CARTPOLE, REPERTOIRE, "inverted", settings=SETTINGS)
    assert alone.stored_best is None and alone.answer == (alone.fitness, alone.returns)
    assert alone.to_dict(REPERTOIRE)["finalists"] == found.to_dict(REPERTOIRE)["finalists"]


def test_the_daemon_searches_the_portfolios_champions_too(searcher) -> None:
    """A champion the portfolio keeps for another regime is played beside the repertoire; when it wins it is
    released for the regime as its own champion, its parent the stored one, gated there and served."""
    search, daemon, events, sent = searcher
    gait = flipped_factory()
    stored = Candidate(gait.id, gait.params, gait.norm, "inverted", registration={"regime": "inverted"})
    assert daemon.release.offer(stored, daemon.registry).passed
    assert search.answer("inverted")
    champion = daemon.registry.get(f"{gait.id}-for-inverted")
    assert champion.meta["source"] == "repertoire" and champion.meta["stored"] == gait.id
    assert list(champion.parents) == [gait.id] and champion.status == "passed"
    # the stored champions play first and the best is released at once; the repertoire's elites, searched after
    # it, do not beat it, so none of them is released
    stages = [d for t, d in events if t == "adaptation" and d["event"] in ("stored", "repertoire")]
    assert [(d["event"], d["released"]) for d in stages] == [("stored", True), ("repertoire", False)]
    assert stages[0]["passed"] and stages[0]["champion"] == champion.id and stages[0]["stored_best"] == gait.id
    assert stages[1]["stored_best"] == gait.id and stages[1]["stored"][gait.id] > stages[1]["fitness"]
    assert any(isinstance(message, m.Sync) for message in sent)
    assert not daemon.shared.waiting  # evolution waited for the search only while it ran
