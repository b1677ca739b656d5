"""The daemon's trial-and-error runner against a synthetic robot over CartPole's shipped repertoire: it serves the
gaits M-BOA chooses, counts only whole episodes under each, passes over gaits that fail their gates, and ends
serving the best gait it tried."""

from __future__ import annotations

import queue

import numpy as np

from srghn.deploy.daemon.robot_trials import RobotTrials
from srghn.sim.profiles import load_profile
from srghn.sim.repertoire import load_repertoire
from srghn.sim.trials import TrialAndError, TrialSettings

REPERTOIRE = load_repertoire(load_profile("cartpole"))


def truth(row: int) -> float:
    """After the damage: gaits that keep the cart on the left half of the track still balance, the rest fall."""
    return float(REPERTOIRE.returns[row]) * (1.0 if REPERTOIRE.measures[row, 0] < 0 else 0.05)


def run(failing: set[int]) -> tuple[RobotTrials, list[str], list[dict]]:
    served: queue.Queue[str] = queue.Queue()
    events: list[dict] = []

    def try_elite(row: int) -> str | None:
        if row in failing:
            return None
        served.put(f"elite-{row}")
        return f"elite-{row}"

    trials = RobotTrials(REPERTOIRE, "identified-x", try_elite, lambda topic, data: events.append(data),
                         TrialSettings(max_trials=10))
    order = []
    try:
        while not trials.finished.is_set():
            try:
                champion = served.get(timeout=0.1)
            except queue.Empty:  # the runner is thinking, or finished without serving again
                continue
            order.append(champion)
            if trials.finished.is_set():  # the best one served again at the end
                break
            row = int(champion.split("-")[1])
            trials.returns("someone-else", [1e6])  # another champion's episodes: no evidence on this gait
            trials.returns(champion, [0.0])  # the episode in flight at the switch: skipped
            trials.returns(champion, [truth(row)])
    finally:
        trials.close()
    return trials, order, events


def test_trials_follow_the_search_and_end_on_the_best_gait_tried() -> None:
    trials, order, events = run(failing=set())
    direct = TrialAndError.over(REPERTOIRE, TrialSettings(max_trials=10))
    while not direct.done:
        row = direct.next()
        direct.tell(row, truth(row))
    assert trials.search.tried == direct.tried and trials.search.observed == direct.observed
    assert 1 <= len(direct.tried) <= 10
    done = events[-1]
    assert done["event"] == "trials_done" and done["champion"] == f"elite-{direct.best}"
    assert truth(direct.best) == max(direct.observed)
    assert [e["event"] for e in events].count("trial") == len(direct.tried)


def test_a_gait_that_fails_its_gates_is_never_served() -> None:
    first = TrialAndError.over(REPERTOIRE).next()
    trials, order, events = run(failing={first})
    assert f"elite-{first}" not in order and first not in trials.search.tried
    assert events[-1]["event"] == "trials_done"
    assert np.isfinite(trials.search.observed).all()
