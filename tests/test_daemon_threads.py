"""The state the daemon's two threads share stays whole under stress (issue 35).

The real adaptation thread identifies robots that keep switching regimes and, on each assignment to a regime without
a champion, offers the robot to the regime-following responders (the seam of
:mod:`srghn.deploy.daemon.regime_following`) on a registry connection of its own. Meanwhile the main thread does what
the evolution loop does between generations: promotes a new champion in the same registry file, claims the robots'
regimes for stand-ins, and counts generations and gate verdicts. Both threads claim the same (regime, live champion)
pairs and bump the same counters in tight loops. CPython switches threads at calls; with the switch interval at a
microsecond, a read-modify-write that is not done under :class:`~srghn.deploy.daemon.shared.SharedState`'s lock
loses updates or hands out a claim twice, and this test fails."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from champion_helpers import variant
from server_helpers import gate_and_promote, register_champion

from srghn.deploy.daemon.daemon import Daemon
from srghn.deploy.daemon.regime_following import Uncovered
from srghn.deploy.daemon.settings import DaemonSettings
from srghn.deploy.daemon.shared import SharedState
from srghn.deploy.registry.store import Registry
from srghn.deploy.wire import messages as m
from srghn.sim.identify import random_transitions
from srghn.sim.profiles import load_profile

CARTPOLE = load_profile("cartpole")
REGIMES = ("nominal", "inverted")
ROBOTS = 8
EPOCHS = 40
"""Promotions, each followed by every robot switching regime."""
CLAIMS = 50
"""The responder's claims per offer: what many robots in the same regime bring."""
VERDICTS = 200
"""Gate verdicts the responder counts per offer (the main thread counts one per sweep, on the same counter)."""


class Claimer:
    """A responder that stands in as the stand-ins do first: it claims the (regime, live champion) pair, counts the
    registration it would make and the gate verdicts of a batch of elites."""

    def __init__(self, shared: SharedState) -> None:
        self.shared = shared
        self.offers: list[Uncovered] = []
        self.claims: list[tuple[str, str]] = []
        self.seen: list[str] = []
        """The live champion each offer found in the registry."""

    def respond(self, found: Uncovered, registry: Registry) -> None:
        self.offers.append(found)
        live = registry.live(CARTPOLE.name).id
        self.seen.append(live)
        for _ in range(CLAIMS):
            if self.shared.claim_compensation(found.regime, live):
                self.claims.append((found.regime, live))
                self.shared.count("registered")
        for _ in range(VERDICTS):
            self.shared.count("gate_failed")


@pytest.fixture
def busy_switching():
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def windows(seed: int) -> dict[str, tuple]:
    """One window of transitions (the identification's 32) per regime."""
    out = {}
    for i, regime in enumerate(REGIMES):
        obs, actions, next_obs = random_transitions(CARTPOLE, regime, 32, seed=seed + i)
        out[regime] = (obs.tolist(), actions.tolist(), next_obs.tolist())
    return out


def test_identifications_and_promotions_at_once_lose_no_update(tmp_path: Path, cartpole_model: bytes,
                                                               busy_switching: None) -> None:
    state, events, sent = tmp_path / "state", [], []
    daemon = Daemon(DaemonSettings(CARTPOLE, state, auto_promote=False),
                    on_event=lambda topic, data: events.append((topic, data)))
    daemon.home.mkdir(parents=True, exist_ok=True)
    registry = Registry.open(state, create=True)
    daemon.load(registry)
    link = SimpleNamespace(send=sent.append, on_transitions=None)  # the server is not the subject here
    daemon.compose(link)
    shared, following = daemon.shared, daemon.following
    claimer = Claimer(shared)
    following.responders = [claimer]
    following.start(link)
    data = [windows(seed=10 * r) for r in range(ROBOTS)]

    def identified() -> list[dict]:
        return [d for t, d in events if t == "adaptation" and d["event"] == "identified"]

    promoted, mine, sweeps = [], [], 0
    try:
        for epoch in range(EPOCHS):
            champion = f"c{epoch}"
            register_champion(registry, champion, variant(cartpole_model, champion))
            gate_and_promote(registry, champion)
            promoted.append(champion)
            for r in range(ROBOTS):  # every robot switches regime
                link.on_transitions(m.Transitions(f"robot-{r}", *data[r][REGIMES[(epoch + r) % 2]]))
            deadline = time.monotonic() + 120
            while True:  # the evolution loop sweeps the robots' regimes while the adaptation thread works
                sweeps += 1
                for regime in REGIMES:
                    if shared.claim_compensation(regime, champion):
                        mine.append((regime, champion))
                        shared.count("registered")
                shared.count("gate_failed")
                if len(claimer.offers) == ROBOTS * (epoch + 1):
                    break
                assert time.monotonic() < deadline, f"epoch {epoch}: {len(claimer.offers)} offers"
            shared.count("generations")
    finally:
        following.close()

    # Every assignment was offered once, with the identification that made it.
    assert len(claimer.offers) == len(identified()) == ROBOTS * EPOCHS
    assert all(o.identification.regime == o.regime and o.regime in REGIMES for o in claimer.offers)
    # A (regime, live champion) pair is claimed once, whoever claims it.
    claims = mine + claimer.claims
    assert sorted(claims) == sorted((regime, c) for regime in REGIMES for c in promoted), sorted(
        c for c in claims if claims.count(c) > 1)
    # No lost update: every counter equals the number of events counted, on both threads.
    counts = shared.counts()
    assert counts["registered"] == len(claims)
    assert counts["generations"] == EPOCHS
    assert counts["gate_failed"] == sweeps + len(claimer.offers) * VERDICTS
    # The live champion agrees with the registry: the adaptation thread's connection saw the promotions in order,
    # and the last stand-in claims name the champion that is live now.
    order = [promoted.index(live) for live in claimer.seen]
    assert order == sorted(order)
    assert registry.live(CARTPOLE.name).id == promoted[-1]
    assert shared.snapshot()["compensated"] == dict.fromkeys(REGIMES, promoted[-1])
    registry.close()
