"""The return watch: robots whose transitions cannot be replayed (LunarLander) are followed by their episode returns.

A Page-Hinkley test per robot on its returns (a new reference whenever another champion serves); on an alarm, the
regime that explains the drop is found in the shadow simulator (:mod:`srghn.safety.regime_trial`) and evolution
moves there. The evolution loop's thread only.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from srghn import SrghnError
from srghn.deploy.daemon.publishing import Publisher
from srghn.deploy.daemon.run_files import RunFiles
from srghn.deploy.daemon.settings import DaemonSettings
from srghn.deploy.daemon.shared import SharedState
from srghn.deploy.registry.release import passed_in_regime
from srghn.deploy.registry.store import Registry
from srghn.deploy.wire import messages as m
from srghn.deploy.wire.topics import Topic
from srghn.safety.drift import ReturnDriftDetector
from srghn.safety.regime_trial import explain_returns
from srghn.sim.identify import identifiable

RETURN_DRIFT_WINDOW = 5
"""After a return drift alarm, the latest this many returns are what the regime trial explains."""
RETURN_WATCH_CLIENTS = 1024
"""Robots whose returns the daemon watches at once (as many as the server keeps statistics for)."""


class ReturnWatch:
    def __init__(self, settings: DaemonSettings, shared: SharedState, registry: Registry, publisher: Publisher,
                 files: RunFiles) -> None:
        self.shared, self.registry, self.files = shared, registry, files
        self.on = settings.follow_drift and not identifiable(shared.profile)
        """Whether returns are watched: with ``--follow-drift``, for robots not identified from transitions."""
        self.publish = publisher.publish
        self.watch: dict[str, tuple[str | None, ReturnDriftDetector, deque]] = {}
        """Per robot: the champion serving it, its return drift detector, its recent returns."""

    def follow(self, message: m.Returns) -> None:
        """A robot's latest episode returns."""
        if not self.on:
            return
        watch = self.watch.get(message.client)
        if watch is None or watch[0] != message.champion:
            if watch is None and len(self.watch) >= RETURN_WATCH_CLIENTS:  # the least recently added goes
                del self.watch[next(iter(self.watch))]
            watch = self.watch[message.client] = (message.champion, ReturnDriftDetector(), deque(maxlen=50))
        _, detector, recent = watch
        for value in message.returns:
            if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value)):
                self.publish(Topic.DAEMON, {"event": "bad_returns", "client": message.client, "value": repr(value)})
                return
            recent.append(float(value))
            if detector.update(value):
                since = max(1, min(len(recent), RETURN_DRIFT_WINDOW))
                self._drifted(message.client, message.champion, list(recent)[-since:])
                detector.reset()
                recent.clear()

    def _drifted(self, client: str, champion: str | None, observed: list[float]) -> None:
        current = self.shared.regime
        event = {"client": client, "by": "returns", "from": current, "champion": champion,
                 "observed": [round(v, 2) for v in observed]}
        if champion is None:  # the safe action served: there is no champion to replay
            self.publish(Topic.DRIFT, {**event, "to": None, "switched": False, "why": "no champion served"})
            return
        profile = self.shared.profile
        gates = profile.gates
        try:
            stored = {}
            for regime in profile.regimes:
                best = next(iter(passed_in_regime(self.registry, profile.name, regime)), None)
                if best is not None:
                    stored[best.id] = self.registry.load_model(best.id)
            trial = explain_returns(profile, self.registry.load_model(champion), np.asarray(observed), stored,
                                    gates.episodes, gates.seed, gates.max_steps)
        except SrghnError as exc:  # an unknown or corrupted champion: evolution goes on
            self.publish(Topic.DRIFT, {**event, "to": None, "switched": False, "why": str(exc)})
            return
        switched = trial.regime != current
        self.publish(Topic.DRIFT, {**event, "to": trial.regime, "switched": switched, "trial": trial.to_dict()})
        if switched:
            self.shared.set_regime(trial.regime)
            self.files.save_state(self.shared)
