"""The daemon behind ``srghn-ctl run``: evolve, gate, promote, and serve, until told to stop.

Process model (design.md §4)::

    srghn-ctl run (this module, torch)        control server (deploy/server.py, ONNX Runtime, no torch)
      evolution loop  ── internal PAIR ──►      control ROUTER  ◄── robots (act / step)
      gating, registering                      admin ROUTER    ◄── srghn-ctl, tools
      shadow workers (nice +10, sandboxed)     telemetry PUB   ──► srghn-ctl watch, dashboards
      [simulated robot]  ── control socket ──►

The server is started first and serves the registry's live champion (or the safe action) from its first tick;
evolution then runs generation after generation at lower priority. Every ``gate_every`` generations a new,
better champion is exported, registered, gated in the regime the shadow simulator is in, and, with auto-promote
on, promoted through the server, which loads it and swaps it in between two requests. Operators pause, resume
and switch the shadow regime through the admin socket; the loop applies those at the next generation boundary.

State lives in the state directory and survives restarts: the registry, and ``daemon/<robot>/`` with the
population checkpoint, ``metrics.jsonl`` (appended across runs), ``fitness.png`` and ``daemon.json`` (regime,
pause). A restarted daemon resumes the population and serves the last live champion from its first request.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from srghn import ConfigError, SrghnError
from srghn.deploy.champions import gate_champion, register_policy, run_tag
from srghn.deploy.registry import Registry
from srghn.deploy.security import CurveKeys
from srghn.deploy.server import ServeConfig
from srghn.deploy.state import LOCKFILE, RUNFILE
from srghn.sim.backends import make_evaluator
from srghn.sim.driver import INIT_FACTORY, INIT_SCRATCH, Driver, RunSpec
from srghn.sim.factory import factory_path, factory_sha, load_factory
from srghn.sim.identify import identifiable, identify
from srghn.sim.plots import plot_robot, plot_run
from srghn.sim.profiles import RobotProfile
from srghn.sim.records import GenerationRecord, read_records
from srghn.sim.run import check_run_flags, provenance

IPC_PATH_MAX = 100
"""ipc:// paths longer than this do not fit a Unix socket address (108 bytes on Linux, 104 on macOS)."""
SERVER_START_TIMEOUT_S = 60.0
CHECKPOINT_INTERVAL_S = 5.0


class Stop(Exception):
    """Raised out of the evolution loop by SIGINT / SIGTERM (outside critical sections)."""


@dataclass(frozen=True)
class DaemonSettings:
    """One ``srghn-ctl run``. ``None`` means: the profile's default or the state directory's default."""

    profile: RobotProfile
    state_dir: Path
    seed: int = 0
    population: int | None = None
    episodes: int | None = None
    generations: int | None = None
    """Stop after this many generations of this run (None: run until stopped)."""
    duration_s: float | None = None
    """Stop after this many seconds (checked between generations)."""
    auto_promote: bool = True
    gate_every: int = 5
    """Consider the champion for release every this many generations."""
    regime: str | None = None
    """Shadow regime to start in (None: where the last run left off, else nominal)."""
    control: str | None = None
    admin: str | None = None
    telemetry: str | None = None
    keys: Path | None = None
    """CURVE key directory (``srghn-ctl keys``); required when an endpoint is not local."""
    backend: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    follow_drift: bool = True
    """Switch the shadow simulator to the regime the robot's reported transitions show (where identifiable)."""
    sim_robot: bool = False
    """Also start ``srghn-ctl robot-sim`` against the control socket."""
    robot_args: tuple[str, ...] = ()
    """Extra arguments for the simulated robot (e.g. ``--fault inverted --fault-at 3000``)."""
    actor: str = "srghn-daemon"
    init: str | None = None
    """Where a state directory without a population starts: ``factory`` (grown from the robot's factory GHN),
    ``scratch``, or a path (see :class:`~srghn.sim.driver.RunSpec`). ``None``: the factory if the robot has one."""

    def __post_init__(self) -> None:
        check_run_flags(self, ("generations", "population", "episodes", "gate_every"))
        if self.duration_s is not None and not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ConfigError(f"--duration must be a positive number of seconds, got {self.duration_s}")
        if self.regime is not None and self.regime not in self.profile.regimes:
            raise ConfigError(f"--regime {self.regime!r} is not a regime of {self.profile.name}; "
                              f"known: {', '.join(self.profile.regimes)}")

    @property
    def home(self) -> Path:
        return Path(self.state_dir) / "daemon" / self.profile.name

    @property
    def spec(self) -> RunSpec:
        """The run a state directory without a population starts."""
        init = self.init or (INIT_FACTORY if factory_path(self.profile).is_file() else INIT_SCRATCH)
        return RunSpec(self.profile, "srghn", self.seed, self.population, self.episodes, init)

    def endpoints(self) -> dict[str, str]:
        """The three public endpoints: as given, else ``ipc://`` sockets in the state directory."""
        chosen = {}
        for role in ("control", "admin", "telemetry"):
            endpoint = getattr(self, role) or f"ipc://{Path(self.state_dir).resolve()}/{role}.sock"
            if endpoint.startswith("ipc://") and len(endpoint) - len("ipc://") > IPC_PATH_MAX:
                raise ConfigError(f"the {role} socket path {endpoint[6:]} is longer than {IPC_PATH_MAX} characters, "
                                  f"too long for a Unix socket; pass --{role} tcp://127.0.0.1:PORT or a shorter "
                                  "ipc:// path, or use a shorter --state-dir")
            if not endpoint.startswith(("ipc://", "tcp://")):
                raise ConfigError(f"--{role} {endpoint!r}: use ipc://PATH or tcp://HOST:PORT")
            chosen[role] = endpoint
        if len(set(chosen.values())) < 3:
            raise ConfigError(f"control, admin and telemetry need three different endpoints, got {chosen}")
        return chosen


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
        CurveKeys.for_endpoints(settings.keys, self.endpoints.values())  # refuse exposed sockets without keys
        self.home = settings.home
        self.stop_reason: str | None = None
        self.critical = False
        self.paused = False
        self.counts = {"generations": 0, "registered": 0, "gate_passed": 0, "gate_failed": 0, "promoted": 0,
                       "promotion_refused": 0, "release_failed": 0}
        self.tokens = itertools.count(1)
        self.pending_commands: list[dict] = []
        self.last_candidate: tuple[str, float, str] | None = None
        """(id, fitness, regime) of the last champion registered: the next must be new and better (or of a new
        regime)."""
        self.server: subprocess.Popen | None = None
        self.robot: subprocess.Popen | None = None
        self.server_final: dict | None = None
        self.restarts = 0

    # -- signals and critical sections ---------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_reason = signal.Signals(signum).name
        if not self.critical:
            raise Stop(self.stop_reason)

    @contextlib.contextmanager
    def _critical(self) -> Iterator[None]:
        """Signals that arrive inside are honoured at its end, so a write is never cut in half."""
        self.critical = True
        try:
            yield
        finally:
            self.critical = False
        if self.stop_reason:
            raise Stop(self.stop_reason)

    # -- run -----------------------------------------------------------------------------------------------------

    def run(self) -> dict:
        """Run until the generation or time bound, or a signal; shut down cleanly and return the summary."""
        self.home.mkdir(parents=True, exist_ok=True)
        started = time.time()
        with self._lock(), tempfile.TemporaryDirectory(prefix="srghn-") as tmp:
            previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
            self.ctx = zmq.Context()
            self.internal = self.ctx.socket(zmq.PAIR)
            self.internal.setsockopt(zmq.LINGER, 1000)
            self.internal.bind(f"ipc://{tmp}/internal.sock")
            evaluator = driver = None
            try:
                self.registry = Registry.open(self.settings.state_dir, create=True)
                state = self._load_state()
                self.regime = _Regime(self.settings.regime or state.get("regime") or self.profile.regimes[0])
                self.paused = bool(state.get("paused", False))
                self._start_server(tmp)
                self._write_runfile(started)
                if self.settings.sim_robot:
                    self._start_robot()
                # Evolution yields the cores to the live server and the robot: lower priority from here on.
                os.nice(5)
                evaluator = make_evaluator(self.profile, self.settings.backend, self.settings.workers,
                                           self.settings.ray_address)
                driver = self._driver(evaluator, state)
                if state.get("init") == INIT_FACTORY:
                    self._release_factory()
                self.publish("daemon", {"event": "resumed" if state.get("resumed") else "started",
                                        "generation": driver.generation, "paused": self.paused,
                                        "regime": self.regime.regime, "endpoints": self.endpoints,
                                        "init": state.get("init")})
                self._evolve(driver, started)
            except Stop:
                pass
            finally:
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish the shutdown whatever else arrives
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                try:
                    if evaluator is not None:
                        evaluator.close()
                    summary = self._shutdown(driver, started)
                finally:
                    for signum, handler in previous.items():
                        signal.signal(signum, handler)
        return summary

    def _evolve(self, driver: Driver, started: float) -> None:
        settings = self.settings
        records = driver.run(None, self.regime)
        last_save = time.monotonic()
        metrics = self.home / "metrics.jsonl"
        while True:
            self._supervise()
            self._handle_commands(block=False)
            while self.paused and not self._bound_reached(started):
                self._supervise()
                self._status(driver, None)
                self._handle_commands(block=True)
            if self._bound_reached(started):
                self.stop_reason = self.stop_reason or "bound"
                return
            record = next(records)
            self.counts["generations"] += 1
            line = record.to_json()
            with self._critical():
                with metrics.open("a") as fh:
                    fh.write(line + "\n")
                if time.monotonic() - last_save > CHECKPOINT_INTERVAL_S:
                    self._checkpoint(driver)
                    last_save = time.monotonic()
            self.publish("generation", json.loads(line))
            self._status(driver, record)
            if self.counts["generations"] % settings.gate_every == 0:
                self._release(driver, record)

    def _bound_reached(self, started: float) -> bool:
        s = self.settings
        return ((s.generations is not None and self.counts["generations"] >= s.generations)
                or (s.duration_s is not None and time.time() - started >= s.duration_s))

    # -- release: register, gate, promote ------------------------------------------------------------------------

    def _release(self, driver: Driver, record: GenerationRecord) -> None:
        """Register the champion if it is new and better than the last candidate of this regime, gate it in the
        current regime, and promote it through the server when it passes and auto-promote is on."""
        champion = driver.champion()
        regime = record.regime
        if champion.fitness is None or not math.isfinite(champion.fitness):
            return
        key = f"{self.tag}-i{champion.id}"
        if self.last_candidate is not None:
            last_id, last_fitness, last_regime = self.last_candidate
            if last_id == key or (last_regime == regime and champion.fitness <= last_fitness):
                return
        try:
            with self._critical():
                registered, report = self._register_and_gate(champion, key, record)
        except SrghnError as exc:  # e.g. an export that fails its parity check: evolution goes on
            self.last_candidate = (key, float(champion.fitness), regime)
            self.counts["release_failed"] += 1
            self.publish("daemon", {"event": "release_failed", "champion": key, "error": str(exc)})
            return
        self.counts["gate_passed" if report.passed else "gate_failed"] += 1
        self.publish("gate", {"champion": registered.id, "generation": record.generation, "regime": regime,
                              "fitness": champion.fitness, "passed": report.passed,
                              "failed_hard": report.failed_hard, "failed_soft": report.failed_soft,
                              "incumbent": report.incumbent_id})
        if report.passed and self.settings.auto_promote:
            self._promote(registered.id, f"auto: passed the gates in regime {regime} at generation "
                                         f"{record.generation} (fitness {champion.fitness:.1f})")

    def _release_factory(self) -> None:
        """A robot that has never had a live champion gets its factory champion at once: registered, gated in the
        shadow regime and promoted (with auto-promote), before the first generation is evolved."""
        if self.registry.live(self.profile.name) is not None:
            return
        factory = load_factory(self.profile)
        key = f"{self.profile.name}-factory-{factory_sha(self.profile)}"
        try:
            with self._critical():
                if not self.registry.exists(key):
                    register_policy(self.registry, self.profile, factory.params, champion_id=key, norm=factory.norm,
                                    regime=self.profile.regimes[0], run_dir=str(factory_path(self.profile)),
                                    fitness={"standard_return": factory.meta.get("factory", {}).get(
                                        "standard_return", {}).get("mean")},
                                    meta={"source": "factory", "factory": factory.meta.get("factory")},
                                    actor=self.settings.actor)
                    self.counts["registered"] += 1
                report = gate_champion(self.registry, key, self.settings.actor, self.profile,
                                       regimes=(self.regime.regime,))
        except SrghnError as exc:
            self.counts["release_failed"] += 1
            self.publish("daemon", {"event": "release_failed", "champion": key, "error": str(exc)})
            return
        self.counts["gate_passed" if report.passed else "gate_failed"] += 1
        self.publish("gate", {"champion": key, "generation": None, "regime": self.regime.regime,
                              "passed": report.passed, "failed_hard": report.failed_hard,
                              "failed_soft": report.failed_soft, "incumbent": report.incumbent_id})
        if report.passed and self.settings.auto_promote:
            self._promote(key, f"auto: the factory champion passed the gates in regime {self.regime.regime}")

    def _register_and_gate(self, champion, key: str, record: GenerationRecord):
        registered = register_policy(
            self.registry, self.profile, champion.params, champion_id=key, norm=champion.norm,
            parents=(f"{self.tag}-i{champion.parent_id}",) if champion.parent_id >= 0 else (),
            generation=record.generation, regime=record.regime, seed=self.settings.seed, run_dir=str(self.home),
            fitness={"fitness": float(champion.fitness), "population_best": record.best,
                     "population_mean": record.mean},
            meta={"individual": int(champion.id), "run_tag": self.tag, "source": "daemon"},
            actor=self.settings.actor)
        self.last_candidate = (key, float(champion.fitness), record.regime)
        self.counts["registered"] += 1
        report = gate_champion(self.registry, registered.id, self.settings.actor, self.profile,
                               regimes=(record.regime,))
        return registered, report

    def _promote(self, champion_id: str, reason: str) -> None:
        token = next(self.tokens)
        sent = self._send({"op": "promote", "id": champion_id, "token": token, "actor": self.settings.actor,
                           "reason": reason})
        reply = None
        deadline = time.monotonic() + 60.0
        while sent and reply is None and time.monotonic() < deadline and self.server.poll() is None:
            reply = self._wait_for(lambda m: m.get("op") == "promoted" and m.get("token") == token, 1.0)
        if reply is None or not reply["ok"]:
            self.counts["promotion_refused"] += 1
            why = "the server did not answer" if reply is None else reply["error"]
            self.publish("daemon", {"event": "promotion_failed", "champion": champion_id, "error": why})
        else:
            self.counts["promoted"] += 1

    # -- commands from the admin socket --------------------------------------------------------------------------

    def _wait_for(self, match: Callable[[dict], bool], timeout_s: float) -> dict | None:
        """Read internal messages until one matches (others are queued as commands); None when none is left
        after ``timeout_s`` (0: just drain what has arrived)."""
        deadline = time.monotonic() + timeout_s
        while self.internal.poll(int(max(0.0, deadline - time.monotonic()) * 1000)):
            message = self.internal.recv_json()
            if match(message):
                return message
            self.pending_commands.append(message)
        return None

    def _handle_commands(self, block: bool) -> None:
        """Apply what arrived from the server (with ``block``, wait up to a second if nothing has)."""
        self._wait_for(lambda m: False, 1.0 if block and not self.pending_commands else 0.0)
        commands, self.pending_commands = self.pending_commands, []
        transitions = [m for m in commands if m.get("op") == "transitions"]
        if transitions:
            self._follow_drift(transitions[-1])  # only the latest evidence counts
        for message in commands:
            if message.get("op") != "command":
                continue
            cmd, actor = message.get("cmd"), message.get("actor", "admin")
            if cmd == "pause":
                self.paused = True
            elif cmd == "resume":
                self.paused = False
            elif cmd == "regime" and message.get("regime") in self.profile.regimes:
                self.regime.regime = message["regime"]
                self.last_candidate = None
            else:
                continue
            self._save_state()
            self.publish("evolution", {"event": cmd, "regime": self.regime.regime, "paused": self.paused,
                                       "actor": actor})

    def _follow_drift(self, message: dict) -> None:
        """Replay a robot's transitions in every regime's simulator; switch the shadow simulator to the regime
        that explains them clearly better than the current one."""
        if not self.settings.follow_drift or not identifiable(self.profile):
            return
        try:
            result = identify(self.profile, np.asarray(message["obs"]), np.asarray(message["actions"]),
                              np.asarray(message["next_obs"]), current=self.regime.regime)
        except (KeyError, ValueError) as exc:
            self.publish("daemon", {"event": "bad_transitions", "error": str(exc)})
            return
        errors = result.errors
        if not result.known:  # a fault no regime declares: the twin's parameters, for the registry to store
            self.publish("daemon", {"event": "undeclared_regime", "client": message.get("client"),
                                    "regime": result.regime, "changes": result.definition.to_dict(),
                                    "residual": float(f"{result.residual:.3g}")})
            return
        found = result.regime if result.regime != self.regime.regime else None
        if found is None:
            return
        previous, self.regime.regime = self.regime.regime, found
        self.last_candidate = None
        self._save_state()
        self.publish("drift", {"client": message.get("client"), "from": previous, "to": found,
                               "transitions": len(message["obs"]),
                               "errors": {k: float(f"{v:.3g}") for k, v in errors.items()}})

    # -- state ---------------------------------------------------------------------------------------------------

    def _load_state(self) -> dict:
        """``daemon.json`` (regime, pause, run tag), checked against the profile."""
        state = _read_json(self.home / "daemon.json")
        if state.get("regime", self.profile.regimes[0]) not in self.profile.regimes:
            raise ConfigError(f"{self.home / 'daemon.json'} names regime {state['regime']!r}, which robot "
                              f"{self.profile.name} does not have ({', '.join(self.profile.regimes)}); fix or "
                              "delete the file")
        return state

    def _driver(self, evaluator, state: dict) -> Driver:
        """The saved population resumed, else a new one as the settings say (from the factory by default)."""
        path = self.home / "population.npz"
        spec = self.settings.spec
        if path.is_file():
            driver = Driver.resume(path, spec, evaluator, check_identity=False)
            strategy = driver.strategy
            if strategy.ghn.policy != self.profile.policy:
                raise ConfigError(f"{path} holds a population for another policy architecture than profile "
                                  f"{self.profile.name}'s; move it away to start afresh")
            if self.settings.population is not None and strategy.config.population != self.settings.population:
                raise ConfigError(f"the saved population in {path} has {strategy.config.population} individuals, "
                                  f"--population says {self.settings.population}; omit --population to resume it, "
                                  "or move the file away to start afresh")
            self.tag = state.get("tag") or run_tag(self.profile.name, strategy.seed)
            state.update(resumed=True)
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
        return driver

    def _checkpoint(self, driver: Driver) -> None:
        driver.save(self.home / "population.npz", {"tag": self.tag})
        self._save_state()

    def _save_state(self) -> None:
        from srghn.controller.files import atomic_write

        atomic_write(self.home / "daemon.json", json.dumps(
            {"robot": self.profile.name, "tag": self.tag, "regime": self.regime.regime, "paused": self.paused},
            indent=2).encode())

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        Path(self.settings.state_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(self.settings.state_dir) / LOCKFILE, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise ConfigError(f"another daemon already runs on state directory {self.settings.state_dir}; "
                                  "talk to it with `srghn-ctl status`, or stop it first") from None
            yield

    def _write_runfile(self, started: float) -> None:
        from srghn.controller.files import atomic_write

        atomic_write(Path(self.settings.state_dir) / RUNFILE, json.dumps({
            "pid": os.getpid(), "robot": self.profile.name, "started": started, **self.endpoints,
            "keys": str(self.settings.keys) if self.settings.keys else None}, indent=2).encode())

    def publish(self, topic: str, data: dict) -> None:
        self.on_event(topic, data)
        self._send({"op": "publish", "topic": topic, "data": data})

    def _send(self, message: dict) -> bool:
        """Send to the server without ever blocking: a PAIR socket blocks while its peer is gone (a crashed
        server, until it is restarted), and telemetry is not worth stalling evolution for."""
        try:
            self.internal.send_json(message, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def _status(self, driver: Driver, record: GenerationRecord | None) -> None:
        strategy = driver.strategy
        champion = strategy.champion()
        status = {"generation": strategy.generation, "regime": self.regime.regime, "paused": self.paused,
                  "auto_promote": self.settings.auto_promote, "population": strategy.config.population,
                  "champion_fitness": champion.fitness, **self.counts}
        if record is not None:
            status.update(best=record.best, mean=record.mean, mutation_rate=record.mutation_rate_mean,
                          diversity=record.diversity, total_env_steps=record.total_env_steps)
        self._send({"op": "evolution", "status": status})

    # -- child processes -----------------------------------------------------------------------------------------

    def _supervise(self) -> None:
        """Restart the control server if it died: robots get answers again within a server start-up."""
        if self.server is None or self.server.poll() is None:
            return
        code = self.server.returncode
        self.restarts += 1
        self.on_event("daemon", {"event": "server_restart", "exit_code": code, "restarts": self.restarts})
        self._start_server(self.tmp)
        self.publish("daemon", {"event": "server_restarted", "exit_code": code, "restarts": self.restarts})

    def _start_server(self, tmp: str) -> None:
        self.tmp = tmp
        spec = self.profile.policy
        config = ServeConfig(robot=self.profile.name, state_dir=str(Path(self.settings.state_dir).resolve()),
                             policy=spec.to_dict(), safe_action=self.profile.safe_action, regimes=self.profile.regimes,
                             **self.endpoints, internal=f"ipc://{tmp}/internal.sock",
                             curve_dir=str(self.settings.keys) if self.settings.keys else None, parent_pid=os.getpid())
        path = self.home / "serve.json"
        path.write_text(config.to_json())
        log = (self.home / "server.log").open("ab")
        self.server = subprocess.Popen([sys.executable, "-m", "srghn.deploy.server", str(path)], stdout=log,
                                       stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise SrghnError(f"the control server exited with code {self.server.returncode} at start-up: "
                                 f"{_tail(self.home / 'server.log')}")
            if self._wait_for(lambda m: m.get("op") == "hello", 0.2) is not None:
                return
        raise SrghnError(f"the control server did not start within {SERVER_START_TIMEOUT_S:.0f} s; see "
                         f"{self.home / 'server.log'}")

    def _start_robot(self) -> None:
        summary = self.home / "robot-sim.json"
        summary.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "srghn.cli", "robot-sim", "--robot", self.profile.source or self.profile.name,
               "--control", self.endpoints["control"], "--summary-file", str(summary), "--parent-pid",
               str(os.getpid()), "--quiet", *self.settings.robot_args]
        if self.settings.keys:
            cmd += ["--keys", str(self.settings.keys)]
        log = (self.home / "robot-sim.log").open("ab")
        self.robot = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def _stop_child(self, proc: subprocess.Popen | None, timeout_s: float = 15.0) -> int | None:
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def _shutdown(self, driver: Driver | None, started: float) -> dict:
        stopped_by = self.stop_reason or "error"
        robot_summary = None
        if self.robot is not None:
            self._stop_child(self.robot)
            robot_summary = _read_json(self.home / "robot-sim.json") or None
            if robot_summary and robot_summary.get("episodes"):
                fault = robot_summary.get("fault") or {}
                plot_robot(robot_summary["returns"], robot_summary["ended_at"], robot_summary["finished_by"],
                           self.home / "robot.png", title=f"simulated {self.profile.name}: episodes served",
                           fault_at=fault.get("at_step"), distances=robot_summary.get("distances"))
        if driver is not None and hasattr(self, "tag"):
            self._checkpoint(driver)
            records = read_records(self.home / "metrics.jsonl") if (self.home / "metrics.jsonl").is_file() else []
            if records:
                plot_run(records, self.home / "fitness.png", title=f"{self.profile.name}: daemon evolution",
                         target=self.profile.solved_fitness)
        if self.server is not None and self.server.poll() is None:
            self.publish("daemon", {"event": "stopping", "reason": stopped_by})
            reply = self._wait_for(lambda m: m.get("op") == "stopped", 15.0) if self._send({"op": "stop"}) else None
            self.server_final = reply["status"] if reply else None
        self._stop_child(self.server)
        (Path(self.settings.state_dir) / RUNFILE).unlink(missing_ok=True)
        live = self.registry.live(self.profile.name) if hasattr(self, "registry") else None
        lkg = self.registry.last_known_good(self.profile.name) if hasattr(self, "registry") else None
        summary = {
            "robot": self.profile.name, "state_dir": str(self.settings.state_dir), "stopped_by": stopped_by,
            "duration_s": round(time.time() - started, 1),
            "generation": driver.generation if driver is not None else None,
            "generations_this_run": self.counts["generations"],
            "regime": self.regime.regime if hasattr(self, "regime") else None,
            "champion_fitness": driver.champion().fitness if driver is not None else None,
            "candidates": {k: self.counts[k] for k in ("registered", "gate_passed", "gate_failed", "promoted",
                                                       "promotion_refused")},
            "live": live.id if live else None, "last_known_good": lkg.id if lkg else None,
            "serving": self.server_final, "server_restarts": self.restarts, "robot_sim": robot_summary,
            "files": {"home": str(self.home), "metrics": str(self.home / "metrics.jsonl"),
                      "plot": str(self.home / "fitness.png"), "server_log": str(self.home / "server.log"),
                      "robot_plot": str(self.home / "robot.png") if robot_summary else None},
        }
        if hasattr(self, "registry"):
            self.registry.close()
        self.ctx.destroy(linger=500)
        return summary


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

