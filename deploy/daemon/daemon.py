"""The daemon behind ``srghn-ctl run``: evolve, gate and promote, attached to a control server that serves.

Process model (docs/architecture.md, docs/daemon.md)::

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

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import zmq

from srghn import ConfigError, SrghnError
from srghn.controller.checkpoint import PopulationFile
from srghn.deploy.daemon.children import Children
from srghn.deploy.daemon.commands import OperatorCommands
from srghn.deploy.daemon.link import ServerLink
from srghn.deploy.daemon.publishing import Publisher
from srghn.deploy.daemon.regime_following import RegimeFollowing, load_identified
from srghn.deploy.daemon.release import Release
from srghn.deploy.daemon.repertoire_search import RepertoireSearch, immigrate
from srghn.deploy.daemon.return_watch import ReturnWatch
from srghn.deploy.daemon.run_files import RunFiles
from srghn.deploy.daemon.settings import DaemonSettings
from srghn.deploy.daemon.shared import SharedState
from srghn.deploy.daemon.stand_ins import StandIns
from srghn.deploy.process import logs
from srghn.deploy.process.signals import ExitFlag
from srghn.deploy.process.state import (
    DAEMON,
    has_space,
    hold_lock,
    no_space,
    remove_runfile,
    secure_state_dir,
    write_runfile,
)
from srghn.deploy.registry.store import Registry
from srghn.deploy.server import placement
from srghn.deploy.wire import messages as m
from srghn.deploy.wire.keys import CurveServer
from srghn.deploy.wire.topics import Topic
from srghn.sim.backends import make_evaluator
from srghn.sim.driver import INIT_FACTORY, Driver
from srghn.sim.records import GenerationRecord
from srghn.sim.repertoire import load_repertoire, repertoire_path
from srghn.sim.twin_search import SearchSettings

log = logging.getLogger("srghn.daemon")

CHECKPOINT_INTERVAL_S = 5.0


class Daemon:
    """The life cycle: start-up, the evolution loop's skeleton, an ordered shutdown. Each other job is a
    collaborator's: :class:`~srghn.deploy.daemon.shared.SharedState` (what both threads touch),
    :class:`~srghn.deploy.daemon.release.Release`, :class:`~srghn.deploy.daemon.regime_following.RegimeFollowing`
    with its :class:`~srghn.deploy.daemon.stand_ins.StandIns`, :class:`~srghn.deploy.daemon.return_watch.ReturnWatch`,
    :class:`~srghn.deploy.daemon.run_files.RunFiles`, :class:`~srghn.deploy.daemon.children.Children`,
    :class:`~srghn.deploy.daemon.commands.OperatorCommands` and :class:`~srghn.deploy.daemon.publishing.Publisher`."""

    def __init__(self, settings: DaemonSettings, on_event: Callable[[str, dict], None] | None = None) -> None:
        self.settings = settings
        CurveServer.for_endpoints(settings.keys, settings.endpoints())  # refuse exposed sockets without keys
        self.home = settings.home
        self.should_exit = ExitFlag()
        self.stop_reason: str | None = None
        self.shared = SharedState(settings.profile)
        self.publisher = Publisher(on_event)
        self.publish = self.publisher.publish
        self.files = RunFiles(settings)
        self.children = Children(settings, self.should_exit)
        self.ctx: zmq.Context | None = None
        self.registry: Registry | None = None
        self.driver: Driver | None = None
        # made once the registry is open and the server attached (compose)
        self.release: Release | None = None
        self.stand_ins: StandIns | None = None
        self.following: RegimeFollowing | None = None
        self.returns: ReturnWatch | None = None
        self.commands: OperatorCommands | None = None
        self.repertoire: RepertoireSearch | None = None
        """Answers regimes without a champion from the robot's repertoire (None: the robot ships none)."""

    # -- start-up ------------------------------------------------------------------------------------------------

    def run(self) -> dict:
        """Run until the generation or time bound, or a signal; shut down in order and return the summary."""
        with self.should_exit.captured():
            return self._run()

    def _run(self) -> dict:
        state = secure_state_dir(Path(self.settings.state_dir))
        logs.configure(state, "daemon", stderr_level=logging.WARNING)  # the CLI prints the events themselves
        self.home.mkdir(parents=True, exist_ok=True)
        started = time.time()
        torch.set_num_threads(1)  # evolution is one thread at low priority, and the same on every run
        with hold_lock(state, DAEMON):
            self.ctx = zmq.Context()
            try:
                saved, population = self.load(Registry.open(self.settings.state_dir, create=True))
                link = self.children.attach(self.ctx)
                if link is not None:  # None: a signal came while waiting for the server
                    self._start(link, saved, population, started)
                    self._evolve(started)
                self._finished(started)
            except Exception as exc:
                self.stop_reason = self.stop_reason or "error"
                log.error("the daemon stops on an error: %s", exc, exc_info=not isinstance(exc, SrghnError))
                raise
            finally:
                self.should_exit.set("shutdown")  # a signal during shutdown changes nothing any more
                if self.following is not None:
                    self.following.close()
                if self.repertoire is not None:
                    self.repertoire.close()
                if self.driver is not None:
                    self.driver.evaluator.close()  # the evaluator of the latest regimes (see adopt_regime)
                summary = self._shutdown(started)
        return summary

    def load(self, registry: Registry) -> tuple[dict, PopulationFile | None]:
        """On the open registry: the identified regimes, ``daemon.json`` and the saved population, read and checked
        before anything starts; evolution's regime and pause as they say."""
        self.registry = registry
        load_identified(registry, self.shared)
        settings, profile = self.settings, self.shared.profile
        if settings.regime is not None and settings.regime not in profile.regimes:
            raise ConfigError(f"--regime {settings.regime!r} is not a regime of {profile.name}: "
                              f"known: {', '.join(profile.regimes)}")
        saved = self.files.load_state(self.shared)
        population = self.files.saved_population(self.shared)
        self.shared.set_regime(settings.regime or saved.get("regime") or profile.regimes[0])
        self.shared.set_paused(bool(saved.get("paused", False)))
        return saved, population

    def compose(self, link: ServerLink | None) -> None:
        """The collaborators, on the open registry and the link to the server."""
        settings, shared, publisher, files = self.settings, self.shared, self.publisher, self.files
        publisher.link = link
        self.release = Release(settings, shared, self.registry, publisher, link, files)
        self.stand_ins = StandIns(shared, self.release, publisher, link)
        self.following = RegimeFollowing(settings, shared, self.registry, publisher, self.release, files,
                                         self.stand_ins)
        self.returns = ReturnWatch(settings, shared, self.registry, publisher, files)
        self.commands = OperatorCommands(shared, publisher, files)
        if link is not None and repertoire_path(shared.profile).is_file():
            self.repertoire = RepertoireSearch(
                load_repertoire(shared.profile), settings.state_dir, shared, self.release, self.publish, link.send,
                SearchSettings(workers=settings.workers, backend=settings.backend))
            self.following.responders.append(self.repertoire)
            link.on_returns = self.repertoire.returns  # at once: a generation in flight holds the loop's inbox

    def _start(self, link: ServerLink, saved: dict, population: PopulationFile | None, started: float) -> None:
        settings = self.settings
        self.compose(link)
        self.following.start(link)
        write_runfile(Path(settings.state_dir), DAEMON, {"pid": os.getpid(), "robot": settings.profile.name,
                                                         "started": started})
        if settings.sim_robot:
            self.children.start_robot()
        # Evolution yields the cores to the live server and the robot: lower priority from here on, and off the
        # serving thread's CPU where it has one
        os.nice(5)
        if settings.serve_cpu is not None:
            placement.keep_off(settings.serve_cpu)
        profile = self.shared.profile  # the adaptation thread may add a regime meanwhile: the loop adds it later
        evaluator = make_evaluator(profile, settings.backend, settings.workers, settings.ray_address)
        try:
            self.driver = self.files.driver(evaluator, saved, self.registry, self.shared, population)
        except BaseException:
            evaluator.close()
            raise
        self.following.attach(self.driver, set(profile.regimes))
        if not self.should_exit:
            self.release.offer_factory(nominal=saved.get("init") == INIT_FACTORY)
        self.publish(Topic.DAEMON, {"event": "resumed" if saved.get("resumed") else "started",
                                    "generation": self.driver.generation, "paused": self.shared.paused,
                                    "regime": self.shared.regime, "endpoints": self.children.endpoints,
                                    "init": saved.get("init")})
        self.publisher.last_record = self.files.last_figures()
        self._status(None)  # counters and figures current from the start

    # -- the evolution loop ------------------------------------------------------------------------------------

    def _evolve(self, started: float) -> None:
        driver = self.driver
        records = driver.run(None, self.shared, should_stop=self._stopping)
        last_save = time.monotonic()
        while True:
            self._handle_server_messages(wait_s=0.0)
            while self.shared.paused and not self._finished(started):
                self._status(None)
                self._handle_server_messages(wait_s=1.0)
            while self.shared.waiting and not self._finished(started):  # a damaged robot's answer first
                self._handle_server_messages(wait_s=0.2)
            if self._finished(started):
                return
            strategy = self.shared.take_population()
            if strategy is not None:  # a responder's population (regime_following): evolution goes on from it
                driver.strategy = strategy
            for repertoire, uids in self.shared.take_immigrants():  # the repertoire's best for the robots' regime
                ids = immigrate(driver.strategy, repertoire, uids)
                self.publish(Topic.ADAPTATION, {"event": "immigrants", "elites": len(uids),
                                                "ids": None if ids is None else ids.tolist()})
            record = next(records, None)
            if record is None:  # a signal, seen between two generations
                return
            generations = self.shared.count("generations")
            line = self.files.record(record, driver, generations)
            last_save = self._save(started, last_save)
            self.publish(Topic.GENERATION, json.loads(line))
            self._status(record)
            if (generations % self.settings.gate_every == 0 and not self.should_exit
                    and record.regime == self.shared.regime):  # not a generation of a regime the robots just left
                self._release(started, record)

    def _save(self, started: float, last_save: float) -> float:
        """The new records appended, and a checkpoint when one is due; when the last one was written."""
        while True:  # a full disk pauses evolution here, between two generations, until there is space
            try:
                self.files.flush()
                if time.monotonic() - last_save > CHECKPOINT_INTERVAL_S:
                    self.files.checkpoint(self.driver, self.shared)
                    return time.monotonic()
                return last_save
            except Exception as exc:
                if not no_space(exc) or not self._wait_for_space(started, exc):
                    raise

    def _release(self, started: float, record: GenerationRecord) -> None:
        try:
            self.release.offer_evolved(self.driver.champion(), record)
        except Exception as exc:  # a candidate not stored for want of space: the next release tries again
            if not no_space(exc) or not self._wait_for_space(started, exc):
                raise
        self._status(record)  # the release's counters now, not a generation later

    def _wait_for_space(self, started: float, exc: BaseException) -> bool:
        """The disk is full: evolution and checkpoints pause, the server link is kept answered, until there is
        space again (True) or the daemon is told to stop (False: the caller gives up its write)."""
        log.error("the disk is full (%s): evolution and checkpoints pause until there is space; serving goes on", exc)
        self.publish(Topic.DAEMON, {"event": "disk_full", "error": str(exc)})
        paused = time.monotonic()
        while not has_space(self.home):
            if self._finished(started):
                return False
            self._status(None)
            self._handle_server_messages(wait_s=1.0)
        log.info("space again after %.0f s: evolution resumes", time.monotonic() - paused)
        self.publish(Topic.DAEMON, {"event": "space_again", "paused_s": round(time.monotonic() - paused, 1)})
        return True

    def _handle_server_messages(self, wait_s: float) -> None:
        """Operators' commands (pause, resume, regime), and what the robots' transitions and returns showed."""
        messages = self.children.link.take(wait_s)
        self.following.follow()
        for message in messages:
            if isinstance(message, m.Returns):
                self.returns.follow(message)
        for message in messages:
            if isinstance(message, m.Command):
                self.commands.apply(message)

    def _status(self, record: GenerationRecord | None) -> None:
        self.publisher.status(self.driver, record, self.shared, self.settings.auto_promote)

    def _stopping(self) -> bool:
        return bool(self.should_exit)

    def _finished(self, started: float) -> bool:
        """Whether to stop now (a signal, or a bound of this run); records why."""
        s = self.settings
        if self.should_exit:
            self.stop_reason = self.stop_reason or self.should_exit.reason
        elif ((s.generations is not None and self.shared.counts()["generations"] >= s.generations)
              or (s.duration_s is not None and time.time() - started >= s.duration_s)):
            self.stop_reason = self.stop_reason or "bound"
        return self.stop_reason is not None

    # -- shutdown ------------------------------------------------------------------------------------------------

    def _shutdown(self, started: float) -> dict:
        stopped_by = self.stop_reason or "error"
        children = self.children
        robot_summary = children.stop_robot()
        if self.driver is not None:
            self.files.last_checkpoint(self.driver, self.shared)
        if children.link is not None:
            self.publish(Topic.DAEMON, {"event": "stopping" if children.owns_server else "detaching",
                                        "reason": stopped_by})
            children.let_go(stopped_by)
        remove_runfile(Path(self.settings.state_dir), DAEMON)
        summary = self._summary(stopped_by, started, robot_summary)
        if self.registry is not None:
            self.registry.close()
        if self.ctx is not None:
            self.ctx.destroy(linger=500)
        log.info("stopped (%s)", stopped_by)
        return summary

    def _summary(self, stopped_by: str, started: float, robot_summary: dict | None) -> dict:
        name, driver, children, counts = self.settings.profile.name, self.driver, self.children, self.shared.counts()
        live = self.registry.live(name) if self.registry is not None else None
        lkg = self.registry.last_known_good(name) if self.registry is not None else None
        return {
            "robot": name, "state_dir": str(self.settings.state_dir), "stopped_by": stopped_by,
            "duration_s": round(time.time() - started, 1),
            "generation": driver.generation if driver is not None else None,
            "generations_this_run": counts["generations"], "regime": self.shared.regime,
            "champion_fitness": driver.champion().fitness if driver is not None else None,
            "live_fitness": live.headline_fitness if live else None, "live_regime": live.regime if live else None,
            "robots": [{"client": c.get("client"), "regime": c.get("regime"), "champion": c.get("champion"),
                        "steps": c.get("steps"), "episodes": c.get("episodes")}
                       for c in (children.server_final or {}).get("clients", [])],
            "candidates": {k: counts[k] for k in ("registered", "gate_passed", "gate_failed", "promoted",
                                                  "promotion_refused")},
            "live": live.id if live else None, "last_known_good": lkg.id if lkg else None,
            "serving": children.server_final, "server_stopped": children.owns_server,
            "server_restarts": children.link.restarts if children.link else 0, "robot_sim": robot_summary,
            "files": {"home": str(self.home), "metrics": str(self.files.metrics),
                      "plot": str(self.home / "fitness.png"),
                      "logs": str(Path(self.settings.state_dir) / "logs"),
                      "robot_plot": str(self.home / "robot.png") if robot_summary else None},
        }
