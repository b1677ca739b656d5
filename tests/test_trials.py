"""Trial and error over a repertoire (ITE's M-BOA) on a synthetic map whose promised best gait is broken: the
Gaussian process must move away from the promise and find the gait that really walks, within its trial budget."""

from __future__ import annotations

import numpy as np
import pytest

from srghn import ConfigError
from srghn.sim.trials import TrialAndError, TrialSettings

GRID = np.stack(np.meshgrid(np.linspace(0, 1, 12), np.linspace(0, 1, 12), indexing="ij"), axis=-1).reshape(-1, 2)


def promised(x: np.ndarray) -> np.ndarray:
    """The map before damage: one smooth hill, best at (0.8, 0.8)."""
    return 1000.0 * np.exp(-np.sum((x - 0.8) ** 2, axis=1) / 0.2)


def damaged(x: np.ndarray) -> np.ndarray:
    """After the damage: the hill's top is broken (gaits near (0.8, 0.8) fail), gaits around (0.3, 0.5) work."""
    hole = 1.0 - 0.95 * np.exp(-np.sum((x - 0.8) ** 2, axis=1) / 0.08)
    return promised(x) * hole


def search(settings: TrialSettings) -> TrialAndError:
    truth = damaged(GRID)
    trials = TrialAndError(GRID, promised(GRID), settings)
    while not trials.done:
        row = trials.next()
        trials.tell(row, float(truth[row]))
    return trials


def test_trial_and_error_finds_the_best_gait_left_within_its_budget():
    truth = damaged(GRID)
    assert int(np.argmax(promised(GRID))) != int(np.argmax(truth))  # the promise is wrong after the damage
    exhaustive = search(TrialSettings(alpha=1.0, max_trials=10))
    assert exhaustive.best == int(np.argmax(truth)), exhaustive.to_dict()
    stopping = search(TrialSettings())  # stops at 90 % of what the process still expects
    assert len(stopping.tried) < 10 and max(stopping.observed) >= 0.9 * stopping.expected().max()
    assert truth[stopping.best] >= 0.5 * truth.max()
    assert truth[stopping.tried[0]] < 0.3 * truth.max()  # the first trial believed the broken promise
    print(stopping.to_dict())


def test_the_same_trials_give_the_same_choices():
    a, b = search(TrialSettings()), search(TrialSettings())
    assert a.tried == b.tried and a.observed == b.observed


def test_a_trial_corrects_the_promise_around_it_and_not_far_away():
    trials = TrialAndError(GRID, promised(GRID))
    row = int(np.argmax(promised(GRID)))
    trials.tell(row, 0.0)
    expected = trials.expected()
    assert expected[row] < 0.05 * promised(GRID)[row]
    far = int(np.argmin(np.sum((GRID - GRID[row]) ** 2, axis=1) * -1))  # the farthest gait
    near_change = promised(GRID)[row] - expected[row]
    assert abs(expected[far] - promised(GRID)[far]) < 0.05 * near_change


def test_a_gait_that_cannot_be_tried_is_passed_over():
    trials = TrialAndError(GRID, promised(GRID))
    first = trials.next()
    trials.exclude(first)
    second = trials.next()
    assert second != first and second == int(np.argsort(-promised(GRID), kind="stable")[1])
    trials.tell(second, float(promised(GRID)[second]))  # the second-best promise kept: 90 % of what is left
    assert trials.done
    for row in range(len(GRID)):
        trials.exclude(row)
    assert trials.next() is None and trials.done


@pytest.mark.parametrize(("args", "kwargs"), [((GRID, np.full(len(GRID), np.nan)), {}),
                                              ((GRID[:3], promised(GRID)), {})])
def test_bad_inputs_are_refused(args, kwargs):
    with pytest.raises(ConfigError):
        TrialAndError(*args, **kwargs)
    with pytest.raises(ConfigError):
        TrialSettings(alpha=0.0)
    trials = TrialAndError(GRID, promised(GRID))
    with pytest.raises(ConfigError):
        trials.tell(len(GRID), 1.0)
    with pytest.raises(ConfigError):
        trials.tell(0, float("inf"))
