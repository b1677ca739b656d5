"""The robot checks the twin's answer: a served gait whose robot returns fall far below the twin's promise is
refuted, the next gait of the twin's ranking that promises more than the robot has shown is served and checked the
same way, and when none is left the best the robot has shown serves again. Then the daemon's side: a refuted
champion leaves the portfolio and the release rule's bar (real registry, CartPole's repertoire and factory)."""

from __future__ import annotations

import queue

import pytest

from srghn.deploy.daemon.live_check import SHORTFALL, Gait, LiveCheck
from srghn.deploy.daemon.release import Candidate
from srghn.deploy.registry.portfolio import portfolio, refuted
from srghn.deploy.registry.release import passed_in_regime
from tests.test_repertoire_search import flipped_factory, searcher  # noqa: F401  (the fixture)


class Robot:
    """Serves what the check asks for and plays it: each gait returns what ``truth`` says."""

    def __init__(self, truth: dict[str, float]) -> None:
        self.truth, self.served, self.refuted, self.events = truth, queue.Queue(), [], []

    def gait(self, name: str, promised: float) -> Gait:
        def serve() -> str:
            self.served.put(f"{name}-served")
            return f"{name}-served"
        return Gait(name, promised, serve)

    def play(self, check: LiveCheck, champion: str, name: str) -> None:
        check.returns("another-gait", [1e6])  # returns of a champion the check does not judge
        check.returns(champion, [0.0])  # the episode in flight at the switch: not this gait's
        check.returns(champion, [self.truth[name]] * 2)

    def check(self, before: tuple[str, float] | None) -> LiveCheck:
        return LiveCheck("identified-x", lambda topic, data: self.events.append(data),
                         lambda champion, shown, promised: self.refuted.append((champion, shown, promised)),
                         (self.gait(before[0], 0.0), before[1]) if before else None)


def refuted_then_elite(elite_return: float, offered: dict[str, float]) -> Robot:
    """The twin's answer (promised 2200) returns 1150 on a robot that walked at 1650 before it; the gaits
    ``offered`` (name -> promise) wait their turn; the elite, promised 1950, returns ``elite_return``."""
    robot = Robot({"answer": 1150.0, "elite": elite_return})
    check = robot.check(before=("factory", 1650.0))
    check.watch("answer-for-x", robot.gait("answer", 2200.0))
    check.offer([robot.gait(name, promised) for name, promised in offered.items()])
    try:
        robot.play(check, "answer-for-x", "answer")
        assert robot.served.get(timeout=10) == "elite-served"  # 1950 > 1650 shown: the first worth trying
        robot.play(check, "elite-served", "elite")
        assert check.finished.wait(10)
    finally:
        check.close()
    return robot


def test_a_refuted_answer_gives_way_to_the_next_gait_that_promises_more() -> None:
    robot = refuted_then_elite(1900.0, {"low": 1500.0, "elite": 1950.0})  # "low" promises less than 1650 shown
    assert robot.refuted == [("answer-for-x", 1150.0, 2200.0)]
    assert [e["event"] for e in robot.events] == ["refuted", "checking", "kept"]
    assert robot.events[-1]["shown"] == 1900.0 >= SHORTFALL * 1950.0
    assert robot.served.empty()


def test_when_every_gait_left_promises_less_the_best_the_robot_showed_serves_again() -> None:
    robot = refuted_then_elite(1000.0, {"elite": 1950.0, "low": 1600.0})
    assert [r[0] for r in robot.refuted] == ["answer-for-x", "elite-served"]
    assert robot.served.get_nowait() == "factory-served"  # the gait the robot walked best with, served again
    done = robot.events[-1]
    assert done["event"] == "check_done" and done["champion"] == "factory-served"
    assert done["shown"] == {"factory": 1650.0, "answer-for-x": 1150.0, "elite-served": 1000.0}


def test_an_answer_that_keeps_its_promise_ends_the_check() -> None:
    robot = Robot({"answer": 0.85 * 2200.0})
    check = robot.check(before=None)
    check.watch("answer-for-x", robot.gait("answer", 2200.0))
    check.offer([robot.gait("elite", 3000.0)])
    try:
        robot.play(check, "answer-for-x", "answer")
        assert check.finished.wait(10)
    finally:
        check.close()
    assert not robot.refuted and robot.served.empty()
    assert [e["event"] for e in robot.events] == ["kept"]


def test_a_refuted_champion_leaves_the_portfolio_and_the_release_bar(searcher) -> None:  # noqa: F811
    search, daemon, events, sent = searcher
    gait = flipped_factory()
    stored = Candidate(gait.id, gait.params, gait.norm, "inverted", registration={"regime": "inverted"})
    assert daemon.release.offer(stored, daemon.registry).passed
    assert search.answer("inverted")
    answer = f"{gait.id}-for-inverted"
    assert search.checks["inverted"].promised == {answer: pytest.approx(500.0)}  # CartPole's whole episode
    assert portfolio(daemon.registry, "cartpole")["inverted"].id == answer
    search._refute(answer, "inverted", 120.0, 500.0)
    assert refuted(daemon.registry, "cartpole") == {answer}
    assert portfolio(daemon.registry, "cartpole")["inverted"].id == gait.id  # the next best of the regime
    assert answer not in [c.id for c in passed_in_regime(daemon.registry, "cartpole", "inverted")]
    champion = daemon.registry.get(answer)
    assert champion.status == "passed" and champion.gate_report.passed  # its own gate report is unchanged
    verdict = champion.other_reports["robot:inverted"]
    assert not verdict.passed and verdict.gates[0].name == "robot_returns[inverted]"
    assert verdict.gates[0].measured == 120.0 and verdict.gates[0].threshold == SHORTFALL * 500.0
    audit = daemon.registry.history("cartpole")[-1]
    assert audit.kind == "gate" and audit.actor == "adaptation" and audit.to_id == answer
