"""Each robot's regime, from its reported transitions: the daemon's side of per-robot serving (docs/daemon.md).

The server forwards every robot's new transitions as they come (:class:`~srghn.deploy.wire.messages.Transitions`, a few
times a second). The link's thread hands them to :class:`Adaptation`, whose own thread keeps each robot's latest
:data:`WINDOW` transitions and replays them in the twin (:func:`srghn.sim.identify.identify`, in a process of its
own: :class:`Identifier`). When a robot turns
out to be in another known regime, the server is told at once (:class:`~srghn.deploy.wire.messages.Assign`) and serves
that robot its regime's stored champion (:mod:`srghn.deploy.registry.portfolio`) --
without waiting for the evolution loop,
which may be in the middle of a generation. Identifications also go to the evolution loop, which chooses the
regime evolution works on (:func:`evolution_regime`) and puts that regime's stored champion back live
(rate-limited; audit actor ``adaptation``).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np

from srghn.deploy.wire import messages as m
from srghn.deploy.wire.topics import Topic
from srghn.sim.envs import Regime, regime_distances
from srghn.sim.identify import Identification, identify
from srghn.sim.profiles import RobotProfile
from srghn.sim.worker import die_with_parent

log = logging.getLogger("srghn.daemon.adaptation")

WINDOW = 32
"""Transitions a robot's regime is identified from: its latest ones, so that a change shows as soon as most of
them are new (CartPole at 200 steps/s: about 0.15 s), and enough for the twin's fit (32 x 27 residuals for Ant)."""
AGREE_WITHIN = 3
"""An undeclared fault is reported when a fit agrees with one of the robot's last this many that matched no known
regime: a window straddling a change fits something in between once, and a window where the robot stumbles can
land the fit in a local minimum once (a reversed Ant hip: 2 of 4 windows, each one-off)."""
ROBOT_EXPIRY_S = 60.0
"""A robot that reported nothing for this long no longer counts when the evolution regime is chosen."""


@dataclass
class RobotRegime:
    """What the daemon knows of one robot."""

    name: str
    regime: str | None = None
    """Its identified regime (None: not yet)."""
    since: float = 0.0
    """``time.monotonic()`` when it was identified in that regime."""
    last_seen: float = 0.0
    steps: int | None = None
    """The robot's step count at its last transition, as the server counted."""
    rows: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    unknown: deque = field(default_factory=lambda: deque(maxlen=AGREE_WITHIN))
    """The latest fits that matched no known regime (an undeclared fault is reported once two of them agree)."""
    reported: Identification | None = None
    """The fit of the undeclared fault last published for this robot."""
    candidate: str | None = None
    """Another known regime the last window matched (a robot with a twin changes regime when the next agrees)."""


@dataclass(frozen=True)
class Identified:
    """One identification worth the evolution loop's attention: a robot changed regime, or showed a fault that no
    known regime explains."""

    client: str
    result: Identification
    previous: str | None
    steps: int | None


class Adaptation:
    """Identifies each robot's regime on a thread of its own and assigns it through the server."""

    def __init__(self, profile: RobotProfile, send: Callable[[m.Message], None],
                 publish: Callable[[Topic, dict], None],
                 known: Callable[[], Mapping[str, Regime]] = dict, window: int = WINDOW,
                 on_assign: Callable[[str, Identification], None] | None = None,
                 on_undeclared: Callable[[str, Identification], None] | None = None) -> None:
        self.profile, self.send, self.publish, self.known, self.window = profile, send, publish, known, window
        self.on_assign = on_assign
        """Called on this thread with the robot and its identification after it was assigned to a regime."""
        self.on_undeclared = on_undeclared
        """Called on this thread once per fault, when two fits first agree on a fault no regime declares."""
        self.identify = Identifier(profile)
        self.robots: dict[str, RobotRegime] = {}
        self.inbox: queue.SimpleQueue[m.Transitions] = queue.SimpleQueue()
        self.results: queue.SimpleQueue[Identified] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="srghn-adaptation", daemon=True)
        self._thread.start()

    # -- other threads' side -------------------------------------------------------------------------------------

    def offer(self, message: m.Transitions) -> None:
        """A robot's new transitions (the link's thread)."""
        self.inbox.put(message)

    def take(self) -> list[Identified]:
        """What was identified since the last call, the latest per robot (the evolution loop)."""
        latest: dict[str, Identified] = {}
        while True:
            try:
                found = self.results.get_nowait()
            except queue.Empty:
                return list(latest.values())
            latest[found.client] = found

    def regimes(self) -> dict[str, str]:
        """Robot -> identified regime, for the robots heard from within :data:`ROBOT_EXPIRY_S`."""
        now = time.monotonic()
        with self.lock:
            return {name: r.regime for name, r in self.robots.items()
                    if r.regime is not None and now - r.last_seen < ROBOT_EXPIRY_S}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.identify.close()

    # -- the thread ------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            updated = self._add([first, *_drain(self.inbox)])
            for robot in updated:  # one identification per robot per batch, on its latest window
                try:
                    self._identify(robot)
                except Exception as exc:  # bad evidence or a bug: logged, and the next batch is tried
                    log.warning("identifying robot %s failed: %s", robot.name, exc, exc_info=not isinstance(
                        exc, KeyError | ValueError))
                    self.publish(Topic.DAEMON, {"event": "bad_transitions", "client": robot.name, "error": str(exc)})

    def _add(self, messages: Iterable[m.Transitions]) -> list[RobotRegime]:
        updated: dict[str, RobotRegime] = {}
        now = time.monotonic()
        with self.lock:
            for message in messages:
                robot = self.robots.get(message.client)
                if robot is None:
                    robot = self.robots[message.client] = RobotRegime(message.client, rows=deque(maxlen=self.window))
                robot.rows.extend(zip(message.obs, message.actions, message.next_obs, strict=False))
                robot.last_seen, robot.steps = now, message.steps
                updated[robot.name] = robot
        return list(updated.values())

    def _identify(self, robot: RobotRegime) -> None:
        obs, actions, next_obs = (np.asarray(column, np.float64) for column in zip(*robot.rows, strict=True))
        started = time.monotonic()
        result = self.identify(obs, actions, next_obs, robot.regime, self.known())
        fit_s = time.monotonic() - started
        log.debug("robot %s: %s (known: %s) fitted in %.2f s", robot.name, result.regime, result.known, fit_s)
        if not result.known:
            # A window half before and half after a change fits something in between; only a fit that another
            # recent window repeats (within the twin's tolerance) is a fault of its own.
            if any(_agree(self.profile, before, result) for before in robot.unknown):
                if not result.explained and robot.reported is not None and not robot.reported.explained:
                    result = robot.reported  # one fault the twin cannot explain, one regime: not one per window
                first = robot.reported is None or robot.reported.regime != result.regime  # telemetry once per fault
                if first:
                    robot.reported = result
                    self.publish(Topic.ADAPTATION, {"event": "undeclared", "client": robot.name,
                                                "regime": result.regime, "steps": robot.steps,
                                                "changes": result.definition.to_dict(), **_evidence(result, fit_s)})
                self.results.put(Identified(robot.name, result, robot.regime, robot.steps))
                if first:
                    self._call(self.on_undeclared, robot.name, result)
                    if result.regime in self.known():  # stored as a regime: the agreeing fits are the evidence
                        self._assign(robot, result, fit_s)
                        return
            robot.unknown.append(result)
            robot.candidate = None
            return
        robot.reported = None
        if result.regime == robot.regime:
            robot.candidate = None
            return
        if self.profile.twin is not None and robot.candidate != result.regime:
            robot.candidate = result.regime  # a fitted twin: two windows in a row must say so (see _agree)
            return
        self._assign(robot, result, fit_s)

    def _assign(self, robot: RobotRegime, result: Identification, fit_s: float) -> None:
        """The robot is in ``result.regime`` from now on: the server is told to serve it that regime's champion."""
        robot.candidate = None
        previous = robot.regime
        robot.unknown.clear()  # fits from before a change of regime say nothing of the next fault
        with self.lock:
            robot.regime, robot.since = result.regime, time.monotonic()
        reason = (f"{result.transitions} transitions predicted to {result.residual:.2g} in {result.regime}"
                  + (f" ({previous}: {result.errors[previous]:.2g})" if previous in result.errors else ""))
        self.send(m.Assign(robot.name, result.regime, reason))
        log.info("robot %s: regime %s (was %s): %s", robot.name, result.regime, previous, reason)
        self.publish(Topic.ADAPTATION, {"event": "identified", "client": robot.name, "regime": result.regime,
                                    "previous": previous, "steps": robot.steps, **_evidence(result, fit_s)})
        self.results.put(Identified(robot.name, result, previous, robot.steps))
        self._call(self.on_assign, robot.name, result)

    @staticmethod
    def _call(hook: Callable[[str, Identification], None] | None, robot: str, result: Identification) -> None:
        if hook is not None:
            try:
                hook(robot, result)
            except Exception:  # its own failure, not the identification's
                log.exception("after identifying robot %s in regime %s", robot, result.regime)


class Identifier:
    """:func:`~srghn.sim.identify.identify` in a process of its own. The twin's MuJoCo replay holds the GIL, so
    beside the evolution loop's Python in the daemon's process a fit took over three times as long (an Ant fit of 32
    transitions: 6 s alone, 21 s beside one busy Python thread), and the robot waited that much longer for its
    answer. The process starts with the daemon (before it lowers its own priority) and a dead one is replaced."""

    def __init__(self, profile: RobotProfile) -> None:
        self.profile = profile
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn: the daemon runs threads and torch, which a forked child would inherit half-copied
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start,
                                   initargs=(self.profile,))
        pool.submit(os.getpid)  # start it now, at the daemon's start-up priority
        return pool

    def __call__(self, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray, current: str | None,
                 known: Mapping[str, Regime]) -> Identification:
        args = (obs, actions, next_obs, current, dict(known))
        try:
            return self._pool.submit(_worker_identify, *args).result()
        except BrokenProcessPool:  # killed (the OOM killer, an operator): a new process fits the window again
            log.warning("the identification process died; starting another")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._start()
            return self._pool.submit(_worker_identify, *args).result()

    def worker_pid(self) -> int:
        return self._pool.submit(os.getpid).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


_PROFILE: RobotProfile | None = None
"""The identification process's profile (set once, when it starts)."""


def _worker_start(profile: RobotProfile) -> None:
    global _PROFILE
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group: the daemon stops this process
    die_with_parent()
    _PROFILE = profile


def _worker_identify(obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray, current: str | None,
                     known: dict[str, Regime]) -> Identification:
    return identify(_PROFILE, obs, actions, next_obs, current=current, known=known)


def evolution_regime(robots: Mapping[str, str], current: str, stored: Mapping[str, float],
                     solved: float | None = None, margin: float = 0.05) -> str | None:
    """The regime evolution works on: the one most robots are in. On a tie, the one whose robots are served worst:
    no stored champion at all, else the lowest gate score of its stored champion (``stored``: regime -> score;
    scores at or above ``solved`` count as equal) -- unless the current regime is within ``margin`` (relative) of
    that, to avoid churn; then the first by name. None without robots."""
    counts = Counter(robots.values())
    if not counts:
        return None
    top = max(counts.values())
    tied = sorted(regime for regime, n in counts.items() if n == top)

    def need(regime: str) -> float:  # lower: needs evolution more
        score = stored.get(regime, -math.inf)
        return min(score, solved) if solved is not None else score

    worst = min(need(regime) for regime in tied)
    if current in tied and (need(current) == worst or need(current) <= worst + margin * abs(worst)):
        return current
    return next(regime for regime in tied if need(regime) == worst)


def _evidence(result: Identification, fit_s: float) -> dict:
    return {"transitions": result.transitions, "fit_s": round(fit_s, 3), "residual": float(f"{result.residual:.3g}"),
            "errors": {k: float(f"{v:.3g}") for k, v in result.errors.items()},
            "params": {k: round(v, 4) for k, v in result.params.items()}}


def _agree(profile: RobotProfile, before: Identification, now: Identification) -> bool:
    """Whether two twin fits found the same fault: every value their regimes change (a kind's nominal value where one
    leaves it) within the profile's tolerance of each kind. The regimes, not the raw fits: a parameter the window
    leaves free (a leg sent no torque, a joint that barely moves) lands anywhere in its bounds, and two fits of one
    fault that differed only there never agreed (an Ant with a reversed ankle, the same regime fitted in every
    window, went unreported for minutes). Two fits that both say the twin cannot explain the robot agree on that:
    the regime a partial model lands on moves with every window (the Ant with a shorter foot went 150 s without two
    alike), and what answers such a fault is trial on the robot, not that regime."""
    if profile.twin is not None and not before.explained and not now.explained:
        return True
    return profile.twin is not None and all(
        distance <= profile.twin.tolerance_of(kind)
        for kind, distance in regime_distances(before.definition, now.definition).items())


def _drain(inbox: queue.SimpleQueue) -> list:
    out = []
    while True:
        try:
            out.append(inbox.get_nowait())
        except queue.Empty:
            return out
