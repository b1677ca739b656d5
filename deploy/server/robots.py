"""What the server keeps about each robot (:class:`Client`), and what it hands the evolution daemon about them:
their transitions (for regime identification) and their episode returns (for the return drift detector)."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from srghn.deploy.server.slots import ModelSlot
from srghn.deploy.wire.messages import Returns, Transitions

if TYPE_CHECKING:
    from srghn.deploy.server.serving import Serving

TRANSITIONS = 64
"""Per client, the last transitions kept for the daemon's regime identification."""
FORWARD_MIN = 8
"""A client's new transitions go to the daemon once at least this many have come (checked every loop tick)."""


class Client:
    """What the server keeps about one robot (its ROUTER identity, or with CURVE its key's name)."""

    __slots__ = ("episode_return", "episode_steps", "episodes", "fresh", "last_seen", "line", "name", "pending",
                 "regime", "returns", "steps", "transitions", "unsent")

    def __init__(self, name: str) -> None:
        self.name = name
        self.regime: str | None = None
        """The regime the daemon identified this robot in (None: not yet)."""
        self.line: tuple[ModelSlot | None, ModelSlot | None] = (None, None)
        """What serves it, in order: its regime's champion (else the live one), then the last-known-good."""
        self.steps = self.episodes = self.episode_steps = self.fresh = 0
        self.episode_return = 0.0
        self.returns: deque = deque(maxlen=100)
        self.last_seen = 0.0
        self.pending: tuple[bytes, bytes] | None = None
        """(observation, action) of its last ACT as the wire carried them, waiting for the STEP that follows."""
        self.transitions: deque = deque(maxlen=TRANSITIONS)
        self.unsent: deque = deque(maxlen=TRANSITIONS)
        """Episode returns not yet handed to the daemon (its return drift detector)."""


def take_transitions(serving: Serving) -> list[Transitions]:
    """Each robot's transitions the daemon has not seen yet, for robots with at least :data:`FORWARD_MIN` of
    them (the daemon replays them in the twin to tell each robot's regime)."""
    out = []
    for identity in serving.fresh_clients:
        client = serving.clients.get(identity)
        if client is None:
            continue
        rows = list(client.transitions)[-min(client.fresh, TRANSITIONS):]
        client.fresh = 0
        obs, actions, next_obs = ([np.frombuffer(f, "<f4").tolist() for f in column]
                                  for column in zip(*rows, strict=True))
        out.append(Transitions(client.name, obs, actions, next_obs, client.steps))
    serving.fresh_clients.clear()
    return out


def take_returns(serving: Serving) -> list[Returns]:
    """Every robot's episode returns completed since the last call, one message per robot (the champion serving
    now is the one that served them, unless a swap came in between: the daemon restarts its reference then)."""
    out = []
    for client in serving.clients.values():
        if client.unsent:
            served = client.line[0]  # the champion serving this robot (its regime's, else the live one)
            out.append(Returns(client.name, list(client.unsent), served.champion_id if served else None))
            client.unsent.clear()
    return out
