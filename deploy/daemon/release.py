"""Release: the one way a policy becomes a registered, gated and (maybe) live champion.

Three kinds of candidate take the same path, :meth:`Release.offer` (register unless stored -> gate -> count ->
publish -> promote with auto-promote): the evolution loop's champion (:meth:`Release.offer_evolved`, held to the
release rule of :mod:`srghn.deploy.registry.release` first), the factory champions (:meth:`Release.offer_factory`)
and the stand-ins made for a regime without a champion of its own (:mod:`srghn.deploy.daemon.stand_ins`, on either
thread, each on its own registry connection). Promotions (auto-promote) and adaptation promotions (a regime's stored
champion served again, audit actor ``adaptation``) go through the server here too, so a collaborator that finds a
champion -- the stand-ins, later the repertoire search -- serves it the way every other champion is served.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from srghn import SrghnError
from srghn.controller.checkpoint import PolicyFile
from srghn.controller.normalizer import ObsNorm
from srghn.deploy.daemon.champions import champion_norm, gate_champion, register_policy
from srghn.deploy.daemon.link import ServerLink
from srghn.deploy.daemon.publishing import Publisher
from srghn.deploy.daemon.run_files import RunFiles
from srghn.deploy.daemon.settings import DaemonSettings
from srghn.deploy.daemon.shared import SharedState
from srghn.deploy.registry.release import decide
from srghn.deploy.registry.store import Champion, Registry
from srghn.deploy.wire.topics import Topic
from srghn.safety.regime_trial import policy_fitness
from srghn.safety.report import GateReport
from srghn.sim.driver import ChampionPolicy
from srghn.sim.envs import NOMINAL
from srghn.sim.factory import factory_id, factory_path, load_factory, regime_factories
from srghn.sim.records import GenerationRecord

log = logging.getLogger("srghn.daemon")

PROMOTE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Candidate:
    """A policy offered for release."""

    id: str
    params: np.ndarray
    norm: ObsNorm | None
    regime: str
    """The regime it is gated in."""
    registration: dict = field(default_factory=dict)
    """:func:`~srghn.deploy.daemon.champions.register_policy` keywords (parents, regime, fitness, meta...)."""
    announce: dict = field(default_factory=dict)
    """What its gate event says before the verdict."""
    own: bool | None = None
    """Whether the gate is its release gate (None: :func:`~srghn.deploy.daemon.champions.is_own_gate`)."""
    lineage: list | None = None
    """Its ancestry chain, recorded under the run's tag once it is registered."""
    promote: str | None = None
    """The promotion's reason, when it is to go live on passing (with auto-promote)."""
    scores: dict | None = None
    """A stand-in's: every champion it was chosen from, with its score (None: not a stand-in)."""


class Release:
    def __init__(self, settings: DaemonSettings, shared: SharedState, registry: Registry, publisher: Publisher,
                 link: ServerLink | None, files: RunFiles) -> None:
        self.settings, self.shared, self.registry, self.link, self.files = settings, shared, registry, link, files
        self.publish = publisher.publish
        self.tell = publisher.tell
        self.tokens = itertools.count(1)
        self.failed: set[str] = set()
        """Candidates whose export failed (never registered): not tried again (the evolution loop's only)."""

    # -- the one path --------------------------------------------------------------------------------------------

    def offer(self, candidate: Candidate, registry: Registry | None = None) -> GateReport | None:
        """Register ``candidate`` unless it is stored, gate it in its regime, count and publish the verdict, and
        promote it when it passed and is to go live; None when that failed (published)."""
        registry = registry or self.registry
        profile = self.shared.profile
        try:
            if not registry.exists(candidate.id):
                register_policy(registry, profile, candidate.params, champion_id=candidate.id, norm=candidate.norm,
                                actor=self.settings.actor, **candidate.registration)
                self.shared.count("registered")
                if candidate.lineage is not None:
                    registry.record_ancestry(self.files.tag, candidate.lineage)
            report = gate_champion(registry, candidate.id, self.settings.actor, profile, regimes=(candidate.regime,),
                                   own=candidate.own)
        except SrghnError as exc:  # e.g. an export that fails its parity check: evolution goes on
            self.fail(candidate.id, exc, candidate.regime, stand_in=candidate.scores is not None)
            return None
        self.shared.count("gate_passed" if report.passed else "gate_failed")
        verdict = {"passed": report.passed, "failed_hard": report.failed_hard, "failed_soft": report.failed_soft}
        if candidate.scores is not None:
            self.publish(Topic.ADAPTATION, {"event": "compensated", **candidate.announce, **verdict,
                                            "candidates": candidate.scores})
        else:
            self.publish(Topic.GATE, {**candidate.announce, **verdict, "incumbent": report.incumbent_id})
        if report.passed and candidate.promote is not None and self.settings.auto_promote:
            self.promote(candidate.id, candidate.promote)
        return report

    def fail(self, champion: str | None, exc: Exception, regime: str | None = None, stand_in: bool = False) -> None:
        """A candidate (None: a set of them) that could not be made, registered or gated."""
        if stand_in:
            self.publish(Topic.ADAPTATION, {"event": "compensation_failed", "champion": champion, "regime": regime,
                                            "error": str(exc)})
            return
        if champion is not None:
            self.failed.add(champion)
        self.shared.count("release_failed")
        self.publish(Topic.DAEMON, {"event": "release_failed", "champion": champion, "error": str(exc)})

    # -- the evolution loop's champion ---------------------------------------------------------------------------

    def offer_evolved(self, champion: ChampionPolicy, record: GenerationRecord) -> None:
        """Offer the population's champion if it beats the best champion that passed in its regime, both measured
        by :meth:`played` (:mod:`srghn.deploy.registry.release`: failed candidates set no bar)."""
        regime, tag = record.regime, self.files.tag
        if champion.fitness is None or not math.isfinite(champion.fitness):
            return
        key = f"{tag}-i{champion.id}"
        if key in self.failed or self.registry.exists(key):  # what failed once fails again
            return
        try:
            score = self.played(key, regime, lambda: (champion.params, champion.norm))
            if not decide(self.registry, self.shared.profile.name, key, regime, score,
                          lambda passed: self.played_stored(passed, regime)).register:
                return
        except SrghnError as exc:
            self.fail(key, exc)
            return
        self.offer(Candidate(
            key, champion.params, champion.norm, regime,
            registration={"parents": (f"{tag}-i{champion.parent_id}",) if champion.parent_id >= 0 else (),
                          "generation": record.generation, "regime": regime, "seed": self.settings.seed,
                          "run_dir": str(self.files.home),
                          "fitness": {"fitness": float(champion.fitness), "population_best": record.best,
                                      "population_mean": record.mean, "release_fitness": score},
                          "meta": {"individual": int(champion.id), "run_tag": tag, "source": "daemon"}},
            announce={"champion": key, "generation": record.generation, "regime": regime,
                      "fitness": champion.fitness, "release_fitness": round(score, 3)},
            lineage=self.files.ancestry.chain(int(champion.id)),
            promote=f"auto: passed the gates in regime {regime} at generation {record.generation} "
                    f"(fitness {champion.fitness:.1f})"))

    def played(self, champion_id: str, regime: str, policy: Callable[[], tuple]) -> float:
        """A champion's mean fitness on whole episodes in ``regime`` from the gates' seeds, its numpy policy
        (``policy()``: flat params and normalizer) played once per champion and regime: how the release rule and
        the stand-ins rank champions. Whole episodes whatever the gates' length: on 200 Ant steps the float
        rounding between numpy and the artifact alone moved a score by 4 %, as much as champions differ."""
        score = self.shared.score(champion_id, regime)
        if score is None:
            profile = self.shared.profile
            score = policy_fitness(profile, *policy(), regime, profile.gates.episodes, profile.gates.seed)
            self.shared.keep_score(champion_id, regime, score)
        return score

    def played_stored(self, champion: Champion, regime: str, registry: Registry | None = None) -> float:
        """:meth:`played` for a registered champion; one whose files cannot be read sets no bar (a broken stored
        champion must not stop every later release; the gates still measure against the live one)."""
        registry = registry or self.registry
        try:
            return self.played(champion.id, regime,
                               lambda: (registry.load_params(champion.id), champion_norm(champion)))
        except SrghnError as exc:
            log.warning("champion %s not played in regime %s: %s", champion.id, regime, exc)
            return -math.inf

    # -- the factory's champions ---------------------------------------------------------------------------------

    def offer_factory(self, nominal: bool) -> None:
        """A robot whose population was just grown from its factory (``nominal``) and that has never had a live
        champion gets its factory champion at once: registered, gated in the shadow regime and promoted (with
        auto-promote), before the first generation is evolved. The factory's champions for known faults follow,
        on every start and once per state directory (a package upgraded under a robot in service brings its new
        ones too), each gated in its own regime and kept there for the portfolio: a robot identified in that
        regime is served it at once."""
        profile = self.shared.profile
        if nominal and self.registry.live(profile.name) is None:
            self._factory_champion(NOMINAL, load_factory(profile))
        try:
            regimes = regime_factories(profile) if profile.source else {}  # a file's profile only
        except SrghnError as exc:
            self.fail(None, exc)
            return
        for regime, factory in regimes.items():
            if not self.registry.exists(factory_id(profile, regime)):
                self._factory_champion(regime, factory)

    def _factory_champion(self, regime: str, factory: PolicyFile) -> None:
        profile = self.shared.profile
        key = factory_id(profile, regime)
        provenance = factory.meta.get("factory", {})
        fitness = provenance.get("standard_return", {}).get("mean")
        gated_in = self.shared.regime if regime == NOMINAL else regime
        self.offer(Candidate(
            key, factory.params, factory.norm, gated_in, own=True,  # its release gate, where it starts serving
            registration={"regime": regime, "run_dir": str(factory_path(profile, regime)),
                          "fitness": {"standard_return": fitness},
                          "meta": {"source": "factory", "factory": provenance}},
            announce={"champion": key, "generation": None, "regime": gated_in, "fitness": fitness,
                      "release_fitness": None},
            promote=f"auto: the factory champion passed the gates in regime {gated_in}" if regime == NOMINAL
            else None))

    # -- through the server --------------------------------------------------------------------------------------

    def promote(self, champion_id: str, reason: str) -> None:
        reply = self.link.promote(next(self.tokens), champion_id, reason, PROMOTE_TIMEOUT_S)
        if reply is None or not reply.ok:
            self.shared.count("promotion_refused")
            why = "the server did not answer" if reply is None else reply.error
            self.publish(Topic.DAEMON, {"event": "promotion_failed", "champion": champion_id, "error": why})
        else:
            self.shared.count("promoted")
            self.tell("promoted", {"champion": champion_id})  # the server publishes the audit event itself

    def serve(self, champion: str, regime: str, reason: str, live: str | None) -> bool:
        """Make a stored, gated champion live for ``regime`` as an adaptation promotion (audit actor
        ``adaptation``); whether the server did."""
        reply = self.link.adopt(next(self.tokens), champion, regime, reason, PROMOTE_TIMEOUT_S)
        ok = reply is not None and reply.ok
        self.publish(Topic.ADAPTATION, {"event": "adopted" if ok else "adopt_failed", "champion": champion,
                                        "regime": regime, "from": live,
                                        **({} if ok else {"error": "the server did not answer" if reply is None
                                                          else reply.error})})
        return ok
