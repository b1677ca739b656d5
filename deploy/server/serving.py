"""Serving: the control socket (``ACT``, ``STEP``, ``INFO``), the model slots and the swap between them.

A *slot* is one champion loaded in ONNX Runtime. The live slot serves; the last-known-good slot stands by for the
watchdog (:mod:`srghn.safety.watchdog`). Every slot of the robot is bound (ONNX Runtime I/O binding) to the same
:class:`PolicyIO` buffers, so a request's observation is copied once into the input buffer and whichever slot
serves it writes its action into the output buffer: no allocation, no copy, on the hot path. Slots are loaded
on the background thread and swapped in between two requests by one assignment.

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
import math
import struct
import time
from collections import deque
from collections.abc import Callable

import numpy as np
import zmq

from srghn.controller.onnx_policy import ACTION_NAME, INPUT_NAME, LOGITS_NAME, OnnxPolicy
from srghn.controller.policy import PolicySpec
from srghn.deploy.registry.portfolio import portfolio
from srghn.deploy.registry.store import Registry
from srghn.deploy.server.background import Background
from srghn.deploy.server.fastloop import discarder, lane_available, lane_session
from srghn.deploy.wire import protocol as p
from srghn.deploy.wire.keys import Identity, allowed, sender
from srghn.deploy.wire.messages import Returns, Transitions
from srghn.errors import PromotionRefused, ProtocolError, SrghnError
from srghn.safety.watchdog import Verdict, Watchdog

log = logging.getLogger("srghn.server.serving")

LATENCY_WINDOW = 4096
"""``status`` reports the server's handling time of this many most recent ``ACT`` requests."""
TRANSITIONS = 64
"""Per client, the last transitions kept for the daemon's regime identification."""
FORWARD_MIN = 8
"""A client's new transitions go to the daemon once at least this many have come (checked every loop tick)."""
MAX_CLIENTS = 1024
"""Per-robot step statistics are kept for this many client identities (the least recently seen go first)."""
SLOT_CACHE = 4
"""Models kept loaded for a quick swap back (rollbacks)."""
REQUEST_ID = struct.Struct("<Q")

Publish = Callable[[str, dict], None]


class PolicyIO:
    """The input and output buffers that every loaded model of one robot is bound to."""

    def __init__(self, spec: PolicySpec) -> None:
        self.obs = np.zeros((1, spec.obs_dim), np.float32)
        self.obs_bytes = memoryview(self.obs).cast("B")
        self.unpack = struct.Struct(f"<{spec.obs_dim}f").unpack
        self.outputs = {ACTION_NAME: np.zeros(1, np.int64) if spec.discrete else np.zeros((1, spec.act_dim),
                                                                                          np.float32)}
        if spec.discrete:
            self.outputs[LOGITS_NAME] = np.zeros((1, spec.act_dim), np.float32)

    def take(self, frame: bytes) -> bool:
        """Copy an observation frame (of the right length) into the input buffer; whether it is all finite."""
        self.obs_bytes[:] = frame
        return all(map(math.isfinite, self.unpack(frame)))  # plain Python beats numpy calls at this size


class ModelSlot:
    """One champion loaded in ONNX Runtime, bound to the robot's :class:`PolicyIO`; with ``lane``, loaded for the
    compiled loop's lane too (:func:`srghn.deploy.server.fastloop.lane_session`; None where it cannot run)."""

    __slots__ = ("action", "binding", "champion_id", "lane", "reply_id", "session", "values")

    def __init__(self, champion_id: str, model: bytes, spec: PolicySpec, io: PolicyIO, lane: bool = False) -> None:
        import onnxruntime as ort

        policy = OnnxPolicy(model)
        if policy.spec != spec:
            raise PromotionRefused(f"champion {champion_id} declares policy {policy.spec.to_dict()}, this robot "
                                   f"serves {spec.to_dict()}")
        self.champion_id, self.reply_id = champion_id, champion_id.encode()
        self.session = policy.session
        self.binding = self.session.io_binding()
        self.values = [ort.OrtValue.ortvalue_from_numpy(io.obs)]  # shares the buffer; kept alive with the slot
        self.binding.bind_ortvalue_input(INPUT_NAME, self.values[0])
        for name in policy.output_names:
            self.values.append(ort.OrtValue.ortvalue_from_numpy(io.outputs[name]))
            self.binding.bind_ortvalue_output(name, self.values[-1])
        self.action = io.outputs[ACTION_NAME]
        self.lane = lane_session(model, spec, champion_id) if lane else None

    def run(self) -> np.ndarray:
        """The action for the observation in the input buffer (written into the output buffer)."""
        self.session.run_with_iobinding(self.binding)
        return self.action


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
        self.cache: dict[str, ModelSlot] = {}
        """Loaded slots by champion id; used by the background thread only."""
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
        """Session recording (:class:`~srghn.deploy.recording.recording.Tap`): every request and its reply as is."""
        self.lane = lane and identify is None and lane_available()
        """Whether slots are loaded for the compiled loop's lane too (it needs the frames without CURVE)."""
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
        self.publish("assignment", {"client": client.name, "regime": client.regime, "previous_regime": previous_regime,
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
            self.publish("episode", {"client": client.name, "return": client.episode_return,
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
            self.publish("watchdog", {"event": "fallback", "failed": slot.champion_id, "problem": problem,
                                      "serving": fallback})
            if fallback and slot.champion_id != fallback:
                self.background.submit(_watchdog_rollback(self.robot, slot.champion_id, fallback, problem),
                                       lambda r: self.publish("rollback", {"by": "watchdog", "result": r}))
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
        self.publish("serving", {"champion": self.serving_id, "previous": old, "serial": self.serial, "why": why})

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

    def load(self, registry: Registry, champion_id: str | None) -> ModelSlot | None:
        """The slot of a champion (background thread only; the last few stay cached)."""
        if champion_id is None:
            return None
        if champion_id not in self.cache:
            self.cache[champion_id] = ModelSlot(champion_id, registry.load_model(champion_id), self.spec, self.io,
                                                self.lane)
            while len(self.cache) > SLOT_CACHE + len(self.active):
                self.cache.pop(next(iter(self.cache)))
        return self.cache[champion_id]

    def sync_job(self, registry: Registry) -> dict:
        """Read the live and last-known-good pointers and the portfolio champions of the regimes robots are in, and
        load them (background thread)."""
        result = {"live": None, "lkg": None, "problems": [], "regimes": {}}
        for key, champion in (("live", registry.live(self.robot)), ("lkg", registry.last_known_good(self.robot))):
            try:
                result[key] = self.load(registry, champion.id if champion else None)
            except SrghnError as exc:
                result["problems"].append(f"{key} champion {champion.id} cannot be loaded: {exc}")
        active = self.active
        chosen = portfolio(registry, self.robot) if active else {}
        for regime in sorted(active & chosen.keys()):
            try:
                result["regimes"][regime] = self.load(registry, chosen[regime].id)
            except SrghnError as exc:
                result["problems"].append(f"regime {regime}'s champion {chosen[regime].id} cannot be loaded: {exc}")
        return result

    def apply_sync(self, result: dict | Exception) -> None:
        """Take what :meth:`sync_job` read: swap when the registry's live champion changed."""
        if isinstance(result, Exception):
            self.publish("watchdog", {"event": "sync_failed", "error": str(result)})
            return
        for problem in result["problems"]:
            log.error("%s", problem)
            self.publish("watchdog", {"event": "load_failed", "error": problem})
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

    def take_transitions(self) -> list[Transitions]:
        """Each robot's transitions the daemon has not seen yet, for robots with at least :data:`FORWARD_MIN` of
        them (the daemon replays them in the twin to tell each robot's regime)."""
        out = []
        for identity in self.fresh_clients:
            client = self.clients.get(identity)
            if client is None:
                continue
            rows = list(client.transitions)[-min(client.fresh, TRANSITIONS):]
            client.fresh = 0
            obs, actions, next_obs = ([np.frombuffer(f, "<f4").tolist() for f in column]
                                      for column in zip(*rows, strict=True))
            out.append(Transitions(client.name, obs, actions, next_obs, client.steps))
        self.fresh_clients.clear()
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


def _watchdog_rollback(robot: str, failed: str, fallback: str, problem: str) -> Callable[[Registry], dict]:
    def rollback(registry: Registry) -> dict:
        live = registry.live(robot)
        if live is None or live.id != failed:
            return {"skipped": True}
        return registry.rollback("watchdog", robot, fallback, f"live session failed: {problem}").to_dict()

    return rollback


def receive(sock: zmq.Socket, identify: Callable | None, max_bytes: int) -> tuple[list, tuple[int, int]] | None:
    """The next request waiting on ``sock``, or None: its frames (bytes, or uncopied frames, which carry the CURVE
    key, when ``identify`` is set) and ``(0, 0)``; or, past the whole-message limit (``max_bytes`` after the
    routing identity, or :data:`~srghn.deploy.wire.protocol.MAX_REQUEST_FRAMES` parts), the frames kept before it and
    the message's ``(bytes, parts)``: the rest is dropped as it is received, never kept."""
    copy = identify is None
    try:
        frame = sock.recv(zmq.NOBLOCK, copy=copy)
    except zmq.Again:
        return None
    frames, size, envelope = [frame], 0, 1
    while sock.getsockopt(zmq.RCVMORE):
        frame = sock.recv(copy=copy)
        size += len(frame)
        if len(frames) == 1 and not len(frame):
            envelope = 2  # a REQ delimiter
        if size > max_bytes or len(frames) - envelope >= p.MAX_REQUEST_FRAMES:
            more = sock.getsockopt(zmq.RCVMORE)
            rest, parts = discard_rest(sock) if more else (0, 0)
            return frames, (size + rest, len(frames) + 1 - envelope + parts)
        frames.append(frame)
    return frames, (0, 0)


def discard_rest(sock: zmq.Socket) -> tuple[int, int]:
    """Receive and drop the rest of the message being received: (bytes, parts). In C when the compiled loop is
    built (a Python object per part would make a million empty parts cost seconds)."""
    discard = discarder()
    if discard is not None:
        return discard(sock.underlying)
    size = parts = 0
    more = True
    while more:
        frame = sock.recv(copy=False)
        size, parts, more = size + len(frame), parts + 1, frame.more
    return size, parts


def oversize_reply(frames: list[bytes], size: int, count: int, max_bytes: int,
                   error: Callable[[ProtocolError], list[bytes]]) -> tuple[list[bytes], list[bytes]]:
    """(envelope, ERROR reply) for a request past the whole-message limit, of which ``frames`` were kept: a bad
    header or version is answered first (the validation order), else OVERSIZE."""
    envelope, msg = p.split_envelope(frames)
    request_id = 0
    try:
        p.parse_header(msg[:1], frozenset(), 2**62)  # header and version only: what comes before the size
    except ProtocolError as exc:
        if exc.code in (p.ErrorCode.BAD_FRAMES, p.ErrorCode.BAD_HEADER, p.ErrorCode.UNSUPPORTED_VERSION):
            return envelope, error(exc)
        request_id = exc.request_id
    return envelope, error(ProtocolError(p.ErrorCode.OVERSIZE, f"message of {size} bytes in {count} frames "
                                         f"exceeds the limit of {max_bytes} bytes and {p.MAX_REQUEST_FRAMES} frames "
                                         "(the rest was dropped as it came)", request_id))

