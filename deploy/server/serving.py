"""Serving: the control socket (``ACT``, ``STEP``, ``INFO``), the model slots and the swap between them.

A *slot* is one champion loaded in ONNX Runtime (:mod:`srghn.deploy.server.slots`). The live slot serves; the
last-known-good slot stands by for the watchdog (:mod:`srghn.safety.watchdog`).

Several robots on several regimes (issue 13): each robot (client) has a regime, which the daemon identifies from
its transitions and assigns (:class:`~srghn.deploy.wire.messages.Assign`), and a *line* of slots -- its regime's
champion from the portfolio (:mod:`srghn.deploy.registry.portfolio`; the live champion while its regime has none, or
before it is identified), then the last-known-good -- that the watchdog is given for its requests. One slot is
loaded per regime robots are in; every slot is bound to the same buffers, and a request costs one more attribute
look-up on the client record it already fetches.

The hot path, measured (``benchmarks/act_stages.py``): the header of a well-formed ``ACT`` from a DEALER is
recognised by comparing its first 8 bytes and the frame lengths, which is what the full validation
(:func:`srghn.deploy.wire.protocol.parse_header`) amounts to for such a request; everything else goes through the full
validation and gets its typed error. The reply's header is the request's own id bytes behind a constant prefix.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from collections.abc import Callable

import numpy as np
import zmq

from srghn.controller.policy import PolicySpec
from srghn.deploy.registry.portfolio import portfolio
from srghn.deploy.registry.store import Registry
from srghn.deploy.server.background import Background
from srghn.deploy.server.fastloop import lane_available
from srghn.deploy.server.intake import oversize_reply, receive
from srghn.deploy.server.robots import FORWARD_MIN, Client
from srghn.deploy.server.slots import ModelSlot, PolicyIO, SlotCache
from srghn.deploy.wire import protocol as p
from srghn.deploy.wire.keys import Identity, allowed, sender
from srghn.deploy.wire.topics import Topic
from srghn.errors import ProtocolError, SrghnError
from srghn.safety.watchdog import Verdict, Watchdog

log = logging.getLogger("srghn.server.serving")

LATENCY_WINDOW = 4096
"""``status`` reports the server's handling time of this many most recent ``ACT`` requests."""
MAX_CLIENTS = 1024
"""Per-robot step statistics are kept for this many client identities (the least recently seen go first)."""
REQUEST_ID = struct.Struct("<Q")

Publish = Callable[[Topic, dict], None]


class Serving:
    """The control socket and the model slots of one robot."""

    def __init__(self, robot: str, spec: PolicySpec, safe_action: tuple[float, ...], regimes: tuple[str, ...],
                 max_message_bytes: int, sock: zmq.Socket, publish: Publish, background: Background,
                 identify: Callable[[zmq.Frame], Identity | None] | None = None, lane: bool = False) -> None:
        self.robot, self.spec, self.regimes, self.max_bytes = robot, spec, regimes, max_message_bytes
        self.sock, self.publish, self.background = sock, publish, background
        self.identify = identify
        """With CURVE on: who sent a request (None once its key is revoked). Every request is then checked
        against its key's role, and the fast path is off."""
        self.io = PolicyIO(spec)
        self.watchdog = Watchdog(spec, safe_action)
        self.safe_action = safe_action
        self.live: ModelSlot | None = None
        self.lkg: ModelSlot | None = None
        self.serial = 0
        self.regime_slots: dict[str, ModelSlot] = {}
        """Regime -> its portfolio champion's slot, for the regimes robots are in (serving thread only)."""
        self.active: frozenset[str] = frozenset()
        """The regimes robots are in now (replaced whole, so the background thread reads a consistent set)."""
        self.sync_pending = self.sync_again = False
        self.below_safe: dict[str, str] = {}
        """Regime -> a champion the daemon found doing worse than the safe action there: not served to its robots."""
        self.pending_regimes: dict[str, str] = {}
        """Regimes assigned to robots not seen yet (by name), applied at their first request."""
        self.fresh_clients: set[bytes] = set()
        """Clients with at least :data:`FORWARD_MIN` transitions the daemon has not seen."""
        self.obs_len = spec.obs_dim * 4
        self.act_prefix, self.action_prefix = p.prefix(p.MsgType.ACT), p.prefix(p.MsgType.ACTION)
        self.acts = self.steps = self.errors = self.fallbacks = self.oversize = 0
        self.latency = np.zeros(LATENCY_WINDOW, np.int64)
        self.clients: dict[bytes, Client] = {}
        self.tap: Callable[[int, list, list], None] | None = None
        """Session recording (:class:`~srghn.deploy.recording.tap.Tap`): every request and its reply as is."""
        self.lane = lane and identify is None and lane_available()
        """Whether slots are loaded for the compiled loop's lane too (it needs the frames without CURVE)."""
        self.cache = SlotCache(spec, self.io, self.lane)
        self.loop = None
        """The compiled loop whose lane answers robots (:meth:`use_lane`)."""
        self._refresh()

    # -- requests ----------------------------------------------------------------------------------------------

    def handle(self) -> None:
        """Answer the request waiting on the control socket (the server's loop polls again for the next one:
        cheaper than a receive that fails)."""
        got = receive(self.sock, self.identify, self.max_bytes)
        if got is None:
            return
        # frame by frame: send_multipart's checks cost 5 us more here; copy=False costs ~6 us more at these sizes
        out, send = self.on_request(got[0], *got[1]), self.sock.send
        for frame in out[:-1]:
            send(frame, zmq.SNDMORE)
        send(out[-1])

    def on_request(self, frames: list, size: int = 0, count: int = 0) -> list:
        """The reply (envelope included) to one request's frames; the compiled socket loop
        (:mod:`srghn.deploy.server.fastloop`) calls this directly.
        ``size`` and ``count`` (the message's bytes and parts)
        are given when it was past the whole-message limit: ``frames`` are then only those kept before it."""
        t0 = time.perf_counter_ns()
        if size or count:
            envelope, reply = self._oversize(frames, size, count)
        elif (self.identify is None and len(frames) == 3 and len(frames[2]) == self.obs_len
                and len(frames[1]) == p.HEADER.size and frames[1][:8] == self.act_prefix):
            envelope, request_id = frames[:1], frames[1][8:]
            try:  # a well-formed ACT from a DEALER
                reply = self.act(frames[0], request_id, frames[2])
                self.latency[self.acts % LATENCY_WINDOW] = time.perf_counter_ns() - t0
                self.acts += 1
            except ProtocolError as exc:
                reply = self._error(exc)
            except Exception as exc:  # a bug must never stop the server: answer INTERNAL and go on
                reply = self._internal(exc, REQUEST_ID.unpack(request_id)[0])
        else:
            envelope, reply = self._validated(frames, t0)
        out = envelope + reply
        if self.tap is not None:
            self.tap(t0, frames, out)
        return out

    def _validated(self, frames: list, t0: int) -> tuple[list[bytes], list[bytes]]:
        """Any request, checked in the documented order (docs/protocol.md §3.5)."""
        who, frames = sender(frames, self.identify, None)
        envelope, msg = p.split_envelope(frames)
        request_id = 0
        key = envelope[0] if who is None else who.key  # with CURVE a robot is its key, across connections
        try:
            msg_type, request_id = p.parse_header(msg, p.CONTROL_REQUESTS, self.max_bytes)
            if self.identify is not None:
                allowed(who, "control", msg_type.name, request_id)
                if key not in self.clients:
                    self._client(key, who.name)  # shown by its key's name
            if msg_type is p.MsgType.ACT:
                p.floats(msg[1], self.spec.obs_dim, "observation", request_id)
                reply = self.act(key, msg[0][8:], msg[1])
                self.latency[self.acts % LATENCY_WINDOW] = time.perf_counter_ns() - t0
                self.acts += 1
            elif msg_type is p.MsgType.STEP:
                reward, terminated, truncated = p.parse_outcome(msg[1], request_id)
                p.floats(msg[2], self.spec.obs_dim, "next observation", request_id)
                self._record_step(key, reward, terminated or truncated, msg[2])
                reply = [p.header(p.MsgType.STEP_OK, request_id)]
            else:
                reply = [p.header(p.MsgType.INFO_OK, request_id), self.client_info(key)]
        except ProtocolError as exc:
            reply = self._error(exc)
        except Exception as exc:  # a bug must never stop the server: answer INTERNAL and go on
            reply = self._internal(exc, request_id)
        return envelope, reply

    def _oversize(self, frames: list, size: int, count: int) -> tuple[list[bytes], list[bytes]]:
        """A request past the whole-message limit, answered from its first frames (the rest was dropped as it
        came): what the validation order puts before OVERSIZE, else OVERSIZE."""
        self.oversize += 1
        _, frames = sender(frames, self.identify, None)
        return oversize_reply(frames, size, count, self.max_bytes, self._error)

    def _error(self, exc: ProtocolError) -> list[bytes]:
        self.errors += 1
        return p.error_frames(exc.code, str(exc), exc.request_id)

    def _internal(self, exc: Exception, request_id: int) -> list[bytes]:
        self.errors += 1
        log.exception("internal error answering a control request")
        return p.error_frames(p.ErrorCode.INTERNAL, f"internal error: {exc!r}", request_id)

    def act(self, identity: bytes, request_id: bytes, obs: bytes) -> list[bytes]:
        """The ``ACTION`` reply for an observation frame of the right length (raises ``NOT_FINITE``);
        ``request_id`` as the header carries it (8 bytes)."""
        if not self.io.take(obs):  # raises, naming the bad entries
            p.floats(obs, self.spec.obs_dim, "observation", REQUEST_ID.unpack(request_id)[0])
        client = self.clients.get(identity) or self._client(identity)
        line = client.line
        verdict = self.watchdog.act(line)
        if verdict.failures:
            self._failed(verdict)  # swaps: what served this request is still line[verdict.served]
        client.last_seen = time.monotonic()
        client.pending = (obs, verdict.action)
        header = self.action_prefix + request_id
        if verdict.served == 0 and not verdict.clamped:
            return [header, verdict.action, self.live_status, line[0].reply_id]
        slot = line[verdict.served] if verdict.served >= 0 else None
        source = (p.Source.SAFE if slot is None else p.Source.LIVE if verdict.served == 0
                  else p.Source.LAST_KNOWN_GOOD)
        flags = (p.ActionFlag.CLAMPED if verdict.clamped else 0) | (p.ActionFlag.FALLBACK if verdict.failures else 0)
        return [header, verdict.action, p.ACTION_STATUS.pack(int(source), flags, 0, self.serial & 0xFFFFFFFF),
                slot.reply_id if slot is not None else b""]

    # -- the compiled loop's lane ---------------------------------------------------------------------------------

    def use_lane(self, loop) -> None:  # noqa: ANN001 (srghn.deploy.server._fastloop.Loop)
        """Let ``loop`` answer well-formed ACTs of robots whose serving champion is loaded for it, as :meth:`act`
        would (:mod:`srghn.deploy.server.fastloop`); not while sessions are recorded (the tap sees every request)."""
        if not self.lane or self.tap is not None:
            return
        loop.lane(self.act_prefix, self.action_prefix, self.obs_len, self._lane_served)
        self.loop = loop
        self._routes()

    def _routes(self) -> None:
        """The lane's routes: every robot whose line starts with a champion loaded for it that has not failed
        (anything else -- the safe action, a fallback -- is :meth:`act`'s). Called whenever a line changes."""
        if self.loop is None:
            return
        failed = self.watchdog.failed
        self.loop.routes({identity: c.line[0].lane for identity, c in self.clients.items()
                          if c.line[0] is not None and c.line[0].lane is not None
                          and c.line[0].champion_id not in failed}, self.live_status)

    def _lane_served(self, identity: bytes, obs: bytes, action: bytes, handling_ns: int) -> None:
        """The lane answered ``identity``'s ACT: what :meth:`act` records besides the reply."""
        client = self.clients.get(identity)  # routes follow the clients, so always there; never fail the loop
        if client is not None:
            client.last_seen = time.monotonic()
            client.pending = (obs, action)
        self.latency[self.acts % LATENCY_WINDOW] = handling_ns
        self.acts += 1

    def _client(self, identity: bytes, name: str | None = None) -> Client:
        """A new client record (named ``name``, else after its routing identity); beyond :data:`MAX_CLIENTS` the
        least recently seen one goes."""
        if len(self.clients) >= MAX_CLIENTS:
            gone = min(self.clients, key=lambda k: self.clients[k].last_seen)
            del self.clients[gone]
            self.fresh_clients.discard(gone)
        client = self.clients[identity] = Client(name or p.client_name(identity))
        if client.name in self.pending_regimes:  # assigned before this server saw it (it was restarted)
            client.regime = self.pending_regimes.pop(client.name)
            self.active = self.active | {client.regime}
            if client.regime not in self.regime_slots:
                self.sync()
        client.line = self._line_for(client)
        self._routes()
        return client

    def _line_for(self, client: Client) -> tuple[ModelSlot | None, ModelSlot | None]:
        if client.regime is None:
            return self.live, self.lkg
        own = self.regime_slots.get(client.regime)
        if own is not None:
            return own, self.lkg
        if self.live is not None and self.below_safe.get(client.regime) == self.live.champion_id:
            return None, None  # the safe action: the live champion does worse than it in this regime
        return self.live, self.lkg

    def _relink(self, why: str) -> None:
        """Give every client its line again (after the live, last-known-good or a regime's slot changed); a robot
        with a regime whose champion changed gets an ``assignment`` event."""
        for client in self.clients.values():
            before = client.line[0]
            client.line = self._line_for(client)
            if client.regime is not None and client.line[0] is not before:
                self._assigned(client, client.regime, before, why)
        self._routes()

    def _assigned(self, client: Client, previous_regime: str | None, before: ModelSlot | None, why: str) -> None:
        now = client.line[0]
        log.info("robot %s (regime %s) served %s (was %s): %s", client.name, client.regime,
                 now.champion_id if now else "the safe action", before.champion_id if before else "the safe action",
                 why)
        self.publish(Topic.ASSIGNMENT, {"client": client.name, "regime": client.regime,
                                        "previous_regime": previous_regime,
                                        "champion": now.champion_id if now else None,
                                        "previous": before.champion_id if before else None, "steps": client.steps,
                                        "why": why})

    def assign(self, name: str, regime: str, reason: str = "") -> bool:
        """Robot ``name`` is in ``regime``: serve it that regime's champion (at once when its slot is loaded, else
        once the background thread has loaded it). False when no such robot is known."""
        identity = next((k for k, c in self.clients.items() if c.name == name), None)
        if identity is None:  # a restarted server hears the daemon before the robot: keep it for its first request
            log.info("regime %s assigned to robot %s, not seen yet: kept for its first request", regime, name)
            if len(self.pending_regimes) < MAX_CLIENTS:
                self.pending_regimes[name] = regime
            return False
        client = self.clients[identity]
        previous, before = client.regime, client.line[0]
        client.regime = regime
        self.active = frozenset(c.regime for c in self.clients.values() if c.regime is not None)
        client.line = self._line_for(client)
        self._routes()
        if previous != regime or client.line[0] is not before:
            self._assigned(client, previous, before, f"identified: {reason}" if reason else "identified")
        if regime not in self.regime_slots:
            self.sync()  # its regime's champion, if the portfolio has one, serves it once loaded
        return True

    def serve_safe(self, regime: str, champion: str, reason: str = "") -> None:
        """``champion`` does worse than the safe action in ``regime``: robots of that regime are served the safe
        action while it is the live champion and the regime has none of its own."""
        if regime not in self.below_safe and len(self.below_safe) >= MAX_CLIENTS:
            self.below_safe.pop(next(iter(self.below_safe)))
        self.below_safe[regime] = champion
        log.info("champion %s does worse than the safe action in regime %s: %s", champion, regime, reason)
        self._relink(f"{champion} is below the safe action in {regime}" + (f": {reason}" if reason else ""))

    def _record_step(self, identity: bytes, reward: float, done: bool, next_obs: bytes) -> None:
        self.steps += 1
        client = self.clients.get(identity) or self._client(identity)
        client.last_seen = time.monotonic()
        if client.pending is not None:
            client.transitions.append((*client.pending, next_obs))
            client.pending = None
            client.fresh += 1
            if client.fresh >= FORWARD_MIN:
                self.fresh_clients.add(identity)
        client.steps += 1
        client.episode_steps += 1
        client.episode_return += reward
        if done:
            client.episodes += 1
            client.returns.append(client.episode_return)
            client.unsent.append(client.episode_return)
            served = client.line[0]
            self.publish(Topic.EPISODE, {"client": client.name, "return": client.episode_return,
                                     "steps": client.episode_steps, "regime": client.regime,
                                     "champion": served.champion_id if served else None})
            client.episode_return, client.episode_steps = 0.0, 0

    # -- the watchdog's failures ---------------------------------------------------------------------------------

    def _failed(self, verdict: Verdict) -> None:
        """Failed champions are out of service now; the registry is asked to roll back to the last-known-good."""
        for slot, problem in verdict.failures:
            self.fallbacks += 1
            lkg = self.lkg if self.lkg is not None and self.lkg.champion_id not in self.watchdog.failed else None
            fallback = lkg.champion_id if lkg else None
            log.warning("watchdog: champion %s failed (%s); now serving %s", slot.champion_id, problem,
                        fallback or "the safe action")
            if slot is self.live:
                self.swap(lkg, f"watchdog: {problem}")
            failed_regimes = [regime for regime, s in self.regime_slots.items() if s is slot]
            for regime in failed_regimes:  # its robots go back to the live champion
                del self.regime_slots[regime]
            if failed_regimes:
                self._relink(f"watchdog: {problem}")
            self.publish(Topic.WATCHDOG, {"event": "fallback", "failed": slot.champion_id, "problem": problem,
                                      "serving": fallback})
            if fallback and slot.champion_id != fallback:
                self.background.submit(_watchdog_rollback(self.robot, slot.champion_id, fallback, problem),
                                       lambda r: self.publish(Topic.ROLLBACK, {"by": "watchdog", "result": r}))
        self._routes()

    # -- slots -----------------------------------------------------------------------------------------------------

    @property
    def serving_id(self) -> str | None:
        """Id of the champion being served (None: the safe action)."""
        return self.live.champion_id if self.live else None

    def swap(self, new: ModelSlot | None, why: str) -> None:
        old = self.serving_id
        self.live = new
        self.serial += 1
        self._refresh()
        self._relink(f"live: {why}")
        log.info("serving %s (was %s): %s", new.champion_id if new else "the safe action", old or "the safe action",
                 why)
        self.publish(Topic.SERVING, {"champion": self.serving_id, "previous": old, "serial": self.serial, "why": why})

    def _refresh(self) -> None:
        """What depends on the served champion, made once per swap rather than per request."""
        self.live_status = p.ACTION_STATUS.pack(int(p.Source.LIVE), 0, 0, self.serial & 0xFFFFFFFF)
        self.info_json = json.dumps(self.info(), separators=(",", ":")).encode()

    def info(self) -> dict:
        spec = self.spec
        return {"protocol": p.VERSION, "robot": self.robot, "obs_dim": spec.obs_dim,
                "act_dim": 1 if spec.discrete else spec.act_dim, "discrete": spec.discrete,
                "action_count": spec.act_dim if spec.discrete else None,
                "action_low": None if spec.discrete else list(spec.action_low),
                "action_high": None if spec.discrete else list(spec.action_high),
                "safe_action": list(self.safe_action), "regimes": list(self.regimes),
                "max_message_bytes": self.max_bytes, "champion": self.serving_id, "regime": None}

    def client_info(self, identity: bytes) -> bytes:
        """INFO for one robot: the same as for everyone, with its own regime and the champion serving it."""
        client = self.clients.get(identity)
        if client is None or client.regime is None:
            return self.info_json
        served = client.line[0]
        return json.dumps({**self.info(), "regime": client.regime,
                           "champion": served.champion_id if served else None}, separators=(",", ":")).encode()

    def sync_job(self, registry: Registry) -> dict:
        """Read the live and last-known-good pointers and the portfolio champions of the regimes robots are in, and
        load them (background thread)."""
        result = {"live": None, "lkg": None, "problems": [], "regimes": {}}
        active = self.active
        for key, champion in (("live", registry.live(self.robot)), ("lkg", registry.last_known_good(self.robot))):
            try:
                result[key] = self.cache.load(registry, champion.id if champion else None, len(active))
            except SrghnError as exc:
                result["problems"].append(f"{key} champion {champion.id} cannot be loaded: {exc}")
        chosen = portfolio(registry, self.robot) if active else {}
        for regime in sorted(active & chosen.keys()):
            try:
                result["regimes"][regime] = self.cache.load(registry, chosen[regime].id, len(active))
            except SrghnError as exc:
                result["problems"].append(f"regime {regime}'s champion {chosen[regime].id} cannot be loaded: {exc}")
        return result

    def apply_sync(self, result: dict | Exception) -> None:
        """Take what :meth:`sync_job` read: swap when the registry's live champion changed."""
        if isinstance(result, Exception):
            self.publish(Topic.WATCHDOG, {"event": "sync_failed", "error": str(result)})
            return
        for problem in result["problems"]:
            log.error("%s", problem)
            self.publish(Topic.WATCHDOG, {"event": "load_failed", "error": problem})
        live, lkg = result["live"], result["lkg"]
        relink = False
        if lkg is not None and lkg.champion_id not in self.watchdog.failed and lkg is not self.lkg:
            self.lkg, relink = lkg, True
        regimes = {regime: slot for regime, slot in result.get("regimes", {}).items()
                   if slot.champion_id not in self.watchdog.failed}
        if regimes != self.regime_slots:
            self.regime_slots, relink = regimes, True
        if live is None:
            if not result["problems"] and self.live is not None:
                self.swap(None, "nothing is live in the registry")
        elif live.champion_id not in self.watchdog.failed and (  # a failed one waits for the registry to move on
                self.live is None or live.champion_id != self.live.champion_id):
            self.swap(live, "registry")
            relink = False  # swap relinked
        if relink:
            self._relink("portfolio")

    def sync(self) -> None:
        """Re-read the registry in the background (at most one such read queued at a time; a request meanwhile
        makes another follow it)."""
        if self.sync_pending:
            self.sync_again = True
            return
        self.sync_pending, self.sync_again = True, False

        def done(result: dict | Exception) -> None:
            self.sync_pending = False
            self.apply_sync(result)
            if self.sync_again:
                self.sync()

        self.background.submit(self.sync_job, done)

    # -- reports -----------------------------------------------------------------------------------------------

    def status(self) -> dict:
        n = min(self.acts, LATENCY_WINDOW)
        lat = self.latency[:n] / 1e3
        now = time.monotonic()
        recent = sorted(self.clients.items(), key=lambda kv: kv[1].last_seen)[-16:]
        returns = [r for c in self.clients.values() for r in list(c.returns)[-10:]]
        return {
            "serving": {"champion": self.serving_id, "source": "live" if self.live else "safe",
                        "last_known_good": self.lkg.champion_id if self.lkg else None, "serial": self.serial,
                        "failed": sorted(self.watchdog.failed),
                        "regimes": {regime: slot.champion_id for regime, slot in sorted(self.regime_slots.items())},
                        "below_safe": dict(sorted(self.below_safe.items()))},
            "requests": {"act": self.acts, "act_lane": self.loop.lane_answered if self.loop else 0,
                         "step": self.steps, "errors": self.errors, "watchdog": self.fallbacks,
                         "oversize": self.oversize,
                         "act_us_p50": round(float(np.percentile(lat, 50)), 1) if n else None,
                         "act_us_p99": round(float(np.percentile(lat, 99)), 1) if n else None},
            "clients": [{"client": c.name, "regime": c.regime,
                         "champion": c.line[0].champion_id if c.line[0] else None, "steps": c.steps,
                         "episodes": c.episodes,
                         "mean_return_last_10": round(float(np.mean(list(c.returns)[-10:])), 2) if c.returns else None,
                         "seen_s_ago": round(now - c.last_seen, 1)} for _, c in recent],
            "episodes": {"count": sum(c.episodes for c in self.clients.values()),
                         "mean_return_recent": round(float(np.mean(returns)), 2) if returns else None},
        }


def _watchdog_rollback(robot: str, failed: str, fallback: str, problem: str) -> Callable[[Registry], dict]:
    def rollback(registry: Registry) -> dict:
        live = registry.live(robot)
        if live is None or live.id != failed:
            return {"skipped": True}
        return registry.rollback("watchdog", robot, fallback, f"live session failed: {problem}").to_dict()

    return rollback
