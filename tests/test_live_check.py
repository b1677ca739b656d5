"""The robot checks the twin's answer: a served gait whose robot returns fall far below the twin's promise is
refuted, the next gait of the twin's ranking that promises more than the robot has shown is served and checked the
same way, and when none is left the best the robot has shown serves again. Then the daemon's side: a refuted
champion leaves the portfolio and the release rule's bar (real registry, CartPole's repertoire and factory)."""

from __future__ import annotations

import queue

import pytest

from srghn.deploy.daemon.live_check import FAR_BELOW, SHORTFALL, Gait, LiveCheck
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


LOW = FAR_BELOW + 0.05  # of the promise: low, not far below


@pytest.mark.parametrize(("first", "second", "verdict"), [
    ((FAR_BELOW - 0.05) * 2200.0, None, "refuted"),  # far below: refuted on its first episode, no second awaited
    (LOW * 2200.0, (2 * (SHORTFALL + 0.025) - LOW) * 2200.0, "kept"),  # the mean of two decides
    (LOW * 2200.0, (2 * (SHORTFALL - 0.025) - LOW) * 2200.0, "refuted"),
])
def test_a_first_episode_far_below_the_promise_refutes_at_once(first, second, verdict) -> None:
    robot = Robot({})
    check = robot.check(before=None)
    check.watch("answer-for-x", robot.gait("answer", 2200.0))
    try:
        check.returns("answer-for-x", [0.0, first])  # the episode in flight at the switch, then the first judged
        if second is None:
            assert check.finished.wait(10)  # refuted, nothing else to serve: the check is done
        else:
            check.returns("answer-for-x", [second])
            assert check.finished.wait(10)
    finally:
        check.close()
    judged = [e for e in robot.events if e["event"] in ("kept", "refuted")]
    assert [e["event"] for e in judged] == [verdict]
    assert judged[0]["returns"] == [round(v, 3) for v in (first, second) if v is not None]


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


def test_a_champion_refuted_while_it_is_gated_for_adoption_is_not_made_live(tmp_path, monkeypatch) -> None:
    """The race seen in the Ant's stiff joints (seed 2): the evolution loop gated the regime's stored champion to
    make it live again, the robot's check refuted that champion during the gate, and the loop served it anyway, for
    minutes. The loop asks the portfolio again after the gate."""
    from srghn.deploy.daemon import regime_following
    from srghn.deploy.daemon.daemon import Daemon
    from srghn.deploy.daemon.repertoire_search import RepertoireSearch
    from srghn.deploy.daemon.settings import DaemonSettings
    from srghn.deploy.registry.store import Registry
    from tests.test_repertoire_search import CARTPOLE, REPERTOIRE, SETTINGS

    state, events, sent = tmp_path / "state", [], []
    daemon = Daemon(DaemonSettings(CARTPOLE, state), on_event=lambda topic, data: events.append((topic, data)))
    daemon.load(Registry.open(state, create=True))
    daemon.compose(None)
    search = RepertoireSearch(REPERTOIRE, state, daemon.shared, daemon.release, daemon.publish, sent.append, SETTINGS)
    try:
        gait = flipped_factory()
        assert daemon.release.offer(Candidate(gait.id, gait.params, gait.norm, "inverted",
                                              registration={"regime": "inverted"}), daemon.registry).passed
        assert search.answer("inverted")
        answer = f"{gait.id}-for-inverted"
        assert portfolio(daemon.registry, "cartpole")["inverted"].id == answer
        gate = regime_following.gate_champion

        def gate_while_refuted(registry, champion, *args, **kwargs):
            if champion == answer:  # the robot's check, on its own thread, during the gate
                search._refute(answer, "inverted", 120.0, 500.0)
            return gate(registry, champion, *args, **kwargs)

        monkeypatch.setattr(regime_following, "gate_champion", gate_while_refuted)
        assert daemon.following.adopt("inverted") is False  # not now: asked again, with the portfolio as it is
        assert daemon.registry.live("cartpole") is None
        assert not [d for t, d in events if d.get("event") in ("adopted", "adopt_failed")]
    finally:
        search.close()
        daemon.registry.close()


def test_a_gait_refused_because_another_went_live_meanwhile_is_gated_again_and_served(searcher) -> None:  # noqa: F811
    """The server refuses a gate report that compared the candidate with another champion than the live one. When
    another thread made a champion live between the check's gate and its promotion, the check's gait is gated again
    against that champion and served, instead of being passed over (stiff joints, seed 2)."""
    from server_helpers import gate_and_promote

    from srghn.sim.factory import load_factory

    search, daemon, events, sent = searcher
    factory = load_factory(search.shared.profile)
    first = Candidate("first-live", factory.params, factory.norm, "nominal", registration={"regime": "nominal"})
    assert daemon.release.offer(first, daemon.registry).passed
    gait = flipped_factory()
    candidate = Candidate(f"{gait.id}-for-inverted", gait.params, gait.norm, "inverted",
                          registration={"regime": "inverted"})
    asked: list[str | None] = []

    def serve(champion: str, regime: str, reason: str, live: str | None) -> bool:
        asked.append(daemon.registry.get(champion).gate_report.incumbent_id)
        if len(asked) == 1:  # the evolution loop makes another champion live meanwhile: the server refuses
            gate_and_promote(daemon.registry, "first-live")
            return False
        daemon.registry.promote(champion, reason)
        return True

    search.release.serve = serve
    assert search._serve(candidate, "inverted", "the twin's next gait") == candidate.id
    assert asked == [None, "first-live"]  # gated again, against the champion live now
    assert daemon.registry.live("cartpole").id == candidate.id
