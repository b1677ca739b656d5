"""The repertoire answers a regime that has no champion: searched in the identified twin, or tried on the robot
where the twin cannot explain what the robot shows (docs/repertoire.md).

A responder of :mod:`srghn.deploy.daemon.regime_following`: offered every robot assigned to a regime without a
stored champion, it returns at once and works on a thread of its own (a search of the Ant's ~300 elites takes
about 40 k env steps; a trial lasts an episode on the robot), so neither the adaptation thread nor the evolution
loop waits for it.

- **The twin explained the damage**: the repertoire plays in the shadow simulator under the identified model
  (:func:`srghn.sim.twin_search.search_repertoire`: a short screen of every elite, whole episodes for the best
  few), and so do the champions the portfolio keeps for the robot's other regimes (its factory's among them).
  The best is released for the regime through the one release path
  (:meth:`~srghn.deploy.daemon.release.Release.offer`: registered as ``<elite or champion id>-for-<regime>``,
  meta ``source: repertoire``, gated there against the live champion); when it passes, the server is told to read
  the portfolio again (robots in that regime are served it at once) and the finalists whose GHNs the repertoire
  keeps join the evolving population (:meth:`~srghn.controller.evolution.SRGHNStrategy.immigrate`), so evolution
  goes on from the best the repertoire had.
- **It did not** (``explained: false``): :class:`~srghn.deploy.daemon.robot_trials.RobotTrials` chooses gaits by
  the robot's own returns; each trial is an elite released the same way and served by an audited ``adaptation``
  promotion (:meth:`~srghn.deploy.daemon.release.Release.serve`).

Each regime is answered once per daemon.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np

from srghn.controller.evolution import SRGHNStrategy
from srghn.deploy.daemon.champions import champion_norm
from srghn.deploy.daemon.live_check import SHORTFALL, Gait, LiveCheck
from srghn.deploy.daemon.regime_following import Uncovered
from srghn.deploy.daemon.release import Candidate, Release
from srghn.deploy.daemon.robot_trials import RobotTrials
from srghn.deploy.daemon.shared import SharedState
from srghn.deploy.registry.portfolio import ADAPTATION_ACTOR, ROBOT_GATE, ROBOT_KEY, portfolio
from srghn.deploy.registry.store import Registry
from srghn.deploy.wire import messages as m
from srghn.deploy.wire.topics import Topic
from srghn.errors import ConfigError, SrghnError
from srghn.safety.report import GateReport, GateResult
from srghn.sim.envs import NOMINAL
from srghn.sim.factory import factory_id, factory_path, load_factory, regime_factories
from srghn.sim.profiles import RobotProfile
from srghn.sim.repertoire import Repertoire
from srghn.sim.srghn_emitter import NO_GHN, elite_ghns
from srghn.sim.trials import TrialSettings
from srghn.sim.twin_search import SearchSettings, SearchStopped, StoredGait, play_stored, search_repertoire

log = logging.getLogger("srghn.daemon.repertoire")

HEARD_EPISODES = 50
"""Episode returns kept per regime offered, to know what served before its answer and how it did."""


class RepertoireSearch:
    """Answers regimes without a champion from the robot's repertoire, one regime at a time."""

    def __init__(self, repertoire: Repertoire, state_dir: Path, shared: SharedState, release: Release,
                 publish: Callable[[Topic, dict], None], send: Callable[[m.Message], None],
                 search: SearchSettings | None = None, trials: TrialSettings | None = None) -> None:
        self.repertoire, self.state_dir, self.shared, self.release = repertoire, Path(state_dir), shared, release
        self.publish, self.send = publish, send
        self.search, self.trial_settings = search or SearchSettings(), trials or TrialSettings()
        self.trials: dict[str, RobotTrials] = {}
        self.checks: dict[str, LiveCheck] = {}
        """Regime -> the robot's check of the twin's answers there (docs/repertoire.md)."""
        self._heard: dict[str, deque[tuple[str | None, float]]] = {}
        """Regime -> (champion, return) of its robots' episodes since it was offered: what served before an answer."""
        self._answered: set[str] = set()
        self._robots: dict[str, str] = {}
        """Robot -> the regime it was last offered in (routes its episode returns to that regime's trials)."""
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="repertoire-search", daemon=True)
        self._thread.start()

    # -- the responder -------------------------------------------------------------------------------------------

    def respond(self, found: Uncovered, registry: Registry) -> None:
        """Search the twin for ``found.regime``, or try gaits on the robot where the twin did not explain it --
        unless a responder before this one (a compensated champion) answered it already, or the regime is one the
        robot's factory answers (nominal, and a declared fault it ships a champion for: released at start-up)."""
        with self._lock:
            self._robots[found.robot] = found.regime  # also where it leaves for nominal: a search for where it was
        if _factory_answers(self.shared.profile, found.regime):  # stops before its repertoire stage (answer)
            return
        with self._lock:
            self._heard.setdefault(found.regime, deque(maxlen=HEARD_EPISODES))
            if found.regime in self._answered or found.regime in portfolio(registry, self.shared.profile.name):
                return
            self._answered.add(found.regime)
        if found.identification.explained:
            self._queue.put(found.regime)
            return
        self.publish(Topic.ADAPTATION, {"event": "trials_started", "regime": found.regime, "robot": found.robot,
                                        "residual": float(f"{found.identification.residual:.3g}")})
        with self._lock:
            self.trials[found.regime] = RobotTrials(self.repertoire, found.regime,
                                                    lambda row, r=found.regime: self.try_elite(row, r), self.publish,
                                                    self.trial_settings)

    def returns(self, message: m.Returns) -> None:
        """A robot's episode returns (the link's thread, as they arrive): its regime's trials and check hear them, if
        any run."""
        values = [float(v) for v in message.returns]
        with self._lock:
            regime = self._robots.get(message.client, "")
            trials, check = self.trials.get(regime), self.checks.get(regime)
            if regime in self._heard:
                self._heard[regime].extend((message.champion, v) for v in values)
        for listener in (trials, check):
            if listener is not None and not listener.finished.is_set():
                listener.returns(message.champion, values)

    def close(self, timeout_s: float = 30.0) -> None:
        self._closing.set()
        self._queue.put(None)
        self._thread.join(timeout_s)
        for listener in [*self.trials.values(), *self.checks.values()]:
            listener.close(timeout_s)

    # -- the twin's answer ---------------------------------------------------------------------------------------

    def wait(self) -> None:
        """Until every regime offered so far is answered (tests; the daemon never waits for a search)."""
        self._queue.join()

    def _work(self) -> None:
        while (regime := self._queue.get()) is not None:
            try:
                if not self._closing.is_set():
                    self.answer(regime)
            except SrghnError as exc:  # a failed search costs that regime its repertoire answer, never the daemon
                log.warning("repertoire search for regime %s failed: %s", regime, exc)
                self.publish(Topic.ADAPTATION, {"event": "repertoire_failed", "regime": regime, "error": str(exc)})
            except Exception:  # e.g. the link closed under a search that outlived shutdown's wait
                if not self._closing.is_set():
                    log.exception("repertoire search for regime %s failed", regime)
            finally:
                self._queue.task_done()

    def answer(self, regime: str) -> bool:
        """Search, release and (when it passed) serve the best gait for ``regime``, on the calling thread: the
        stored champions first (a few whole episodes, released at once when one passes), then the repertoire,
        whose best elite is released only where it beats them. Evolution waits meanwhile (:attr:`waiting`). The
        search stops between two of its stages once the daemon closes or every robot left the regime
        (:meth:`_left`)."""
        profile = self.shared.profile
        self.publish(Topic.ADAPTATION, {"event": "repertoire_search", "regime": regime,
                                        "elites": len(self.repertoire)})
        passed = False  # what a stop returns: whether a stored gait was released before it

        def stop() -> bool:
            return self._closing.is_set() or self._left(regime)

        try:
            with self.shared.answering():
                with Registry.open(self.state_dir) as registry:
                    stored = _stored_gaits(registry, profile)
                played = play_stored(profile, regime, list(stored.values()), self.search,
                                     should_stop=stop)[0] if stored else {}
                best = max(played, key=lambda k: played[k][0], default=None)  # the first by id of equals
                stored_gaits = {k: self._stored_gait(stored[k], regime, played) for k in played}
                passed = best is not None and self._release(
                    _stored_candidate(stored[best], regime, {"stored": _rounded(played)}, played[best]), regime,
                    {"event": "stored", "regime": regime, "stored": _rounded(played), "stored_best": best})
                if passed:
                    self._check(regime, f"{best}-for-{regime}", stored_gaits[best],
                                [g for k, g in stored_gaits.items() if k != best], played)
                found = search_repertoire(profile, self.repertoire, regime, settings=self.search, should_stop=stop)
        except SearchStopped:
            return passed
        if self._closing.is_set():  # the daemon stops: nothing is released any more
            return passed
        found = dataclasses.replace(found, stored=played)
        search = found.to_dict(self.repertoire)
        elites = {int(row): self._elite_gait(int(row), regime, search, fitness, returns) for row, fitness, returns
                  in zip(found.finalists, found.finalist_fitness, found.finalist_returns, strict=True)}
        if found.stored_best is None or not passed:  # the best elite beat the stored gaits, or none of them passed
            scores = {"fitness": found.fitness, "standard_return": found.returns}
            candidate = self._candidate(found.best, regime, "repertoire", search, scores)
            elite_passed = self._release(candidate, regime, {"event": "repertoire", "regime": regime, **search})
            if elite_passed:
                self._check(regime, candidate.id, elites[found.best], [], played)
            passed = elite_passed or passed
        else:
            self.publish(Topic.ADAPTATION, {"event": "repertoire", "regime": regime, "passed": passed,
                                            "released": False, **search})
        with self._lock:
            check = self.checks.get(regime)
        if check is not None:
            check.offer(list(elites.values()))
        ghns = self.repertoire.uids[found.finalists]
        if passed and (ghns != NO_GHN).any():
            self.shared.queue_immigrants(self.repertoire, ghns[ghns != NO_GHN])
        return passed

    def _left(self, regime: str) -> bool:
        """Whether every robot offered in ``regime`` has since been offered in another: a closer fit named their
        damage anew, or they were repaired. Then the search stops at its next stage (a stored gait, the screen, the
        whole episodes), and the regime they are in now is answered sooner (stiff joints: a first fit named one
        regime, a fit 12-30 s later with a joint the first window left free another, whose stages waited behind the
        first's: 14-44 s). A later offer in the regime searches it again, unless its stored stage answered it."""
        with self._lock:
            left = bool(self._robots) and regime not in self._robots.values()
            if left:
                self._answered.discard(regime)
        if left:
            self.publish(Topic.ADAPTATION, {"event": "repertoire_skipped", "regime": regime,
                                            "why": "no robot is in the regime any more"})
        return left

    def _release(self, candidate: Candidate, regime: str, event: dict) -> bool:
        """Gate ``candidate`` in ``regime`` through the release path; on passing, the server reads the portfolio
        again (robots in that regime are served it at once). Announced as ``event`` with ``passed``."""
        with Registry.open(self.state_dir) as registry:
            report = self.release.offer(candidate, registry)
        passed = report is not None and report.passed
        self.publish(Topic.ADAPTATION, {**event, "passed": passed, "released": True, "champion": candidate.id})
        if passed:
            self.send(m.Sync())
        return passed

    # -- the robot checks the answers -----------------------------------------------------------------------------

    def _check(self, regime: str, champion: str, gait: Gait, others: list[Gait],
               played: dict[str, tuple[float, float]]) -> None:
        """The robot checks ``champion``, the twin's answer for ``regime`` (:mod:`~srghn.deploy.daemon.live_check`),
        with ``others`` to try should it be refuted; the check starts with the first answer released."""
        with self._lock:
            check = self.checks.get(regime)
        if check is None or check.finished.is_set():  # a kept answer is what a later one falls back to
            check = LiveCheck(regime, self.publish,
                              lambda c, shown, promised: self._refute(c, regime, shown, promised),
                              self._before(regime, played))
            with self._lock:
                self.checks[regime] = check
        check.watch(champion, gait)
        check.offer(others)

    def _before(self, regime: str, played: dict[str, tuple[float, float]]) -> tuple[Gait, float] | None:
        """The gait the regime's robots were last served before its answer, and their mean return under it since
        the regime was offered (None: no episode ended meanwhile, or the safe action served)."""
        with self._lock:
            heard = list(self._heard.get(regime, ()))
        if not heard or heard[-1][0] is None:
            return None
        champion = heard[-1][0]
        values = [v for c, v in heard if c == champion]
        try:
            with Registry.open(self.state_dir) as registry:
                stored = registry.get(champion)
                gait = StoredGait(champion, registry.load_params(champion), champion_norm(stored))
        except SrghnError as exc:  # not a champion this registry keeps: nothing to go back to
            log.warning("the gait served before regime %s's answer is not checked: %s", regime, exc)
            return None
        return self._stored_gait(gait, regime, played), float(np.mean(values))

    def _refute(self, champion: str, regime: str, shown: float, promised: float) -> None:
        """Store the robot's verdict on ``champion`` (it leaves the portfolio), and roll back from it where it is
        live (the champion live before it serves; the next gait tried is gated against that one)."""
        gate = GateResult(ROBOT_GATE.format(regime), True, round(SHORTFALL * promised, 3), round(shown, 3), False,
                          f"the robot's mean return {shown:.1f} under it is below {SHORTFALL:.0%} of the "
                          f"{promised:.1f} the twin promised")
        robot = self.shared.profile.name
        report = GateReport(champion_id=champion, robot=robot, gates=(gate,),
                            config={"key": ROBOT_KEY.format(regime), "regimes": [regime]})
        with Registry.open(self.state_dir) as registry:
            registry.store_report(champion, report, ADAPTATION_ACTOR, own=False)
            live, stack = registry.live(robot), registry.live_stack(robot)
        if live is not None and live.id == champion and len(stack) >= 2:
            self.release.serve(stack[-2], regime, f"adaptation: the robot refuted {champion} in regime {regime} "
                               f"({shown:.1f} against {promised:.1f} promised)", champion)
        self.send(m.Sync())

    def _stored_gait(self, gait: StoredGait, regime: str, played: dict[str, tuple[float, float]]) -> Gait:
        scores = played.get(gait.id, (math.nan, math.nan))
        candidate = _stored_candidate(gait, regime, {"stored": _rounded(played)}, scores)
        return Gait(gait.id, scores[1], lambda: self._serve(candidate, regime, f"the twin's next gait, {gait.id}"))

    def _elite_gait(self, row: int, regime: str, search: dict, fitness: float, returns: float) -> Gait:
        scores = {"fitness": float(fitness), "standard_return": float(returns)}
        candidate = self._candidate(row, regime, "repertoire", search, scores)
        elite = self.repertoire.elite_id(row)
        return Gait(elite, float(returns), lambda: self._serve(candidate, regime, f"the twin's next gait, {elite}"))

    def _serve(self, candidate: Candidate, regime: str, why: str) -> str | None:
        """Release ``candidate`` for ``regime`` and make it live as an adaptation promotion (the robot's threads);
        its champion id, or None when it failed its gates or the server refused it. The server refuses a gate report
        that compared the candidate with another champion than the live one: where another thread made a champion
        live between the gate and the promotion, the candidate is gated again against it, once."""
        reason = f"adaptation: {why} in regime {regime}"
        for _ in range(2):
            with Registry.open(self.state_dir) as registry:
                report = self.release.offer(candidate, registry)
                live = registry.live(self.shared.profile.name)
            if report is None or not report.passed:
                return None
            if live is not None and live.id == candidate.id:
                return candidate.id
            if self.release.serve(candidate.id, regime, reason, live.id if live else None):
                return candidate.id
            with Registry.open(self.state_dir) as registry:
                now = registry.live(self.shared.profile.name)
            if (now.id if now else None) == (live.id if live else None):
                return None  # refused for another reason
        return None

    # -- trial and error -----------------------------------------------------------------------------------------

    def try_elite(self, row: int, regime: str) -> str | None:
        """Release elite ``row`` for ``regime`` and make it live as an adaptation promotion (the trials' thread);
        its champion id, or None when it failed its gates or the server refused it."""
        trial = {"elite": self.repertoire.elite_id(row), "promised": float(self.repertoire.returns[row])}
        candidate = self._candidate(row, regime, "trial", trial, {"repertoire_return": trial["promised"]})
        return self._serve(candidate, regime, f"trial and error (the twin cannot explain it): gait {trial['elite']}")

    def _candidate(self, row: int, regime: str, source: str, details: dict, fitness: dict) -> Candidate:
        elite = self.repertoire.elite_id(row)
        champion = f"{elite}-for-{regime}"
        return Candidate(
            champion, np.asarray(self.repertoire.policies[row]), self.repertoire.norm, regime,
            registration={"regime": regime, "meta": {"source": source, "elite": elite, source: details},
                          "fitness": fitness},
            announce={"champion": champion, "regime": regime, "source": source, "elite": elite})


def _stored_gaits(registry: Registry, profile: RobotProfile) -> dict[str, StoredGait]:
    """The gaits the robot keeps, for the twin search: the champions its factory ships and those the portfolio serves
    its regimes with, not those the search or a compensation made from another (their gaits are in it already)."""
    out = _factory_gaits(profile)
    for champion in portfolio(registry, profile.name).values():
        if champion.id in out or champion.meta.get("source") in ("repertoire", "trial", "compensation"):
            continue
        try:
            out[champion.id] = StoredGait(champion.id, registry.load_params(champion.id), champion_norm(champion))
        except SrghnError as exc:  # an unloadable champion is left out, never the reason the search fails
            log.warning("stored champion %s not searched: %s", champion.id, exc)
    return out


def _factory_gaits(profile: RobotProfile) -> dict[str, StoredGait]:
    """The champions the robot's factory ships, read from their files (the release at start-up may still be gating
    them: it was, 115 s after a fault on a loaded machine); none for a profile of a user's own without a factory."""
    try:
        if not factory_path(profile).is_file():
            return {}
        shipped = {NOMINAL: load_factory(profile), **regime_factories(profile)}
    except SrghnError as exc:  # a damaged or missing factory file costs the search those gaits, not its answer
        log.warning("factory champions not searched: %s", exc)
        return {}
    ids = {regime: factory_id(profile, regime) for regime in shipped}
    return {ids[regime]: StoredGait(ids[regime], policy.params, policy.norm) for regime, policy in shipped.items()}


def _stored_candidate(gait: StoredGait, regime: str, search: dict, scores: tuple[float, float]) -> Candidate:
    champion = f"{gait.id}-for-{regime}"
    return Candidate(
        champion, np.asarray(gait.params), gait.norm, regime,
        registration={"parents": (gait.id,), "regime": regime,
                      "fitness": {k: v for k, v in zip(("fitness", "standard_return"), scores, strict=True)
                                  if math.isfinite(v)},
                      "meta": {"source": "repertoire", "stored": gait.id, "repertoire": search}},
        announce={"champion": champion, "regime": regime, "source": "repertoire", "from": gait.id})


def _rounded(played: dict[str, tuple[float, float]]) -> dict[str, float]:
    return {k: round(f, 3) for k, (f, _) in played.items()}


def _factory_answers(profile: RobotProfile, regime: str) -> bool:
    """Nominal, or a declared fault the robot ships a factory champion for (the release at start-up serves it)."""
    if regime == NOMINAL:
        return True
    try:
        return regime in profile.regime_defs and factory_path(profile, regime).is_file()
    except ConfigError:  # a profile not loaded from a file ships no factory
        return False


def immigrate(strategy: object, repertoire: Repertoire, uids: np.ndarray) -> np.ndarray | None:
    """The GHNs of the elites ``uids`` (replayed from the repertoire's lineage) into an SR-GHN population, in
    place of its least fit; their new ids, or None where the population is not SR-GHN's or its GHN differs from the
    one the repertoire was built with."""
    if not isinstance(strategy, SRGHNStrategy) or repertoire.roots.shape[-1] != strategy.ghn.num_params:
        return None
    return strategy.immigrate(elite_ghns(strategy.ghn, repertoire.lineage, repertoire.roots, uids))


__all__ = ["RepertoireSearch", "immigrate"]
