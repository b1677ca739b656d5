"""The daemon behind ``srghn-ctl run``: evolve, gate and promote, attached to a control server that serves.

Process model (design.md §4, docs/daemon.md)::

    supervisor (deploy/server/supervisor.py) ─► control server (deploy/server/process.py, ONNX Runtime, no torch)
                                            control ROUTER  ◄── robots (act / step)
                                            admin ROUTER    ◄── srghn-ctl, tools
                                            telemetry PUB   ──► srghn-ctl watch, dashboards
                                            internal ROUTER ◄── this daemon (typed messages, heartbeats)
    srghn-ctl run (this module, torch, nice +5)
      evolution loop, gating, registering
      shadow workers (nice +15, sandboxed)
      [simulated robot]  ── control socket ──►

Serving outlives the daemon: the server is its own process (under systemd a service of its own; else started
detached under :mod:`srghn.deploy.server.supervisor` by the first ``srghn-ctl run``), and a daemon that starts finds it
and attaches to it. A daemon that dies, is killed or restarts changes nothing for the robots. ``srghn-ctl run``
stops the server it runs with at a clean stop (one command starts and stops everything); ``--attach`` (systemd's
daemon unit) never starts or stops one.

Life cycle: start-up (registry, server, simulated robot, evaluator, population), the evolution loop, an ordered
shutdown. SIGTERM and SIGINT only set a flag; the loop stops between two generations
(:meth:`srghn.sim.driver.Driver.run`): a generation in flight is finished and recorded first (so a resumed run
goes on bit for bit), and the saved population is always one complete generation. State lives in the state
directory and survives restarts: the registry, and ``daemon/<robot>/`` with the population checkpoint,
``metrics.jsonl`` (appended across runs), ``fitness.png`` and ``daemon.json`` (regime, pause).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import zmq

from srghn import ConfigError, SrghnError
from srghn.controller.checkpoint import PolicyFile, PopulationFile, load_population
from srghn.controller.files import atomic_write
from srghn.deploy.daemon.adaptation import Adaptation, Identified, evolution_regime
from srghn.deploy.daemon.champions import champion_norm, gate_champion, register_policy, run_tag
from srghn.deploy.daemon.link import ServerLink
from srghn.deploy.daemon.settings import DaemonSettings
from srghn.deploy.process import logs
from srghn.deploy.process.signals import ExitFlag
from srghn.deploy.process.state import (
    DAEMON,
    SERVER,
    has_space,
    hold_lock,
    lock_is_held,
    no_space,
    read_runfile,
    remove_runfile,
    secure_state_dir,
    write_runfile,
)
from srghn.deploy.registry.portfolio import champion_for, portfolio, regime_scores
from srghn.deploy.registry.release import decide, passed_in_regime
from srghn.deploy.registry.store import Champion, Registry
from srghn.deploy.server import placement
from srghn.deploy.server.config import SERVE_CONFIG
from srghn.deploy.wire import messages as m
from srghn.deploy.wire.keys import CurveServer
from srghn.errors import ServerConflict, ServerUnavailable
from srghn.safety.drift import ReturnDriftDetector
from srghn.safety.regime_trial import explain_returns, policy_fitness, safe_margin
from srghn.sim.ancestry import Ancestry
from srghn.sim.backends import make_evaluator
from srghn.sim.compensate import compensate
from srghn.sim.driver import INIT_FACTORY, Driver
from srghn.sim.envs import NOMINAL, Regime
from srghn.sim.factory import factory_id, factory_path, load_factory, regime_factories
from srghn.sim.identify import IDENTIFIED, identifiable
from srghn.sim.plots import plot_robot, plot_run
from srghn.sim.records import GenerationRecord, read_records
from srghn.sim.run import provenance

log = logging.getLogger("srghn.daemon")

SERVER_START_TIMEOUT_S = 60.0
CHECKPOINT_INTERVAL_S = 5.0
PROMOTE_TIMEOUT_S = 60.0
ADOPT_INTERVAL_S = 30.0
"""At most one adaptation promotion (a regime's stored champion made live again) per this many seconds: a robot
flapping between regimes is served the right champion at once, while the registry's live pointer follows
calmly."""
RETURN_DRIFT_WINDOW = 5
"""After a return drift alarm, the latest this many returns are what the regime trial explains."""
RETURN_WATCH_CLIENTS = 1024
"""Robots whose returns the daemon watches at once (as many as the server keeps statistics for)."""
ANCESTRY_PRUNE_EVERY = 50
"""Generations between two prunings of the run's ancestry to the living population's ancestors."""


class _Regime:
    """The shadow simulator's regime as operators set it (``regime_at`` for :meth:`srghn.sim.driver.Driver.run`)."""

    def __init__(self, regime: str) -> None:
        self.regime = regime

    def regime_at(self, generation: int) -> str:
        return self.regime


class Daemon:
    def __init__(self, settings: DaemonSettings, on_event: Callable[[str, dict], None] | None = None) -> None:
        self.settings = settings
        self.profile = settings.profile
        self.on_event = on_event or (lambda topic, data: None)
        self.endpoints = settings.endpoints()
        CurveServer.for_endpoints(settings.keys, self.endpoints)  # refuse exposed sockets without keys
        self.home = settings.home
        self.should_exit = ExitFlag()
        self.stop_reason: str | None = None
        self.paused = False
        self.counts = {"generations": 0, "registered": 0, "gate_passed": 0, "gate_failed": 0, "promoted": 0,
                       "promotion_refused": 0, "release_failed": 0}
        self.tokens = itertools.count(1)
        self.ancestry = Ancestry()
        """Who was born of whom in this run (pruned to the living population's ancestors)."""
        self.release_failed: set[str] = set()
        """Candidates whose export failed (never registered): not tried again."""
        self.release_scores: dict[tuple[str, str], float] = {}
        """:meth:`_played` scores, by (id, regime)."""
        self.link: ServerLink | None = None
        self.supervisor: subprocess.Popen | None = None
        self.owns_server = False
        """Whether a clean stop stops the server too: one that ``srghn-ctl run`` started (this one, or one a
        killed daemon left), never a service of its own (``srghn-ctl serve``)."""
        self.robot: subprocess.Popen | None = None
        self.identified: dict[str, Regime] = {}
        """Regimes the parametric twin identified (kept in the registry), by name."""
        self.return_watch: dict[str, tuple[str | None, ReturnDriftDetector, deque]] = {}
        """Per robot (not identifiable from transitions): the champion serving it, its return drift detector, its
        recent returns."""
        self.server_final: dict | None = None
        self.last_record: dict = {}
        """Figures of the last generation (this run's, else the last line of ``metrics.jsonl``): ``status`` shows
        them while paused and between generations."""
        self.adaptation: Adaptation | None = None
        self.wanted: str | None = None
        """The regime evolution should work on, as the robots' regimes last said (:func:`evolution_regime`)."""
        self.next_adopt = 0.0
        self.adopt_for: str | None = None
        """A regime the robots moved to whose stored champion is to be made live (waiting for the rate limit)."""
        self._evidence: Identified | None = None
        """The last identification that changed a robot's regime (what a ``drift`` event cites)."""
        self.compensated: dict[str, str] = {}
        """Regime -> the live champion last compensated for it (:meth:`_compensate`)."""
        self.safe_trials: dict[str, str] = {}
        """Regime -> the live champion last played there against the safe action."""
        self.stand_in_lock = threading.Lock()
        """The evolution loop and the identification thread both compensate champions and play them against the
        safe action (:meth:`_compensate`, :meth:`_check_safe`)."""

    # -- run -----------------------------------------------------------------------------------------------------

    def run(self) -> dict:
        """Run until the generation or time bound, or a signal; shut down in order and return the summary."""
        with self.should_exit.captured():
            return self._run()

    def _run(self) -> dict:
        state = secure_state_dir(Path(self.settings.state_dir))
        logs.configure(state, "daemon", stderr_level=logging.WARNING)  # the CLI prints the events themselves
        self.home.mkdir(parents=True, exist_ok=True)
        started = time.time()
        driver = evaluator = None
        torch.set_num_threads(1)  # evolution is one thread at low priority, and the same on every run
        with hold_lock(state, DAEMON):
            self.ctx = zmq.Context()
            try:
                self.registry = Registry.open(self.settings.state_dir, create=True)
                self._load_identified()
                if self.settings.regime is not None and self.settings.regime not in self.profile.regimes:
                    raise ConfigError(f"--regime {self.settings.regime!r} is not a regime of {self.profile.name}: "
                                      f"known: {', '.join(self.profile.regimes)}")
                saved = self._load_state()
                population = self._saved_population()
                self.regime = _Regime(self.settings.regime or saved.get("regime") or self.profile.regimes[0])
                self.paused = bool(saved.get("paused", False))
                if self._attach_server():  # False: a signal came while waiting for the server
                    self._start_adaptation()
                    write_runfile(state, DAEMON, {"pid": os.getpid(), "robot": self.profile.name,
                                                  "started": started})
                    if self.settings.sim_robot:
                        self._start_robot()
                    # Evolution yields the cores to the live server and the robot: lower priority from here on,
                    # and off the serving thread's CPU where it has one
                    os.nice(5)
                    if self.settings.serve_cpu is not None:
                        placement.keep_off(self.settings.serve_cpu)
                    evaluator = make_evaluator(self.profile, self.settings.backend, self.settings.workers,
                                               self.settings.ray_address)
                    driver = self.driver = self._driver(evaluator, saved, population)
                    if not self.should_exit:
                        self._release_factory(nominal=saved.get("init") == INIT_FACTORY)
                    self.publish("daemon", {"event": "resumed" if saved.get("resumed") else "started",
                                            "generation": driver.generation, "paused": self.paused,
                                            "regime": self.regime.regime, "endpoints": self.endpoints,
                                            "init": saved.get("init")})
                    self.last_record = _last_figures(self.home / "metrics.jsonl")
                    self._status(driver, None)  # counters and figures current from the start
                    self._evolve(driver, started)
                self._finished(started)
            except Exception as exc:
                self.stop_reason = self.stop_reason or "error"
                log.error("the daemon stops on an error: %s", exc, exc_info=not isinstance(exc, SrghnError))
                raise
            finally:
                self.should_exit.set("shutdown")  # a signal during shutdown changes nothing any more
                if self.adaptation is not None:
                    self.adaptation.close()
                if driver is not None:
                    driver.evaluator.close()  # the evaluator of the latest regimes (see _adopt_regime)
                elif evaluator is not None:
                    evaluator.close()
                summary = self._shutdown(driver, started)
        return summary

    def _evolve(self, driver: Driver, started: float) -> None:
        settings = self.settings
        records = driver.run(None, self.regime, should_stop=self._stopping)
        last_save = time.monotonic()
        metrics = self.home / "metrics.jsonl"
        unsaved: list[str] = []
        while True:
            self._handle_server_messages(wait_s=0.0)
            while self.paused and not self._finished(started):
                self._status(driver, None)
                self._handle_server_messages(wait_s=1.0)
            if self._finished(started):
                return
            record = next(records, None)
            if record is None:  # a signal, seen between two generations
                return
            self.counts["generations"] += 1
            self.ancestry.add(record.born, record.generation)
            if self.counts["generations"] % ANCESTRY_PRUNE_EVERY == 0:
                self.ancestry.prune(int(i) for i in getattr(driver.strategy, "ids", ()))
            line = record.to_json()
            unsaved.append(line)
            while True:  # a full disk pauses evolution here, between two generations, until there is space
                try:
                    _append_lines(metrics, unsaved)
                    unsaved.clear()
                    if time.monotonic() - last_save > CHECKPOINT_INTERVAL_S:
                        self._checkpoint(driver)
                        last_save = time.monotonic()
                    break
                except Exception as exc:
                    if not no_space(exc) or not self._wait_for_space(driver, started, exc):
                        raise
            self.publish("generation", json.loads(line))
            self._status(driver, record)
            if (self.counts["generations"] % settings.gate_every == 0 and not self.should_exit
                    and record.regime == self.regime.regime):  # not a generation of a regime the robots just left
                try:
                    self._release(driver, record)
                except Exception as exc:  # a candidate not stored for want of space: the next release tries again
                    if not no_space(exc) or not self._wait_for_space(driver, started, exc):
                        raise
                self._status(driver, record)  # the release's counters now, not a generation later

    def _wait_for_space(self, driver: Driver, started: float, exc: BaseException) -> bool:
        """The disk is full: evolution and checkpoints pause, the server link is kept answered, until there is
        space again (True) or the daemon is told to stop (False: the caller gives up its write)."""
        log.error("the disk is full (%s): evolution and checkpoints pause until there is space; serving goes on", exc)
        self.publish("daemon", {"event": "disk_full", "error": str(exc)})
        paused = time.monotonic()
        while not has_space(self.home):
            if self._finished(started):
                return False
            self._status(driver, None)
            self._handle_server_messages(wait_s=1.0)
        log.info("space again after %.0f s: evolution resumes", time.monotonic() - paused)
        self.publish("daemon", {"event": "space_again", "paused_s": round(time.monotonic() - paused, 1)})
        return True

    def _stopping(self) -> bool:
        return bool(self.should_exit)

    def _finished(self, started: float) -> bool:
        """Whether to stop now (a signal, or a bound of this run); records why."""
        s = self.settings
        if self.should_exit:
            self.stop_reason = self.stop_reason or self.should_exit.reason
        elif ((s.generations is not None and self.counts["generations"] >= s.generations)
              or (s.duration_s is not None and time.time() - started >= s.duration_s)):
            self.stop_reason = self.stop_reason or "bound"
        return self.stop_reason is not None

    # -- release: register, gate, promote ------------------------------------------------------------------------

    def _release(self, driver: Driver, record: GenerationRecord) -> None:
        """Register the champion if it beats the best champion that passed in its regime, both measured by
        :meth:`_played` (:mod:`srghn.deploy.registry.release`: failed candidates set no bar), gate it in that
        regime, and
        promote it through the server when it passes and auto-promote is on."""
        champion = driver.champion()
        regime = record.regime
        if champion.fitness is None or not math.isfinite(champion.fitness):
            return
        key = f"{self.tag}-i{champion.id}"
        if key in self.release_failed or self.registry.exists(key):  # what failed once fails again
            return
        try:
            score = self._played(key, regime, lambda: (champion.params, champion.norm))
            if not decide(self.registry, self.profile.name, key, regime, score,
                          lambda passed: self._played_stored(passed, regime)).register:
                return
            registered, report = self._register_and_gate(champion, key, record, score)
        except SrghnError as exc:  # e.g. an export that fails its parity check: evolution goes on
            self.release_failed.add(key)
            self.counts["release_failed"] += 1
            self.publish("daemon", {"event": "release_failed", "champion": key, "error": str(exc)})
            return
        self.counts["gate_passed" if report.passed else "gate_failed"] += 1
        self.publish("gate", {"champion": registered.id, "generation": record.generation, "regime": regime,
                              "fitness": champion.fitness, "release_fitness": round(score, 3),
                              "passed": report.passed, "failed_hard": report.failed_hard,
                              "failed_soft": report.failed_soft, "incumbent": report.incumbent_id})
        if report.passed and self.settings.auto_promote:
            self._promote(registered.id, f"auto: passed the gates in regime {regime} at generation "
                                         f"{record.generation} (fitness {champion.fitness:.1f})")

    def _played(self, champion_id: str, regime: str, policy: Callable[[], tuple]) -> float:
        """A champion's mean fitness on whole episodes in ``regime`` from the gates' seeds, its numpy policy
        (``policy()``: flat params and normalizer) played once per champion and regime: how the release rule and
        the stand-in rank champions. Whole episodes whatever the gates' length: on 200 Ant steps the float rounding
        between numpy and the artifact alone moved a score by 4 %, as much as champions differ."""
        score = self.release_scores.get((champion_id, regime))
        if score is None:
            gates = self.profile.gates
            score = policy_fitness(self.profile, *policy(), regime, gates.episodes, gates.seed)
            if len(self.release_scores) >= 1024:
                self.release_scores.clear()
            self.release_scores[champion_id, regime] = score
        return score

    def _played_stored(self, champion: Champion, regime: str) -> float:
        """:meth:`_played` for a registered champion; one whose files cannot be read sets no bar (a broken stored
        champion must not stop every later release; the gates still measure against the live one)."""
        try:
            return self._played(champion.id, regime,
                                lambda: (self.registry.load_params(champion.id), champion_norm(champion)))
        except SrghnError as exc:
            log.warning("champion %s not played in regime %s: %s", champion.id, regime, exc)
            return -math.inf

    def _release_factory(self, nominal: bool) -> None:
        """A robot whose population was just grown from its factory (``nominal``) and that has never had a live
        champion gets its factory champion at once: registered, gated in the shadow regime and promoted (with
        auto-promote), before the first generation is evolved. The factory's champions for known faults follow,
        on every start and once per state directory (a package upgraded under a robot in service brings its new
        ones too), each gated in its own regime and kept there for the portfolio: a robot identified in that
        regime is served it at once."""
        if nominal and self.registry.live(self.profile.name) is None:
            self._release_factory_champion(NOMINAL, load_factory(self.profile))
        try:
            regimes = regime_factories(self.profile) if self.profile.source else {}  # a file's profile only
        except SrghnError as exc:
            self.counts["release_failed"] += 1
            self.publish("daemon", {"event": "release_failed", "champion": None, "error": str(exc)})
            return
        for regime, factory in regimes.items():
            if not self.registry.exists(factory_id(self.profile, regime)):
                self._release_factory_champion(regime, factory)

    def _release_factory_champion(self, regime: str, factory: PolicyFile) -> None:
        key = factory_id(self.profile, regime)
        provenance = factory.meta.get("factory", {})
        fitness = provenance.get("standard_return", {}).get("mean")
        gated_in = self.regime.regime if regime == NOMINAL else regime
        try:
            if not self.registry.exists(key):
                register_policy(self.registry, self.profile, factory.params, champion_id=key, norm=factory.norm,
                                regime=regime, run_dir=str(factory_path(self.profile, regime)),
                                fitness={"standard_return": fitness},
                                meta={"source": "factory", "factory": provenance}, actor=self.settings.actor)
                self.counts["registered"] += 1
            report = gate_champion(self.registry, key, self.settings.actor, self.profile, regimes=(gated_in,),
                                   own=True)  # its release gate, in the regime it starts serving in
        except SrghnError as exc:
            self.counts["release_failed"] += 1
            self.publish("daemon", {"event": "release_failed", "champion": key, "error": str(exc)})
            return
        self.counts["gate_passed" if report.passed else "gate_failed"] += 1
        self.publish("gate", {"champion": key, "generation": None, "regime": gated_in, "fitness": fitness,
                              "release_fitness": None, "passed": report.passed, "failed_hard": report.failed_hard,
                              "failed_soft": report.failed_soft, "incumbent": report.incumbent_id})
        if regime == NOMINAL and report.passed and self.settings.auto_promote:
            self._promote(key, f"auto: the factory champion passed the gates in regime {gated_in}")

    def _register_and_gate(self, champion, key: str, record: GenerationRecord, release_fitness: float):
        registered = register_policy(
            self.registry, self.profile, champion.params, champion_id=key, norm=champion.norm,
            parents=(f"{self.tag}-i{champion.parent_id}",) if champion.parent_id >= 0 else (),
            generation=record.generation, regime=record.regime, seed=self.settings.seed, run_dir=str(self.home),
            fitness={"fitness": float(champion.fitness), "population_best": record.best,
                     "population_mean": record.mean, "release_fitness": release_fitness},
            meta={"individual": int(champion.id), "run_tag": self.tag, "source": "daemon"},
            actor=self.settings.actor)
        self.counts["registered"] += 1
        self.registry.record_ancestry(self.tag, self.ancestry.chain(int(champion.id)))
        report = gate_champion(self.registry, registered.id, self.settings.actor, self.profile,
                               regimes=(record.regime,))
        return registered, report

    def _promote(self, champion_id: str, reason: str) -> None:
        reply = self.link.promote(next(self.tokens), champion_id, reason, PROMOTE_TIMEOUT_S)
        if reply is None or not reply.ok:
            self.counts["promotion_refused"] += 1
            why = "the server did not answer" if reply is None else reply.error
            self.publish("daemon", {"event": "promotion_failed", "champion": champion_id, "error": why})
        else:
            self.counts["promoted"] += 1
            self.on_event("promoted", {"champion": champion_id})  # the server publishes the audit event itself

    # -- what the server passes on -------------------------------------------------------------------------------

    def _handle_server_messages(self, wait_s: float) -> None:
        """Apply operators' commands (pause, resume, regime) and what the robots' transitions showed."""
        messages = self.link.take(wait_s)
        if self.adaptation is not None:
            for found in self.adaptation.take():
                self._follow_drift(found)
            self._follow_robots()
        for returns in (msg for msg in messages if isinstance(msg, m.Returns)):
            self._follow_returns(returns)
        for command in messages:
            if not isinstance(command, m.Command):
                continue
            if command.cmd == "pause":
                self.paused = True
            elif command.cmd == "resume":
                self.paused = False
            elif command.cmd == "regime" and command.regime in self.profile.regimes:
                self.regime.regime = command.regime
            else:
                log.warning("command %r from %s ignored", command.cmd, command.actor)
                continue
            self._save_state()
            self.publish("evolution", {"event": command.cmd, "regime": self.regime.regime, "paused": self.paused,
                                       "actor": command.actor})

    def _start_adaptation(self) -> None:
        """Identify each robot's regime from its transitions on a thread of its own (:mod:`srghn.deploy.
        adaptation`), where the profile allows it and ``--follow-drift`` is on."""
        if not self.settings.follow_drift or not identifiable(self.profile):
            return
        self.adaptation = Adaptation(self.profile, self.link.send, self.publish, known=self._known_regimes,
                                     on_assign=self._check_assigned)
        self.link.on_transitions = self.adaptation.offer

    def _known_regimes(self) -> dict:
        """Regimes beyond the profile's declared ones that identification recognises and evolution can run: the
        twin's identified regimes (:meth:`_adopt_regime`; read from the adaptation thread, hence a copy)."""
        return dict(self.identified)

    def _follow_drift(self, found: Identified) -> None:
        """A robot changed regime (the server already serves it its regime's stored champion), or showed a fault
        no known regime explains."""
        result = found.result
        if not result.known:  # a fault no regime declares: it becomes a regime, kept in the registry; the robots'
            # next identification knows it, and evolution follows them there (_follow_robots)
            self.publish("daemon", {"event": "undeclared_regime", "client": found.client,
                                    "regime": result.regime, "changes": result.definition.to_dict(),
                                    "residual": float(f"{result.residual:.3g}"), "steps": found.steps,
                                    "params": {k: round(v, 4) for k, v in result.params.items()},
                                    "stderr": {k: float(f"{v:.3g}") for k, v in result.stderr.items()}})
            self._adopt_regime(result.regime, result.definition, result.to_dict())
            return
        self._evidence = found  # the adaptation thread published it already (`adaptation` event `identified`)

    def _follow_robots(self) -> None:
        """Evolution follows the regime most robots are in (:func:`~srghn.deploy.daemon.adaptation.evolution_regime`),
        when that changes; and that regime's stored champion is made live again (rate-limited, not while paused).
        Both happen on a change of the robots only: an operator's regime, promotion or rollback since stands."""
        robots = self.adaptation.regimes()
        if not robots:  # nothing identified yet: no registry read
            return
        chosen = portfolio(self.registry, self.profile.name)
        with self.stand_in_lock:
            if self._compensate(set(robots.values()) - chosen.keys(), self.registry):
                chosen = portfolio(self.registry, self.profile.name)
            self._check_safe(set(robots.values()) - chosen.keys(), self.registry)
        scores = regime_scores(chosen)
        wanted = evolution_regime(robots, self.regime.regime, scores, self.profile.solved_fitness)
        if wanted is None:
            return
        if wanted != self.wanted:
            self.wanted = self.adopt_for = wanted
            if wanted != self.regime.regime and (wanted in self.profile.regimes or wanted in self._known_regimes()):
                previous, self.regime.regime = self.regime.regime, wanted
                self.last_candidate = None
                self._save_state()
                evidence = self._evidence
                self.publish("drift", {"client": evidence.client if evidence else None, "from": previous,
                                       "to": wanted, "identified": wanted.startswith(IDENTIFIED), "robots": robots,
                                       "transitions": evidence.result.transitions if evidence else None,
                                       "errors": {k: float(f"{v:.3g}") for k, v in evidence.result.errors.items()}
                                       if evidence else {}})
        if self.adopt_for is not None and not self.paused and self._adopt(self.adopt_for):
            self.adopt_for = None

    def _compensate(self, uncovered: set[str], registry: Registry) -> bool:
        """Robots in a regime with no champion of its own, whose fault reverses actuators or permutes actions: a
        champion with its last layer undoing that (:mod:`srghn.sim.compensate`) is registered (its parent: the
        champion it was made from) and gated in that regime, once per (regime, live champion). It is made from
        the live champion, or from another regime's stored champion where that one, compensated, does better in
        the regime on the gates' episodes (a fault that also weakens a leg is better met by the champion evolved
        for a weak leg). True when one passed: the portfolio now holds it, and the server is told to read it.
        Callers hold :attr:`stand_in_lock`."""
        live = registry.live(self.profile.name) if uncovered else None
        passed = False
        for regime in sorted(uncovered):
            if live is None or regime not in self.profile.regimes or self.compensated.get(regime) == live.id:
                continue
            self.compensated[regime] = live.id
            key = f"{live.id}-for-{regime}"
            try:
                source, params, scores = self._stand_in(registry, live, regime)
                if params is None:
                    continue
                key = f"{source.id}-for-{regime}"
                if not registry.exists(key):
                    register_policy(registry, self.profile, params, champion_id=key, parents=(source.id,),
                                    regime=regime, norm=champion_norm(source), actor=self.settings.actor,
                                    meta={"source": "compensation", "compensates": source.id})
                    self.counts["registered"] += 1
                report = gate_champion(registry, key, self.settings.actor, self.profile, regimes=(regime,))
            except SrghnError as exc:
                self.publish("adaptation", {"event": "compensation_failed", "champion": key, "regime": regime,
                                            "error": str(exc)})
                continue
            self.counts["gate_passed" if report.passed else "gate_failed"] += 1
            self.publish("adaptation", {"event": "compensated", "champion": key, "from": source.id, "regime": regime,
                                        "passed": report.passed, "failed_hard": report.failed_hard,
                                        "failed_soft": report.failed_soft, "candidates": scores})
            passed = passed or report.passed
        if passed:
            self.link.send(m.Sync())
        return passed

    def _stand_in(self, registry: Registry, live: Champion, regime: str) -> tuple[Champion, np.ndarray | None, dict]:
        """The champion to compensate for ``regime`` and its compensated parameters (None: the regime reverses and
        permutes nothing), with every candidate's fitness there (:meth:`_played`; empty: the live champion was the
        only candidate). Candidates: the live champion, then the champions stored for other regimes that were not
        themselves made by compensation; the first of the best is chosen (only it is exported, by its
        registration). A stored champion that cannot be loaded is left out, never the reason the live one is not
        compensated."""
        definition = self.profile.regime(regime)
        params = compensate(self.profile, registry.load_params(live.id), definition)
        others = sorted((c for c in portfolio(registry, self.profile.name).values()
                         if c.id != live.id and c.meta.get("source") != "compensation"), key=lambda c: c.id)
        if params is None or not others:
            return live, params, {}
        made, scores = {live.id: (live, params)}, {}
        for champion in others:
            try:
                made[champion.id] = (champion, compensate(self.profile, registry.load_params(champion.id), definition))
            except SrghnError as exc:
                log.warning("stored champion %s not tried for regime %s: %s", champion.id, regime, exc)
        for champion, candidate in made.values():
            try:
                norm = champion_norm(champion)
            except SrghnError as exc:
                log.warning("champion %s compensated for regime %s not scored: %s", champion.id, regime, exc)
                continue
            scores[champion.id] = round(self._played(f"{champion.id}-for-{regime}", regime,
                                                     lambda c=candidate, n=norm: (c, n)), 3)
        if not scores:
            return live, params, {}
        best = max(scores, key=scores.__getitem__)  # the live champion first: max keeps the first of equals
        return *made[best], scores

    def _check_safe(self, uncovered: set[str], registry: Registry) -> None:
        """Robots in a regime with no champion of its own are served the live champion, unless it does worse there
        than the safe action: played against it once per (regime, live champion) on the gates' fixed-seed
        episodes; where it loses, the server is told (``serve_safe``; the link says it again to a restarted one).
        Callers hold :attr:`stand_in_lock`."""
        profile, gates = self.profile, self.profile.gates
        live = registry.live(profile.name) if uncovered else None
        for regime in sorted(uncovered):
            if live is None or regime not in profile.regimes or self.safe_trials.get(regime) == live.id:
                continue
            self.safe_trials[regime] = live.id
            try:
                mine, safe = safe_margin(profile, registry.load_model(live.id), regime, gates.episodes,
                                         gates.seed, gates.max_steps)
            except (SrghnError, ValueError) as exc:  # an unloadable champion: it serves as before
                log.warning("live champion %s not played in regime %s: %s", live.id, regime, exc)
                continue
            if mine <= safe:
                self.publish("adaptation", {"event": "below_safe", "champion": live.id, "regime": regime,
                                            "fitness": round(mine, 3), "safe_fitness": round(safe, 3)})
                self.link.send(m.ServeSafe(regime, live.id, f"fitness {mine:.1f} against the safe action's {safe:.1f}"))

    def _check_assigned(self, regime: str) -> None:
        """The identification thread just assigned robots to ``regime``: without a champion of its own there, the
        live one is played against the safe action, then compensated for the regime, at once (the evolution loop
        would only get to it between two generations, which on Ant can take a minute), on a registry connection
        of this thread's own."""
        with Registry.open(self.settings.state_dir) as registry, self.stand_in_lock:
            if regime not in portfolio(registry, self.profile.name):
                self._check_safe({regime}, registry)
                self._compensate({regime}, registry)

    def _adopt(self, regime: str) -> bool:
        """Make ``regime``'s stored champion live again, when another regime's is live: at most once per
        :data:`ADOPT_INTERVAL_S`, only with auto-promote on. A champion that never went live is gated again first
        (against the live champion, in its regime); one that did is rolled back to. False: not yet (rate limit)."""
        if not self.settings.auto_promote:
            return True
        live = self.registry.live(self.profile.name)
        if live is not None and live.regime == regime:
            return True
        stored = champion_for(self.registry, self.profile.name, regime)
        if stored is None or (live is not None and stored.id == live.id):
            return True
        if time.monotonic() < self.next_adopt:
            return False
        self.next_adopt = time.monotonic() + ADOPT_INTERVAL_S
        if stored.status != "retired":
            try:
                report = gate_champion(self.registry, stored.id, self.settings.actor, self.profile, regimes=(regime,))
            except SrghnError as exc:
                self.publish("adaptation", {"event": "adopt_failed", "champion": stored.id, "error": str(exc)})
                return True
            if not report.passed:
                self.publish("adaptation", {"event": "adopt_failed", "champion": stored.id,
                                            "error": f"failed gate(s) {report.failed_hard + report.failed_soft}"})
                return True
        reason = f"adaptation: the robots are in regime {regime}; its stored champion serves again"
        reply = self.link.adopt(next(self.tokens), stored.id, regime, reason, PROMOTE_TIMEOUT_S)
        ok = reply is not None and reply.ok
        self.publish("adaptation", {"event": "adopted" if ok else "adopt_failed", "champion": stored.id,
                                    "regime": regime, "from": live.id if live else None,
                                    **({} if ok else {"error": "the server did not answer" if reply is None
                                                      else reply.error})})
        return True

    def _follow_returns(self, message: m.Returns) -> None:
        """Robots whose transitions cannot be replayed (LunarLander): a Page-Hinkley test per robot on its episode
        returns (a new reference whenever another champion serves); on an alarm, the regime that explains the drop
        is found in the shadow simulator (:mod:`srghn.safety.regime_trial`) and the shadow simulator follows."""
        if not self.settings.follow_drift or identifiable(self.profile):
            return
        watch = self.return_watch.get(message.client)
        if watch is None or watch[0] != message.champion:
            if watch is None and len(self.return_watch) >= RETURN_WATCH_CLIENTS:  # the least recently added goes
                del self.return_watch[next(iter(self.return_watch))]
            watch = self.return_watch[message.client] = (message.champion, ReturnDriftDetector(), deque(maxlen=50))
        _, detector, recent = watch
        for value in message.returns:
            if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value)):
                self.publish("daemon", {"event": "bad_returns", "client": message.client, "value": repr(value)})
                return
            recent.append(float(value))
            if detector.update(value):
                since = max(1, min(len(recent), RETURN_DRIFT_WINDOW))
                self._after_return_drift(message.client, message.champion, list(recent)[-since:])
                detector.reset()
                recent.clear()

    def _after_return_drift(self, client: str, champion: str | None, observed: list[float]) -> None:
        event = {"client": client, "by": "returns", "from": self.regime.regime, "champion": champion,
                 "observed": [round(v, 2) for v in observed]}
        if champion is None:  # the safe action served: there is no champion to replay
            self.publish("drift", {**event, "to": None, "switched": False, "why": "no champion served"})
            return
        gates = self.profile.gates
        try:
            stored = {}
            for regime in self.profile.regimes:
                best = next(iter(passed_in_regime(self.registry, self.profile.name, regime)), None)
                if best is not None:
                    stored[best.id] = self.registry.load_model(best.id)
            trial = explain_returns(self.profile, self.registry.load_model(champion), np.asarray(observed), stored,
                                    gates.episodes, gates.seed, gates.max_steps)
        except (SrghnError, ValueError) as exc:  # an unknown or corrupted champion: evolution goes on
            self.publish("drift", {**event, "to": None, "switched": False, "why": str(exc)})
            return
        switched = trial.regime != self.regime.regime
        self.publish("drift", {**event, "to": trial.regime, "switched": switched, "trial": trial.to_dict()})
        if switched:
            self.regime.regime = trial.regime
            self._save_state()

    def _load_identified(self) -> None:
        """The regimes the twin identified before (the registry keeps them): the shadow simulator can run them,
        the gates gate in them, and a fit within tolerance of one of them is that regime again."""
        self.identified: dict[str, Regime] = {}
        for name, definition in self.registry.regimes(self.profile.name).items():
            try:
                regime = Regime.from_dict(definition, f"registry regime {name}")
            except ConfigError as exc:  # a damaged row costs that regime, never the daemon
                log.error("identified regime %s is unusable: %s", name, exc)
                continue
            self.identified[name] = regime
            self.profile = self.profile.with_regime(name, regime)

    def _adopt_regime(self, name: str, regime: Regime, fit: dict) -> bool:
        """A regime the twin identified becomes one of the robot's: stored in the registry (first), then the
        shadow simulator's evaluator is rebuilt with it (its workers build their environments from the profile's
        regimes), between two generations. False (and the shadow simulator stays where it is) when that fails."""
        if name in self.identified:
            return True
        profile = self.profile.with_regime(name, regime)
        driver = getattr(self, "driver", None)
        try:
            self.registry.store_regime(self.profile.name, name, regime.to_dict(), {"fit": fit})
            evaluator = None if driver is None else make_evaluator(profile, self.settings.backend,
                                                                   self.settings.workers, self.settings.ray_address)
        except SrghnError as exc:  # a locked registry, workers that cannot start: evolution goes on as it was
            self.publish("daemon", {"event": "regime_failed", "regime": name, "error": str(exc)})
            return False
        self.identified[name], self.profile = regime, profile
        if evaluator is not None:
            driver.evaluator, old = evaluator, driver.evaluator
            old.close()
        self.publish("daemon", {"event": "regime_identified", "regime": name, "changes": regime.to_dict()})
        return True

    # -- state ---------------------------------------------------------------------------------------------------

    def _load_state(self) -> dict:
        """``daemon.json`` (regime, pause, run tag), checked against the profile."""
        state = _read_json(self.home / "daemon.json")
        if state.get("regime", self.profile.regimes[0]) not in self.profile.regimes:
            raise ConfigError(f"{self.home / 'daemon.json'} names regime {state['regime']!r}, which robot "
                              f"{self.profile.name} does not have ({', '.join(self.profile.regimes)}); fix or "
                              "delete the file")
        return state

    def _saved_population(self) -> PopulationFile | None:
        """The saved population, read and checked before anything starts (``None``: there is none)."""
        path = self.home / "population.npz"
        if not path.is_file():
            return None
        loaded = load_population(path)
        strategy = loaded.strategy
        if strategy.ghn.policy != self.profile.policy:
            raise ConfigError(f"{path} holds a population for another policy architecture than profile "
                              f"{self.profile.name}'s; move it away to start afresh")
        if self.settings.population is not None and strategy.config.population != self.settings.population:
            raise ConfigError(f"the saved population in {path} has {strategy.config.population} individuals, "
                              f"--population says {self.settings.population}; omit --population to resume it, "
                              "or move the file away to start afresh")
        return loaded

    def _driver(self, evaluator, state: dict, population: PopulationFile | None = None) -> Driver:
        """The saved population resumed, else a new one as the settings say (from the factory by default)."""
        spec = self.settings.spec
        if population is not None:
            driver = Driver.resume(self.home / "population.npz", spec, evaluator, check_identity=False,
                                   loaded=population)
            self.tag = state.get("tag") or run_tag(self.profile.name, driver.strategy.seed)
            state.update(resumed=True)
            self._load_ancestry(driver)
            return driver
        driver = Driver.start(spec, evaluator)
        self.tag = run_tag(self.profile.name, self.settings.seed)
        state.update(init=spec.init)
        (self.home / "run.json").write_text(json.dumps({"robot": self.profile.name, "seed": self.settings.seed,
                                                        "seeds": spec.seeds.to_dict(),
                                                        "identity": spec.identity(),
                                                        "initial": driver.initial(),
                                                        "profile": self.profile.to_dict(),
                                                        "provenance": provenance()}, indent=2, default=str))
        self.ancestry = Ancestry.from_initial(driver.initial())
        self._record_run(driver.initial()["origin"])
        return driver

    def _load_ancestry(self, driver: Driver) -> None:
        """The run's ancestry as the last checkpoint left it (``ancestry.json``), else rebuilt from ``run.json``
        and ``metrics.jsonl`` (state written before ancestry was kept)."""
        path = self.home / "ancestry.json"
        try:
            self.ancestry = Ancestry.from_json(path.read_text())
        except (OSError, ValueError):
            self.ancestry = Ancestry.from_run(self.home / "run.json", self.home / "metrics.jsonl")
            self.ancestry.prune(int(i) for i in getattr(driver.strategy, "ids", ()))
        self._record_run(_read_json(self.home / "run.json").get("initial", {}).get("origin") or {})

    def _record_run(self, origin: dict) -> None:
        """The registry learns where this run started (a factory run's root is the factory champion)."""
        kind = str(origin.get("kind", "unknown"))
        origin_id = (factory_id(self.profile)
                     if kind == INIT_FACTORY and factory_path(self.profile).is_file() else None)
        self.registry.record_run(self.tag, self.profile.name, kind, origin_id)

    def _checkpoint(self, driver: Driver) -> None:
        # first: an ancestry newer than the population only knows more
        atomic_write(self.home / "ancestry.json", self.ancestry.to_json().encode())
        driver.save(self.home / "population.npz", {"tag": self.tag})
        self._save_state()

    def _save_state(self) -> None:
        atomic_write(self.home / "daemon.json", json.dumps(
            {"robot": self.profile.name, "tag": self.tag, "regime": self.regime.regime, "paused": self.paused},
            indent=2).encode())

    def publish(self, topic: str, data: dict) -> None:
        if topic != "generation":
            log.info("%s: %s", topic, data)
        try:
            self.on_event(topic, data)
        except Exception:  # the caller's printing must never stop evolution
            log.exception("the event callback failed on a %s event", topic)
        if self.link is not None:
            self.link.send(m.Publish(topic, data))

    def _status(self, driver: Driver, record: GenerationRecord | None) -> None:
        strategy = driver.strategy
        champion = strategy.champion()
        status = {"generation": strategy.generation, "regime": self.regime.regime, "paused": self.paused,
                  "auto_promote": self.settings.auto_promote, "population": strategy.config.population,
                  "champion_fitness": champion.fitness, **self.counts}
        if record is not None:
            self.last_record = {"best": record.best, "mean": record.mean, "mutation_rate": record.mutation_rate_mean,
                                "diversity": record.diversity, "total_env_steps": record.total_env_steps}
        status.update(self.last_record)
        self.link.send(m.Evolution(status))

    # -- the server and the simulated robot ----------------------------------------------------------------------

    def _attach_server(self) -> bool:
        """Attach to the server running on the state directory, or start one (under its supervisor) first;
        False when a signal came first."""
        state = Path(self.settings.state_dir)
        running = read_runfile(state, SERVER)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        if running is None and not self.settings.attach and not lock_is_held(state, SERVER):
            self._start_supervisor()
        while running is None and self.supervisor is None:  # a server starting (systemd's, a supervisor's)
            if self.should_exit:
                return False
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"no control server came up on {state} within {SERVER_START_TIMEOUT_S:.0f} s"
                                        " (--attach starts none: start it with `srghn-ctl serve` or its unit)")
            time.sleep(0.2)  # nothing to wait on but the run file
            running = read_runfile(state, SERVER)
        internal = running["internal"] if running else self.settings.serve_config().internal_endpoint
        self.link = ServerLink(self.ctx, internal, self.profile.name)
        welcome = self.link.start(max(1.0, deadline - time.monotonic()), self._give_up)
        if welcome is None:
            return False
        self.owns_server = not self.settings.attach and (self.supervisor is not None or bool(running.get("stoppable")))
        explicit = {r: e for r, e in self.endpoints.items() if getattr(self.settings, r) is not None}
        if any(welcome.endpoints.get(r) != e for r, e in explicit.items()):
            raise ServerConflict(f"the control server on {state} serves {welcome.endpoints}, not {explicit}; stop it "
                                 "or leave the endpoints out to use its own")
        self.endpoints = dict(welcome.endpoints)
        log.info("attached to the control server pid %d (serving %s)", welcome.pid, welcome.champion or "safe")
        return True

    def _give_up(self) -> str | None:
        """While waiting for the server: "" after a signal, the reason when the supervisor we started died."""
        if self.should_exit:
            return ""
        if self.supervisor is not None and self.supervisor.poll() is not None:
            logs_dir = Path(self.settings.state_dir) / "logs"
            return (f"the control server could not start (its supervisor exited with {self.supervisor.returncode})"
                    f": {_tail(logs_dir / 'server.log')}")
        return None

    def _start_supervisor(self) -> None:
        """The server's supervisor, detached (its own session: a Ctrl-C meant for the daemon never reaches it,
        and it outlives the daemon)."""
        path = Path(self.settings.state_dir) / SERVE_CONFIG
        atomic_write(path, self.settings.serve_config().to_json().encode())
        self.supervisor = subprocess.Popen([sys.executable, "-m", "srghn.deploy.server.supervisor", str(path),
                                            "--stoppable"],
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, start_new_session=True)
        log.info("started the server's supervisor, pid %d", self.supervisor.pid)

    def _start_robot(self) -> None:
        summary = self.home / "robot-sim.json"
        summary.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "srghn.deploy.clients.robot_sim",
               "--robot", self.profile.source or self.profile.name,
               "--control", self.endpoints["control"], "--summary-file", str(summary), "--parent-pid",
               str(os.getpid()), *self.settings.robot_args]
        if self.settings.keys:
            cmd += ["--keys", str(self.settings.keys)]
        log_file = (self.home / "robot-sim.log").open("ab")
        self.robot = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
        log_file.close()

    def _shutdown(self, driver: Driver | None, started: float) -> dict:
        stopped_by = self.stop_reason or "error"
        robot_summary = None
        if self.robot is not None:
            _stop_child(self.robot)
            robot_summary = _read_json(self.home / "robot-sim.json") or None
            drawn = robot_summary and (robot_summary.get("rewards") or {}).get("ended_at")
            if robot_summary and (robot_summary.get("episodes") or drawn):
                fault = robot_summary.get("fault") or {}
                plot_robot(robot_summary["returns"], robot_summary["ended_at"], robot_summary["finished_by"],
                           self.home / "robot.png", title=f"simulated {self.profile.name}: what it was served",
                           fault_at=fault.get("at_step"), distances=robot_summary.get("distances"),
                           rewards=robot_summary.get("rewards"))
        if driver is not None and hasattr(self, "tag"):
            try:
                self._checkpoint(driver)
            except Exception as exc:
                if not no_space(exc):
                    raise
                log.error("the last checkpoint is not written, the disk is full (%s): the previous one stands", exc)
            records = read_records(self.home / "metrics.jsonl") if (self.home / "metrics.jsonl").is_file() else []
            if records:
                plot_run(records, self.home / "fitness.png", title=f"{self.profile.name}: daemon evolution",
                         target=self.profile.solved_fitness)
        if self.link is not None:
            if self.owns_server:
                self.publish("daemon", {"event": "stopping", "reason": stopped_by})
                reply = self.link.close(m.Stop(stopped_by), wait_for=m.Stopped)
                self.server_final = reply.status if reply is not None else None
                self._wait_for_server_exit()
            else:
                self.publish("daemon", {"event": "detaching", "reason": stopped_by})
                self.link.close(m.Detach(stopped_by))
        remove_runfile(Path(self.settings.state_dir), DAEMON)
        live = self.registry.live(self.profile.name) if hasattr(self, "registry") else None
        lkg = self.registry.last_known_good(self.profile.name) if hasattr(self, "registry") else None
        summary = {
            "robot": self.profile.name, "state_dir": str(self.settings.state_dir), "stopped_by": stopped_by,
            "duration_s": round(time.time() - started, 1),
            "generation": driver.generation if driver is not None else None,
            "generations_this_run": self.counts["generations"],
            "regime": self.regime.regime if hasattr(self, "regime") else None,
            "champion_fitness": driver.champion().fitness if driver is not None else None,
            "live_fitness": live.headline_fitness if live else None, "live_regime": live.regime if live else None,
            "robots": [{"client": c.get("client"), "regime": c.get("regime"), "champion": c.get("champion"),
                        "steps": c.get("steps"), "episodes": c.get("episodes")}
                       for c in (self.server_final or {}).get("clients", [])],
            "candidates": {k: self.counts[k] for k in ("registered", "gate_passed", "gate_failed", "promoted",
                                                       "promotion_refused")},
            "live": live.id if live else None, "last_known_good": lkg.id if lkg else None,
            "serving": self.server_final, "server_stopped": self.owns_server,
            "server_restarts": self.link.restarts if self.link else 0, "robot_sim": robot_summary,
            "files": {"home": str(self.home), "metrics": str(self.home / "metrics.jsonl"),
                      "plot": str(self.home / "fitness.png"),
                      "logs": str(Path(self.settings.state_dir) / "logs"),
                      "robot_plot": str(self.home / "robot.png") if robot_summary else None},
        }
        if hasattr(self, "registry"):
            self.registry.close()
        self.ctx.destroy(linger=500)
        log.info("stopped (%s)", stopped_by)
        return summary

    def _wait_for_server_exit(self, timeout_s: float = 30.0) -> None:
        """After a Stop: wait until the supervisor (ours, or one a killed daemon left) has let go of the server."""
        if self.supervisor is not None:
            try:
                self.supervisor.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.error("the server's supervisor did not exit within %.0f s", timeout_s)
            return
        deadline = time.monotonic() + timeout_s
        while read_runfile(Path(self.settings.state_dir), SERVER) is not None and time.monotonic() < deadline:
            time.sleep(0.1)  # not our child: its lock is all there is to watch


def _stop_child(proc: subprocess.Popen, timeout_s: float = 15.0) -> int | None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _last_figures(metrics: Path) -> dict:
    """The figures ``status`` shows, from the last record of a ``metrics.jsonl`` ({} when there is none)."""
    try:
        with metrics.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 65536))
            lines = fh.read().splitlines()
        record = json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}
    return {"best": record.get("best"), "mean": record.get("mean"), "mutation_rate": record.get("mutation_rate_mean"),
            "diversity": record.get("diversity"), "total_env_steps": record.get("total_env_steps")}


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _append_lines(path: Path, lines: list[str]) -> None:
    """Append ``lines`` to ``path`` whole or not at all (a full disk leaves no torn record behind)."""
    if not lines:
        return
    data = memoryview("".join(f"{line}\n" for line in lines).encode())
    with path.open("ab", buffering=0) as fh:
        size = fh.seek(0, os.SEEK_END)
        try:
            while data:
                data = data[fh.write(data):]
        except OSError:
            with contextlib.suppress(OSError):
                fh.truncate(size)
            raise
