"""Regime following: the shadow simulator and the live champion follow the regimes the robots are identified in.

The adaptation thread (:mod:`srghn.deploy.daemon.adaptation`) identifies each robot's regime from its transitions
and assigns it through the server. A fault no known regime explains becomes a regime of its own on that thread
(stored in the registry and the shared profile: the next window is assigned to it, the gates can gate in it); on the
evolution loop between generations, the shadow simulator's evaluator is rebuilt with it; evolution
moves to the regime most robots need (:func:`~srghn.deploy.daemon.adaptation.evolution_regime`, a ``drift``
event); and that regime's stored champion is made live again (rate-limited, audit actor ``adaptation``).

**The seam for regimes without a champion.** When the adaptation thread assigns a robot to a regime that has no
stored champion (:meth:`RegimeFollowing.uncovered`), and when two of its fits first agree on a fault no regime
declares (:meth:`RegimeFollowing.undeclared`: the fault becomes a regime there and then, without waiting for the
loop's next generation boundary, which on the Ant can be most of a minute away), one call site offers an
:class:`Uncovered` (robot,
regime name, its :class:`~srghn.sim.envs.Regime`, the :class:`~srghn.sim.identify.Identification` with
``explained``: whether the twin explained what the robot showed) to each of :attr:`RegimeFollowing.responders`, in
order, on that thread, with a registry connection of the thread's own. The first responder is
:class:`~srghn.deploy.daemon.stand_ins.StandIns` (safe action, compensation). A responder is anything with
``respond(found, registry)``; it is built with what it needs to act:
:class:`~srghn.deploy.daemon.release.Release` to serve a champion through the release path
(:meth:`~srghn.deploy.daemon.release.Release.offer` registers and gates it, then
:meth:`~srghn.deploy.daemon.release.Release.serve` makes it live as an audited adaptation promotion) and
:class:`~srghn.deploy.daemon.shared.SharedState` to hand evolution a new starting population
(:meth:`~srghn.deploy.daemon.shared.SharedState.queue_population`, taken by the loop between generations). A
responder that works for long (a repertoire search in the identified twin) starts its own thread and returns.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from srghn import ConfigError, SrghnError
from srghn.deploy.daemon.adaptation import Adaptation, Identified, evolution_regime
from srghn.deploy.daemon.champions import gate_champion
from srghn.deploy.daemon.link import ServerLink
from srghn.deploy.daemon.publishing import Publisher
from srghn.deploy.daemon.release import Release
from srghn.deploy.daemon.run_files import RunFiles
from srghn.deploy.daemon.settings import DaemonSettings
from srghn.deploy.daemon.shared import SharedState
from srghn.deploy.registry.portfolio import champion_for, portfolio, regime_scores
from srghn.deploy.registry.store import Registry
from srghn.deploy.wire.topics import Topic
from srghn.sim.backends import make_evaluator
from srghn.sim.driver import Driver
from srghn.sim.envs import Regime
from srghn.sim.identify import IDENTIFIED, Identification, identifiable

if TYPE_CHECKING:
    from srghn.deploy.daemon.stand_ins import StandIns

log = logging.getLogger("srghn.daemon")

ADOPT_INTERVAL_S = 30.0
"""At most one adaptation promotion (a regime's stored champion made live again) per this many seconds: a robot
flapping between regimes is served the right champion at once, while the registry's live pointer follows
calmly."""


@dataclass(frozen=True)
class Uncovered:
    """A robot just assigned to a regime that has no stored champion."""

    robot: str
    regime: str
    definition: Regime
    identification: Identification
    """The twin's fit; ``identification.explained``: whether it explained the robot's transitions."""


class Responder(Protocol):
    def respond(self, found: Uncovered, registry: Registry) -> None:
        """Called on the adaptation thread; must not block it for long."""


def load_identified(registry: Registry, shared: SharedState) -> None:
    """The regimes the twin identified before (the registry keeps them): the shadow simulator can run them, the
    gates gate in them, and a fit within tolerance of one of them is that regime again."""
    for name, definition in registry.regimes(shared.profile.name).items():
        try:
            regime = Regime.from_dict(definition, f"registry regime {name}")
        except ConfigError as exc:  # a damaged row costs that regime, never the daemon
            log.error("identified regime %s is unusable: %s", name, exc)
            continue
        shared.add_regime(name, regime)


class RegimeFollowing:
    def __init__(self, settings: DaemonSettings, shared: SharedState, registry: Registry, publisher: Publisher,
                 release: Release, files: RunFiles, stand_ins: StandIns) -> None:
        self.settings, self.shared, self.registry, self.files = settings, shared, registry, files
        self.publish = publisher.publish
        self.release, self.stand_ins = release, stand_ins
        self.responders: list[Responder] = [stand_ins]
        """Offered every robot assigned to a regime without a stored champion (:meth:`uncovered`), in order."""
        self.adaptation: Adaptation | None = None
        self.driver: Driver | None = None
        """The evolution driver, once built: its evaluator is rebuilt when a regime is identified."""
        self.wanted: str | None = None
        """The regime evolution should work on, as the robots' regimes last said (:func:`evolution_regime`)."""
        self.adopt_for: str | None = None
        """A regime the robots moved to whose stored champion is to be made live (waiting for the rate limit)."""
        self.next_adopt = 0.0
        self.evidence: Identified | None = None
        """The last identification that changed a robot's regime (what a ``drift`` event cites)."""
        self.shadow: set[str] | None = None
        """The regimes the driver's evaluator can play (None: no driver yet)."""

    def attach(self, driver: Driver, regimes: set[str]) -> None:
        """The evolution driver, once built, and the regimes of the profile its evaluator was built with."""
        self.driver, self.shadow = driver, set(regimes)

    def start(self, link: ServerLink) -> None:
        """Identify each robot's regime from its transitions on a thread of its own, where the profile allows it
        and ``--follow-drift`` is on."""
        profile = self.shared.profile
        if not self.settings.follow_drift or not identifiable(profile):
            return
        self.adaptation = Adaptation(profile, link.send, self.publish, known=self.shared.identified,
                                     on_assign=self.uncovered, on_undeclared=self.undeclared)
        link.on_transitions = self.adaptation.offer

    def close(self) -> None:
        if self.adaptation is not None:
            self.adaptation.close()

    # -- the adaptation thread's side ----------------------------------------------------------------------------

    def uncovered(self, robot: str, found: Identification) -> None:
        """The adaptation thread just assigned ``robot`` to ``found.regime``: without a stored champion there, every
        responder is offered it, on a registry connection of this thread's own."""
        with Registry.open(self.settings.state_dir) as registry:
            self._offer(robot, found, registry)

    def undeclared(self, robot: str, found: Identification) -> None:
        """Two fits of the adaptation thread just agreed on a fault no regime declares: it becomes a regime now, and
        every responder is offered it."""
        with Registry.open(self.settings.state_dir) as registry:
            if self.register_regime(found.regime, found.definition, found.to_dict(), registry):
                self._offer(robot, found, registry)

    def _offer(self, robot: str, found: Identification, registry: Registry) -> None:
        if found.regime in portfolio(registry, self.shared.profile.name):
            return
        offer = Uncovered(robot, found.regime, found.definition, found)
        for responder in self.responders:
            responder.respond(offer, registry)

    # -- the evolution loop's side -------------------------------------------------------------------------------

    def follow(self) -> None:
        """What the adaptation thread identified since the last call, then the robots' regimes."""
        if self.adaptation is None:
            return
        for found in self.adaptation.take():
            self.follow_drift(found)
        self.follow_robots()

    def follow_drift(self, found: Identified) -> None:
        """A robot changed regime (the server already serves it its regime's stored champion), or showed a fault
        no known regime explains."""
        result = found.result
        if not result.known:  # a fault no regime declares: it becomes a regime, kept in the registry; the robots'
            # next identification knows it, and evolution follows them there (follow_robots)
            self.publish(Topic.DAEMON, {"event": "undeclared_regime", "client": found.client,
                                        "regime": result.regime, "changes": result.definition.to_dict(),
                                        "residual": float(f"{result.residual:.3g}"), "steps": found.steps,
                                        "params": {k: round(v, 4) for k, v in result.params.items()},
                                        "stderr": {k: float(f"{v:.3g}") for k, v in result.stderr.items()}})
            if self.adopt_regime(result.regime, result.definition, result.to_dict()):
                # offered again: a no-op where the adaptation thread offered it (each responder answers a regime
                # once), the offer where it could not store the regime
                self._offer(found.client, result, self.registry)
            return
        self.evidence = found  # the adaptation thread published it already (`adaptation` event `identified`)

    def follow_robots(self) -> None:
        """Evolution follows the regime most robots are in, when that changes; and that regime's stored champion
        is made live again (rate-limited, not while paused). Both happen on a change of the robots only: an
        operator's regime, promotion or rollback since stands. Robots in a regime without a champion of its own
        get their stand-ins first."""
        robots = self.adaptation.regimes()
        if not robots:  # nothing identified yet: no registry read
            return
        profile = self.shared.profile
        self.stand_ins.sweep(set(robots.values()), self.registry)
        current = self.shared.regime
        wanted = evolution_regime(robots, current, regime_scores(portfolio(self.registry, profile.name)),
                                  profile.solved_fitness)
        if wanted is None:
            return
        if wanted != self.wanted:
            self.wanted = self.adopt_for = wanted
            playable = profile.regimes if self.shadow is None else self.shadow
            if wanted != current and wanted in playable:
                self._drift(current, wanted, robots)
        if self.adopt_for is not None and not self.shared.paused and self.adopt(self.adopt_for):
            self.adopt_for = None

    def _drift(self, previous: str, wanted: str, robots: dict[str, str]) -> None:
        self.shared.set_regime(wanted)
        self.files.save_state(self.shared)
        evidence = self.evidence
        self.publish(Topic.DRIFT, {"client": evidence.client if evidence else None, "from": previous,
                                   "to": wanted, "identified": wanted.startswith(IDENTIFIED), "robots": robots,
                                   "transitions": evidence.result.transitions if evidence else None,
                                   "errors": {k: float(f"{v:.3g}") for k, v in evidence.result.errors.items()}
                                   if evidence else {}})

    def adopt(self, regime: str) -> bool:
        """Make ``regime``'s stored champion live again, when another regime's is live: at most once per
        :data:`ADOPT_INTERVAL_S`, only with auto-promote on. A champion that never went live is gated again first
        (against the live champion, in its regime); one that did is rolled back to. False: not yet (rate limit)."""
        if not self.settings.auto_promote:
            return True
        name = self.shared.profile.name
        live = self.registry.live(name)
        if live is not None and live.regime == regime:
            return True
        stored = champion_for(self.registry, name, regime)
        if stored is None or (live is not None and stored.id == live.id):
            return True
        if time.monotonic() < self.next_adopt:
            return False
        self.next_adopt = time.monotonic() + ADOPT_INTERVAL_S
        if stored.status != "retired":
            try:
                report = gate_champion(self.registry, stored.id, self.settings.actor, self.shared.profile,
                                       regimes=(regime,))
            except SrghnError as exc:
                self.publish(Topic.ADAPTATION, {"event": "adopt_failed", "champion": stored.id, "error": str(exc)})
                return True
            if not report.passed:
                self.publish(Topic.ADAPTATION, {"event": "adopt_failed", "champion": stored.id,
                                                "error": f"failed gate(s) {report.failed_hard + report.failed_soft}"})
                return True
            # The gate took seconds; the robot's check may have refuted the champion meanwhile (it did: stiff joints,
            # seed 2, the refuted gait made live 8 s after its refutation and served for minutes). Ask again later.
            current = champion_for(self.registry, name, regime)
            if current is None or current.id != stored.id:
                return False
        self.release.serve(stored.id, regime, f"adaptation: the robots are in regime {regime}; its stored champion "
                           "serves again", live.id if live else None)
        return True

    def register_regime(self, name: str, regime: Regime, fit: dict, registry: Registry) -> bool:
        """A regime the twin identified becomes one of the robot's: stored in the registry (first), then in the
        shared profile (either thread, with a registry connection of its own). False when storing failed."""
        if name in self.shared.identified():
            return True
        try:
            registry.store_regime(self.shared.profile.name, name, regime.to_dict(), {"fit": fit})
        except SrghnError as exc:  # a locked or full registry: the loop's adopt_regime tries again
            self.publish(Topic.DAEMON, {"event": "regime_failed", "regime": name, "error": str(exc)})
            return False
        self.shared.add_regime(name, regime)
        self.publish(Topic.DAEMON, {"event": "regime_identified", "regime": name, "changes": regime.to_dict()})
        return True

    def adopt_regime(self, name: str, regime: Regime, fit: dict) -> bool:
        """The loop's side of a new regime: registered (where the adaptation thread could not), then the shadow
        simulator's evaluator rebuilt with it (its workers build their environments from the profile's regimes),
        between two generations. False (and the shadow simulator stays where it is) when that fails."""
        if self.shadow is not None and name in self.shadow:
            return True
        if not self.register_regime(name, regime, fit, self.registry):
            return False
        driver, settings, profile = self.driver, self.settings, self.shared.profile
        if driver is None:
            return True
        try:
            evaluator = make_evaluator(profile, settings.backend, settings.workers, settings.ray_address)
        except SrghnError as exc:  # workers that cannot start: evolution goes on as it was
            self.publish(Topic.DAEMON, {"event": "regime_failed", "regime": name, "error": str(exc)})
            return False
        driver.evaluator, old = evaluator, driver.evaluator
        old.close()
        self.shadow = set(profile.regimes)
        return True
