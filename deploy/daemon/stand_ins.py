"""Stand-ins: what robots in a regime without a champion of its own are served until evolution makes one.

Two remedies, once per (regime, live champion) each (the claims are in :mod:`srghn.deploy.daemon.shared`): the
live champion is played against the safe action there, and where it loses the server is told to serve those robots
the safe action (:meth:`StandIns.check_safe`); where the regime reverses actuators or permutes actions, a champion
with its last layer undoing that (:mod:`srghn.sim.compensate`) is released for the regime through the release path
(:meth:`StandIns.compensate`). Both run on the adaptation thread the moment a robot is assigned (the first responder
of :mod:`srghn.deploy.daemon.regime_following`) and on the evolution loop between generations (:meth:`StandIns.sweep`,
for robots identified before); one at a time, so that two threads never export the same stand-in.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from srghn import SrghnError
from srghn.deploy.daemon.champions import champion_norm
from srghn.deploy.daemon.link import ServerLink
from srghn.deploy.daemon.publishing import Publisher
from srghn.deploy.daemon.regime_following import Uncovered
from srghn.deploy.daemon.release import Candidate, Release
from srghn.deploy.daemon.shared import SharedState
from srghn.deploy.registry.portfolio import portfolio
from srghn.deploy.registry.store import Champion, Registry
from srghn.deploy.wire import messages as m
from srghn.deploy.wire.topics import Topic
from srghn.safety.regime_trial import safe_margin
from srghn.sim.compensate import compensate

log = logging.getLogger("srghn.daemon")


class StandIns:
    def __init__(self, shared: SharedState, release: Release, publisher: Publisher, link: ServerLink) -> None:
        self.shared, self.release, self.publish, self.link = shared, release, publisher.publish, link
        self._one_at_a_time = threading.Lock()
        """Held while a stand-in is made or played (the work, not the state: that is :attr:`shared`'s)."""

    def respond(self, found: Uncovered, registry: Registry) -> None:
        """A robot was just assigned to a regime without a champion of its own (the first responder of
        :mod:`srghn.deploy.daemon.regime_following`): the live champion is played against the safe action there,
        then compensated for it, at once (the evolution loop would only get to it between two generations, which
        on Ant can take a minute)."""
        with self._one_at_a_time:
            if found.regime not in portfolio(registry, self.shared.profile.name):
                self._check_safe({found.regime}, registry)
                self._compensate({found.regime}, registry)

    def sweep(self, regimes: set[str], registry: Registry) -> None:
        """The robots' regimes, between two generations: compensation first for those without a champion, then the
        safe action's trial for those still without one."""
        name = self.shared.profile.name
        with self._one_at_a_time:
            chosen = portfolio(registry, name).keys()
            if self._compensate(regimes - chosen, registry):
                chosen = portfolio(registry, name).keys()
            self._check_safe(regimes - chosen, registry)

    def check_safe(self, uncovered: set[str], registry: Registry) -> None:
        with self._one_at_a_time:
            self._check_safe(uncovered, registry)

    def compensate(self, uncovered: set[str], registry: Registry) -> bool:
        with self._one_at_a_time:
            return self._compensate(uncovered, registry)

    def _compensate(self, uncovered: set[str], registry: Registry) -> bool:
        """Robots in a regime with no champion of its own, whose fault reverses actuators or permutes actions: a
        champion with its last layer undoing that is released for the regime (its parent: the champion it was made
        from), once per (regime, live champion). It is made from the live champion, or from another regime's
        stored champion where that one, compensated, does better in the regime on the gates' episodes (a fault
        that also weakens a leg is better met by the champion evolved for a weak leg). True when one passed: the
        portfolio now holds it, and the server is told to read it."""
        profile = self.shared.profile
        live = registry.live(profile.name) if uncovered else None
        passed = False
        for regime in sorted(uncovered):
            if live is None or regime not in profile.regimes or not self.shared.claim_compensation(regime, live.id):
                continue
            try:
                source, params, scores = self._choose(registry, live, regime)
                norm = champion_norm(source)
            except SrghnError as exc:
                self.release.fail(f"{live.id}-for-{regime}", exc, regime, stand_in=True)
                continue
            if params is None:
                continue
            key = f"{source.id}-for-{regime}"
            report = self.release.offer(Candidate(
                key, params, norm, regime,
                registration={"parents": (source.id,), "regime": regime,
                              "meta": {"source": "compensation", "compensates": source.id}},
                announce={"champion": key, "from": source.id, "regime": regime}, scores=scores), registry)
            passed = passed or (report is not None and report.passed)
        if passed:
            self.link.send(m.Sync())
        return passed

    def _choose(self, registry: Registry, live: Champion, regime: str) -> tuple[Champion, np.ndarray | None, dict]:
        """The champion to compensate for ``regime`` and its compensated parameters (None: the regime reverses and
        permutes nothing), with every candidate's fitness there (:meth:`Release.played`; empty: the live champion
        was the only candidate). Candidates: the live champion, then the champions stored for other regimes that
        were not themselves made by compensation; the first of the best is chosen (only it is exported, by its
        registration). A stored champion that cannot be loaded is left out, never the reason the live one is not
        compensated."""
        profile = self.shared.profile
        definition = profile.regime(regime)
        params = compensate(profile, registry.load_params(live.id), definition)
        others = sorted((c for c in portfolio(registry, profile.name).values()
                         if c.id != live.id and c.meta.get("source") != "compensation"), key=lambda c: c.id)
        if params is None or not others:
            return live, params, {}
        made, scores = {live.id: (live, params)}, {}
        for champion in others:
            try:
                made[champion.id] = (champion, compensate(profile, registry.load_params(champion.id), definition))
            except SrghnError as exc:
                log.warning("stored champion %s not tried for regime %s: %s", champion.id, regime, exc)
        for champion, candidate in made.values():
            try:
                norm = champion_norm(champion)
            except SrghnError as exc:
                log.warning("champion %s compensated for regime %s not scored: %s", champion.id, regime, exc)
                continue
            scores[champion.id] = round(self.release.played(f"{champion.id}-for-{regime}", regime,
                                                            lambda c=candidate, n=norm: (c, n)), 3)
        if not scores:
            return live, params, {}
        best = max(scores, key=scores.__getitem__)  # the live champion first: max keeps the first of equals
        return *made[best], scores

    def _check_safe(self, uncovered: set[str], registry: Registry) -> None:
        """Robots in a regime with no champion of its own are served the live champion, unless it does worse there
        than the safe action: played against it once per (regime, live champion) on the gates' fixed-seed
        episodes; where it loses, the server is told (``serve_safe``; the link says it again to a restarted one)."""
        profile = self.shared.profile
        gates = profile.gates
        live = registry.live(profile.name) if uncovered else None
        for regime in sorted(uncovered):
            if live is None or regime not in profile.regimes or not self.shared.claim_safe_trial(regime, live.id):
                continue
            try:
                mine, safe = safe_margin(profile, registry.load_model(live.id), regime, gates.episodes,
                                         gates.seed, gates.max_steps)
            except SrghnError as exc:  # an unloadable champion: it serves as before
                log.warning("live champion %s not played in regime %s: %s", live.id, regime, exc)
                continue
            if mine <= safe:
                self.publish(Topic.ADAPTATION, {"event": "below_safe", "champion": live.id, "regime": regime,
                                                "fitness": round(mine, 3), "safe_fitness": round(safe, 3)})
                self.link.send(m.ServeSafe(regime, live.id, f"fitness {mine:.1f} against the safe action's {safe:.1f}"))
