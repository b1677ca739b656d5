"""Searching the repertoire in the identified twin: which stored gait walks best under the damage the twin found?

Every elite of the repertoire plays a short episode (``short_steps``, on one fixed seed) in the shadow simulator
with the damaged model; the ``finalists`` with the highest fitness there then play ``whole_episodes`` whole
episodes, and the best of those is the answer -- unless a stored gait does better: the champions the robot
already keeps (its factory's, those evolved for its other regimes) play the same whole episodes without a screen
(they are few). A champion evolved for a weak leg often walks on a dead or jammed one better than any gait of the
intact robot's repertoire (docs/repertoire.md). Nothing touches the robot: the daemon gates the answer in the
damaged regime and serves it through an audited ``adaptation`` promotion (docs/repertoire.md). The same inputs
give the same answer: seeds are fixed, and ties go to the lower row (the lower cell).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from srghn import ConfigError, SrghnError
from srghn.controller.normalizer import ObsNorm
from srghn.sim.backends import make_evaluator
from srghn.sim.envs import Regime
from srghn.sim.evaluator import InProcessEvaluator
from srghn.sim.profiles import RobotProfile
from srghn.sim.repertoire import Repertoire


class SearchStopped(SrghnError):  # noqa: N818 -- a stop asked for, not a failure
    """The caller's ``should_stop`` said so between two stages of a search: nothing was found."""


@dataclass(frozen=True)
class SearchSettings:
    """How hard the twin search looks."""

    short_steps: int = 100
    """Length of the screening episode every elite plays."""
    finalists: int = 5
    """Elites that go on to whole episodes."""
    whole_episodes: int = 2
    """Whole episodes of each finalist and stored gait (seeds ``seed + 1 ...``). Two can rank a gait that falls half
    the time first; the robot's check of the answer catches that on the robot (docs/repertoire.md), where five
    episodes made every answer wait twice as long (20-27 s against 10-12 s)."""
    seed: int = 0
    """The screening episode's seed; the whole episodes use ``seed + 1 ...``."""
    screen_part: int = 48
    """Elites screened per call to the workers, between two questions whether to stop: the Ant's 281 in one call took
    24 s beside a robot and the daemon, while the robots it screened for had left the regime 7 s in."""
    workers: int | None = None
    backend: str = "local"
    limits: object = None
    """The workers' limits (:data:`srghn.sim.workers.OFFLINE_LIMITS` for offline searches, where a starved worker
    must not time out and change the answer); None: the evaluator's defaults."""

    def __post_init__(self) -> None:
        if min(self.short_steps, self.finalists, self.whole_episodes, self.screen_part) < 1:
            raise ConfigError("twin search: short_steps, finalists, whole_episodes and screen_part must be >= 1")


@dataclass(frozen=True)
class StoredGait:
    """A policy the robot keeps outside its repertoire (a stored champion), offered to the search beside it."""

    id: str
    params: np.ndarray
    norm: ObsNorm | None


@dataclass(frozen=True)
class SearchResult:
    """What the search found, row numbers into the repertoire."""

    regime: str
    best: int
    """The row of the elite with the best whole-episode fitness under the damage."""
    fitness: float
    """Its mean whole-episode fitness there."""
    returns: float
    """Its mean whole-episode standard return there."""
    short_fitness: np.ndarray
    """``(n,)`` every elite's screening fitness."""
    finalists: np.ndarray
    """Rows of the finalists, best screening first."""
    finalist_fitness: np.ndarray
    """Their mean whole-episode fitness."""
    finalist_returns: np.ndarray
    """Their mean whole-episode standard return."""
    env_steps: int
    stored: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Each stored gait's mean whole-episode fitness and standard return, by id."""

    @property
    def stored_best(self) -> str | None:
        """The stored gait that beat every elite (the search's answer then), else None: an elite answers ties."""
        if not self.stored:
            return None
        best = max(self.stored, key=lambda k: self.stored[k][0])  # max keeps the first (by id) of equals
        return best if self.stored[best][0] > self.fitness else None

    @property
    def answer(self) -> tuple[float, float]:
        """The answer's mean whole-episode fitness and standard return."""
        return self.stored[self.stored_best] if self.stored_best else (self.fitness, self.returns)

    def to_dict(self, repertoire: Repertoire) -> dict:
        return {"regime": self.regime, "elite": repertoire.elite_id(self.best),
                "cell": int(repertoire.cells[self.best]),
                "fitness": round(self.fitness, 3), "return": round(self.returns, 3),
                "finalists": {repertoire.elite_id(int(r)): round(float(f), 3)
                              for r, f in zip(self.finalists, self.finalist_fitness, strict=True)},
                "stored": {k: round(f, 3) for k, (f, _) in self.stored.items()}, "stored_best": self.stored_best,
                "elites_screened": int(len(self.short_fitness)), "env_steps": self.env_steps}


def search_repertoire(profile: RobotProfile, repertoire: Repertoire, regime_name: str, regime: Regime | None = None,
                      settings: SearchSettings | None = None, stored: Sequence[StoredGait] = (),
                      should_stop: Callable[[], bool] | None = None) -> SearchResult:
    """Play the repertoire, and the ``stored`` gaits, under ``regime_name`` (a regime of the profile, or the
    identified ``regime``). ``should_stop`` is asked before each stage (each part of the screen, the whole episodes,
    the stored gaits): :class:`SearchStopped` when it says so."""
    settings = settings or SearchSettings()
    stop = _stopper(should_stop)
    if len(repertoire) == 0:
        raise ConfigError("the repertoire holds no elite")
    damaged = profile.with_regime(regime_name, regime) if regime is not None else profile
    damaged.regime(regime_name)  # UnknownRegime, naming the robot's regimes, before any worker starts
    short = dataclasses.replace(damaged, env_kwargs={**damaged.env_kwargs, "max_episode_steps": settings.short_steps})
    stop()
    evaluator = make_evaluator(short, settings.backend, settings.workers, limits=settings.limits)
    try:  # in parts, asking to stop between them: each elite's episode is its own, so the parts change no number
        parts = []
        for lo in range(0, len(repertoire), settings.screen_part):
            if lo:
                stop()
            parts.append(evaluator.evaluate(repertoire.policies[lo:lo + settings.screen_part],
                                            np.array([settings.seed]), regime_name, repertoire.norm))
    finally:
        evaluator.close()
    short_fitness = np.concatenate([part.fitness for part in parts])
    steps = sum(part.env_steps for part in parts)
    ranked = np.argsort(-np.nan_to_num(short_fitness, nan=-np.inf), kind="stable")
    finalists = ranked[:settings.finalists]
    stop()
    evaluator = make_evaluator(damaged, settings.backend, settings.workers, limits=settings.limits)
    try:
        whole = evaluator.evaluate(repertoire.policies[finalists], _whole_seeds(settings), regime_name, repertoire.norm)
    finally:
        evaluator.close()
    steps += whole.env_steps
    played, stored_steps = (play_stored(damaged, regime_name, stored, settings, should_stop=should_stop) if stored
                            else ({}, 0))
    k = int(np.argmax(np.nan_to_num(whole.fitness, nan=-np.inf)))  # argmax keeps the first of equal values
    return SearchResult(regime_name, int(finalists[k]), float(whole.fitness[k]), float(whole.returns[k]),
                        short_fitness, finalists, whole.fitness, whole.returns, steps + stored_steps, played)


def play_stored(profile: RobotProfile, regime_name: str, stored: Sequence[StoredGait],
                settings: SearchSettings | None = None, regime: Regime | None = None,
                should_stop: Callable[[], bool] | None = None) -> tuple[dict[str, tuple[float, float]], int]:
    """The stored gaits' mean whole-episode fitness and standard return under ``regime_name`` (on the finalists'
    seeds, in this process: a few gaits are not worth starting workers), and the env steps that took.
    ``should_stop`` is asked before they play (:class:`SearchStopped`)."""
    settings = settings or SearchSettings()
    stop = _stopper(should_stop)
    damaged = profile.with_regime(regime_name, regime) if regime is not None else profile
    damaged.regime(regime_name)
    gaits = sorted(stored, key=lambda g: g.id)
    stop()
    if not gaits:
        return {}, 0
    evaluator = InProcessEvaluator(damaged)
    try:  # side by side, each with its own normalizer, in one pass (seven Ant gaits: 3.2-3.4 s; alone 3.4-4.2)
        result = evaluator.evaluate_each(np.stack([np.asarray(g.params) for g in gaits]), _whole_seeds(settings),
                                         regime_name, [g.norm for g in gaits])
    finally:
        evaluator.close()
    played = {g.id: (float(np.nan_to_num(result.fitness[i], nan=-np.inf)), float(result.returns[i]))
              for i, g in enumerate(gaits)}
    return played, result.env_steps


def _stopper(should_stop: Callable[[], bool] | None) -> Callable[[], None]:
    def stop() -> None:
        if should_stop is not None and should_stop():
            raise SearchStopped
    return stop


def _whole_seeds(settings: SearchSettings) -> np.ndarray:
    return settings.seed + 1 + np.arange(settings.whole_episodes)


__all__ = ["SearchResult", "SearchSettings", "SearchStopped", "StoredGait", "play_stored", "search_repertoire"]
