"""The daemon's repertoire search: the elite the twin ranks best for a regime without a champion is registered in
that regime, gated there, and served only when it passes (real registry, ONNX export and gates; CartPole's shipped
repertoire, played in-process)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from srghn.deploy.daemon.repertoire_search import Answer, RepertoireSearch
from srghn.deploy.registry.store import Registry
from srghn.sim.profiles import load_profile
from srghn.sim.repertoire import load_repertoire
from srghn.sim.twin_search import SearchSettings, search_repertoire

SETTINGS = SearchSettings(short_steps=60, finalists=3, whole_episodes=1, backend="inprocess")


@pytest.fixture
def setting(tmp_path: Path):
    Registry.open(tmp_path / "state", create=True).close()
    profile = load_profile("cartpole")
    return profile, load_repertoire(profile), tmp_path / "state"


def search(repertoire, state: Path, on_passed=lambda answer: None) -> tuple[RepertoireSearch, list]:
    events: list = []
    return RepertoireSearch(repertoire, state, lambda topic, data: events.append((topic.value, data)), on_passed,
                            SETTINGS, actor="tester"), events


def test_the_elite_the_twin_ranks_best_is_registered_gated_and_served(setting) -> None:
    profile, repertoire, state = setting
    expected = repertoire.elite_id(search_repertoire(profile, repertoire, "nominal", settings=SETTINGS).best)
    served: list[Answer] = []
    done = threading.Event()
    searcher, events = search(repertoire, state, lambda answer: (served.append(answer), done.set()))
    try:
        assert searcher.offer(profile, "nominal")
        assert not searcher.offer(profile, "nominal"), "a regime is searched once"
        assert done.wait(300), events
    finally:
        searcher.close()
    assert [a.champion_id for a in served] == [f"{expected}-for-nominal"]
    with Registry.open(state) as registry:
        champion = registry.get(served[0].champion_id)
        assert champion.regime == "nominal" and champion.meta["source"] == "repertoire"
        assert champion.meta["elite"] == expected and champion.status == "passed"
    assert [e["event"] for topic, e in events if topic == "adaptation"] == ["repertoire_search", "repertoire"]


def test_an_elite_that_fails_its_gates_in_the_regime_is_not_served(setting) -> None:
    profile, repertoire, state = setting
    served: list[Answer] = []
    searcher, events = search(repertoire, state, served.append)
    searcher.close()  # the thread is not needed: answer() runs on the caller's
    answer = searcher.answer(profile, "inverted")  # nominal gaits push the cart the wrong way: none balances
    assert not answer.passed and not served
    assert events[-1][1]["event"] == "repertoire" and events[-1][1]["failed_hard"]
    with Registry.open(state) as registry:
        assert registry.get(answer.champion_id).status == "failed"
        assert registry.live("cartpole") is None


def test_a_regime_the_profile_lacks_is_reported_not_raised(setting) -> None:
    profile, repertoire, state = setting
    searcher, events = search(repertoire, state)
    assert searcher.offer(profile, "no-such-regime")
    searcher.close()
    assert events[-1][1]["event"] == "repertoire_failed" and "no-such-regime" in events[-1][1]["error"]
