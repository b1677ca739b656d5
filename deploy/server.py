"""The live control server: its own process, ONNX Runtime only (no torch import on this path).

It binds three sockets (design.md §4): **control** (ROUTER: robots ask for actions and report steps), **admin**
(ROUTER: status, champions, history, promote, rollback, pause / resume / regime) and **telemetry** (PUB, JSON
events). A fourth, internal PAIR socket connects it to the daemon's evolution process when there is one.

One thread serves every socket, so a request is answered by whatever session was current when it arrived: a swap
happens between two requests. Everything slow (registry transactions, loading a model into ONNX Runtime) runs on
a second thread, the *job* thread, which hands finished sessions back; the serving thread only swaps a
reference. Every action leaves through the watchdog: finite, inside the robot's bounds, and if the live session
fails, the next call goes to the last-known-good one within the same request.

Run it as ``python -m srghn.deploy.server CONFIG.json`` (the daemon does) with a :class:`ServeConfig`.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import zmq

from srghn import ConfigError, SrghnError
from srghn.controller.onnx_policy import ACTION_NAME, INPUT_NAME, OnnxPolicy, float32_inner_bounds
from srghn.controller.policy import PolicySpec
from srghn.deploy import protocol as p
from srghn.deploy.registry import Registry, champion_rows
from srghn.deploy.security import CurveKeys
from srghn.errors import PromotionRefused, UnknownChampion

LATENCY_WINDOW = 4096
TRANSITIONS = 64
"""Per client, the last transitions kept for the daemon's regime identification (sent every few seconds)."""
MAX_CLIENTS = 1024
"""Per-robot step statistics are kept for this many client identities (the least recently seen go first)."""


@dataclass(frozen=True)
class ServeConfig:
    """What the server needs to know; the daemon writes it as JSON. Everything about the robot comes from its
    profile, resolved by the daemon, so the server never loads a profile (profiles import torch)."""

    robot: str
    state_dir: str
    policy: dict
    """The robot's :class:`PolicySpec` as a dict (shapes and bounds)."""
    safe_action: tuple[float, ...]
    regimes: tuple[str, ...]
    control: str
    admin: str
    telemetry: str
    internal: str | None = None
    """The daemon's PAIR endpoint; None when the server runs alone (pause/resume/regime are then unavailable)."""
    max_message_bytes: int = p.DEFAULT_MAX_MESSAGE_BYTES
    stats_interval_s: float = 1.0
    sync_interval_s: float = 1.0
    """How often the registry's live pointer is re-read (changes made by other processes are picked up)."""
    curve_dir: str | None = None
    """Directory of the CURVE keys (see :mod:`srghn.deploy.security`); required when any endpoint is not local."""
    parent_pid: int | None = None
    """Exit when this process goes away (the daemon), so a killed daemon never leaves a server behind."""

    @property
    def spec(self) -> PolicySpec:
        return PolicySpec.from_dict(self.policy)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        data = json.loads(text)
        for key in ("safe_action", "regimes"):
            data[key] = tuple(data[key])
        return cls(**data)


class Loaded:
    """One champion loaded in ONNX Runtime, ready to serve."""

    __slots__ = ("champion_id", "session")

    def __init__(self, champion_id: str, model: bytes, spec: PolicySpec) -> None:
        policy = OnnxPolicy(model)
        if policy.spec != spec:
            raise PromotionRefused(f"champion {champion_id} declares policy {policy.spec.to_dict()}, this robot "
                                   f"serves {spec.to_dict()}")
        self.champion_id = champion_id
        self.session = policy.session

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.session.run([ACTION_NAME], {INPUT_NAME: obs[None]})[0][0]


@dataclass
class ClientStats:
    steps: int = 0
    episodes: int = 0
    episode_return: float = 0.0
    episode_steps: int = 0
    returns: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100))
    last_seen: float = 0.0
    pending: tuple | None = None
    """(observation, action) of its last ACT, waiting for the STEP that reports what followed."""
    transitions: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TRANSITIONS))
    fresh: int = 0
    """Transitions recorded since they were last sent to the daemon."""


class Watchdog:
    """Turns a policy output into an action a robot may execute, or says the policy failed."""

    def __init__(self, spec: PolicySpec, safe_action: tuple[float, ...]) -> None:
        self.discrete = spec.discrete
        self.n = spec.act_dim
        self.low, self.high = (None, None) if spec.discrete else float32_inner_bounds(spec)
        self.safe = np.asarray(safe_action, dtype=np.float32)

    def check(self, raw: np.ndarray) -> tuple[np.ndarray | None, bool, str]:
        """(action, clamped, problem): action is None when the output cannot be served."""
        if self.discrete:
            index = int(raw)
            if not 0 <= index < self.n:
                return None, False, f"discrete action {index} outside 0..{self.n - 1}"
            return np.asarray([index], dtype=np.float32), False, ""
        action = np.asarray(raw, dtype=np.float32)
        if action.shape != self.safe.shape:
            return None, False, f"action of shape {action.shape}, expected {self.safe.shape}"
        if not np.isfinite(action).all():
            return None, False, "non-finite action"
        clamped = np.clip(action, self.low, self.high)
        return clamped, bool((clamped != action).any()), ""


class ControlServer:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.spec = config.spec
        self.wire_act_dim = 1 if self.spec.discrete else self.spec.act_dim
        self.watchdog = Watchdog(self.spec, config.safe_action)
        self.started = time.time()
        self.live: Loaded | None = None
        self.lkg: Loaded | None = None
        self.failed: set[str] = set()
        self.serial = 0
        self.counts = collections.Counter()
        self.latency = np.zeros(LATENCY_WINDOW)
        self.clients: collections.OrderedDict[bytes, ClientStats] = collections.OrderedDict()
        self.evolution: dict | None = None
        self.stopping = False
        self.final_reply = False

        self.ctx = zmq.Context()
        self.keys = CurveKeys.for_endpoints(config.curve_dir, (config.control, config.admin, config.telemetry))
        self.auth = self.keys.start_authenticator(self.ctx) if self.keys else None
        zmq_max = config.max_message_bytes * p.ZMQ_MAXMSGSIZE_FACTOR
        self.control = self._bind(zmq.ROUTER, config.control, zmq_max)
        self.admin = self._bind(zmq.ROUTER, config.admin, zmq_max)
        self.telemetry = self._bind(zmq.PUB, config.telemetry, None)
        self.internal = None
        if config.internal:
            self.internal = self.ctx.socket(zmq.PAIR)
            self.internal.setsockopt(zmq.LINGER, 2000)
            self.internal.setsockopt(zmq.SNDTIMEO, 10_000)  # for the hello only; everything else never blocks
            self.internal.connect(config.internal)
        self.wake = self.ctx.socket(zmq.PULL)
        self.wake.bind(f"inproc://srghn-jobs-{id(self)}")
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self.local = threading.local()
        self.jobs = ThreadPoolExecutor(1, thread_name_prefix="srghn-jobs", initializer=self._job_thread_init)
        self.job_pending = False

    # -- sockets -------------------------------------------------------------------------------------------------

    def _bind(self, kind: int, endpoint: str, max_msg: int | None) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 500)
        if max_msg is not None:
            sock.setsockopt(zmq.MAXMSGSIZE, max_msg)
        if kind == zmq.ROUTER:
            sock.setsockopt(zmq.ROUTER_MANDATORY, 0)  # replies to a vanished client are dropped, never raised
        if self.keys:
            self.keys.make_server(sock)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise ConfigError(f"cannot bind {endpoint}: {exc}") from None
        return sock

    def publish(self, topic: str, data: dict) -> None:
        """One telemetry event: ``topic``, then JSON with ``topic``, ``time`` (Unix s), ``robot`` and ``data``.
        Non-finite numbers become null (strict JSON parsers reject NaN)."""
        event = {**data, "topic": topic, "time": time.time(), "robot": self.config.robot}
        self.telemetry.send_multipart([topic.encode(), json.dumps(_finite(event), default=str).encode()])

    def _to_daemon(self, message: dict) -> bool:
        if self.internal is None:
            return False
        try:  # never block serving on the daemon: a PAIR socket blocks while its peer is gone
            self.internal.send_json(message, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    # -- the job thread ------------------------------------------------------------------------------------------

    def _job_thread_init(self) -> None:
        self.local.registry = Registry.open(Path(self.config.state_dir), create=True)
        self.local.cache = {}
        self.local.push = self.ctx.socket(zmq.PUSH)
        self.local.push.connect(f"inproc://srghn-jobs-{id(self)}")

    def submit(self, job: Callable[[Registry], dict], done: Callable[[dict | Exception], None]) -> None:
        """Run ``job(registry)`` on the job thread; ``done(result)`` runs later on the serving thread."""

        def run() -> None:
            try:
                result = job(self.local.registry)
            except Exception as exc:  # every failure goes back to the serving thread as a value
                result = exc
            self.results.put((done, result))
            self.local.push.send(b"")

        self.jobs.submit(run)

    def _load(self, registry: Registry, champion_id: str | None) -> Loaded | None:
        if champion_id is None:
            return None
        cache = self.local.cache
        if champion_id not in cache:
            cache[champion_id] = Loaded(champion_id, registry.load_model(champion_id), self.spec)
            while len(cache) > 4:
                cache.pop(next(iter(cache)))
        return cache[champion_id]

    def _sync_job(self, registry: Registry) -> dict:
        """Read the live and last-known-good pointers and load both (cached)."""
        live = registry.live(self.config.robot)
        lkg = registry.last_known_good(self.config.robot)
        result = {"live": None, "lkg": None, "problems": []}
        for key, champion in (("live", live), ("lkg", lkg)):
            try:
                result[key] = self._load(registry, champion.id if champion else None)
            except SrghnError as exc:
                result["problems"].append(f"{key} champion {champion.id} cannot be loaded: {exc}")
        return result

    def _apply_sync(self, result: dict | Exception) -> None:
        if isinstance(result, Exception):
            self.publish("watchdog", {"event": "sync_failed", "error": str(result)})
            return
        for problem in result["problems"]:
            self.publish("watchdog", {"event": "load_failed", "error": problem})
        live, lkg = result["live"], result["lkg"]
        if lkg is not None and lkg.champion_id not in self.failed:
            self.lkg = lkg
        if live is None:
            if not result["problems"] and self.live is not None:
                self._swap(None, "nothing is live in the registry")
            return
        if live.champion_id in self.failed:
            return  # the watchdog took it out of service; wait for the registry to move on
        if self.live is None or live.champion_id != self.live.champion_id:
            self._swap(live, "registry")

    def _serving(self) -> str | None:
        """Id of the champion being served (None: the safe action)."""
        return self.live.champion_id if self.live else None

    def _swap(self, new: Loaded | None, why: str) -> None:
        old = self._serving()
        self.live = new
        self.serial += 1
        self.publish("serving", {"champion": new.champion_id if new else None, "previous": old, "serial": self.serial,
                                 "why": why})

    def sync(self) -> None:
        """Re-read the registry in the background (at most one such read queued at a time)."""
        if not self.job_pending:
            self.job_pending = True

            def done(result: dict | Exception) -> None:
                self.job_pending = False
                self._apply_sync(result)

            self.submit(self._sync_job, done)

    # -- control -------------------------------------------------------------------------------------------------

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, p.Source, int, str]:
        """The watchdog-checked action for one observation: live, else last-known-good, else the safe action."""
        flags = 0
        source = p.Source.LIVE
        for loaded in (self.live, self.lkg):
            if loaded is None or loaded.champion_id in self.failed:
                source = p.Source.LAST_KNOWN_GOOD
                continue
            try:
                action, clamped, problem = self.watchdog.check(loaded.act(obs))
            except Exception as exc:  # ONNX Runtime raises its own types; any failure means: fall back
                action, clamped, problem = None, False, f"inference failed: {exc}"
            if action is not None:
                if loaded is not self.live:
                    source = p.Source.LAST_KNOWN_GOOD
                return action, source, flags | (p.ActionFlag.CLAMPED if clamped else 0), loaded.champion_id
            self._fail(loaded, problem)
            flags |= p.ActionFlag.FALLBACK
            source = p.Source.LAST_KNOWN_GOOD
        return self.watchdog.safe, p.Source.SAFE, flags, ""

    def _fail(self, loaded: Loaded, problem: str) -> None:
        """Take a failing champion out of service now; ask the registry to roll back to the last-known-good."""
        self.failed.add(loaded.champion_id)
        self.counts["watchdog"] += 1
        fallback = self.lkg.champion_id if self.lkg and self.lkg.champion_id not in self.failed else None
        if loaded is self.live:
            self._swap(self.lkg if fallback else None, f"watchdog: {problem}")
        self.publish("watchdog", {"event": "fallback", "failed": loaded.champion_id, "problem": problem,
                                  "serving": fallback})
        if fallback and loaded.champion_id != fallback:
            def rollback(registry: Registry) -> dict:
                live = registry.live(self.config.robot)
                if live is None or live.id != loaded.champion_id:
                    return {"skipped": True}
                return registry.rollback("watchdog", self.config.robot, fallback,
                                         f"live session failed: {problem}").to_dict()

            self.submit(rollback, lambda r: self.publish("rollback", {"by": "watchdog", "result": r}))

    def on_control(self, frames: list[bytes]) -> None:
        t0 = time.perf_counter()
        envelope, msg = p.split_envelope(frames)
        request_id = 0
        try:
            msg_type, request_id = p.parse_header(msg, p.CONTROL_REQUESTS, self.config.max_message_bytes)
            if msg_type is p.MsgType.ACT:
                obs = p.floats(msg[1], self.spec.obs_dim, "observation", request_id)
                action, source, flags, champion = self.act(obs)
                reply = p.action_frames(request_id, action, source, flags, self.serial, champion)
                self._client(envelope[0]).pending = (obs, action)
                self.counts["act"] += 1
                self.latency[self.counts["act"] % LATENCY_WINDOW] = time.perf_counter() - t0
            elif msg_type is p.MsgType.STEP:
                reward, terminated, truncated = p.parse_outcome(msg[1], request_id)
                next_obs = p.floats(msg[2], self.spec.obs_dim, "next observation", request_id)
                self._record_step(envelope[0], reward, terminated or truncated, next_obs)
                reply = [p.header(p.MsgType.STEP_OK, request_id)]
            else:
                reply = p.json_frames(p.MsgType.INFO_OK, request_id, self.info())
        except p.ProtocolError as exc:
            self.counts["errors"] += 1
            reply = p.error_frames(exc.code, str(exc), exc.request_id)
        except Exception as exc:  # a bug must never stop the server: answer INTERNAL and go on
            self.counts["errors"] += 1
            reply = p.error_frames(p.ErrorCode.INTERNAL, f"internal error: {exc!r}", request_id)
        self.control.send_multipart(envelope + reply)  # copy=False costs ~6 us more for frames this small

    def _client(self, identity: bytes) -> ClientStats:
        """The statistics of one client (robot), most recently seen last; the least recent beyond the cap go."""
        stats = self.clients.get(identity)
        if stats is None:
            stats = self.clients[identity] = ClientStats()
            if len(self.clients) > MAX_CLIENTS:
                self.clients.popitem(last=False)
        else:
            self.clients.move_to_end(identity)
        stats.last_seen = time.time()
        return stats

    def _record_step(self, client: bytes, reward: float, done: bool, next_obs: np.ndarray) -> None:
        self.counts["step"] += 1
        stats = self._client(client)
        if stats.pending is not None:
            stats.transitions.append((*stats.pending, next_obs))
            stats.pending = None
            stats.fresh += 1
        stats.steps += 1
        stats.episode_steps += 1
        stats.episode_return += reward
        if done:
            stats.episodes += 1
            stats.returns.append(stats.episode_return)
            self.publish("episode", {"client": _client_name(client), "return": stats.episode_return,
                                     "steps": stats.episode_steps,
                                     "champion": self._serving()})
            stats.episode_return, stats.episode_steps = 0.0, 0

    def info(self) -> dict:
        return {"protocol": p.VERSION, "robot": self.config.robot, "obs_dim": self.spec.obs_dim,
                "act_dim": self.wire_act_dim, "discrete": self.spec.discrete,
                "action_count": self.spec.act_dim if self.spec.discrete else None,
                "action_low": None if self.spec.discrete else list(self.spec.action_low),
                "action_high": None if self.spec.discrete else list(self.spec.action_high),
                "safe_action": list(self.config.safe_action), "regimes": list(self.config.regimes),
                "max_message_bytes": self.config.max_message_bytes,
                "champion": self._serving()}

    # -- admin ---------------------------------------------------------------------------------------------------

    def on_admin(self, frames: list[bytes]) -> None:
        envelope, msg = p.split_envelope(frames)
        request_id = 0

        def reply(result: dict | Exception) -> None:
            if isinstance(result, p.ProtocolError):
                out = p.error_frames(result.code, str(result), result.request_id)
            elif isinstance(result, Exception):
                out = p.error_frames(*_error_code(result), request_id)
            else:
                out = p.json_frames(p.MsgType.ADMIN_OK, request_id, {"ok": True, **result})
            self.admin.send_multipart(envelope + out)

        try:
            msg_type, request_id = p.parse_header(msg, p.ADMIN_REQUESTS, self.config.max_message_bytes)
            if msg_type is p.MsgType.INFO:
                self.admin.send_multipart(envelope + p.json_frames(p.MsgType.INFO_OK, request_id, self.info()))
                return
            self.admin_command(p.parse_json(msg[1], request_id), request_id, reply)
        except p.ProtocolError as exc:
            self.counts["errors"] += 1
            reply(exc)
        except Exception as exc:  # never let a request stop the server
            self.counts["errors"] += 1
            reply(p.ProtocolError(p.ErrorCode.INTERNAL, f"internal error: {exc!r}", request_id))

    def admin_command(self, request: dict, request_id: int, reply: Callable[[dict | Exception], None]) -> None:
        args = _Args(request, request_id)
        cmd = args.str("cmd", required=True)
        robot = self.config.robot
        if cmd == "status":
            args.done()
            reply(self.status())
        elif cmd == "champions":
            which, status = args.str("robot"), args.str("status")
            args.done()
            self.submit(lambda r: {"champions": champion_rows(r, which, status)}, reply)
        elif cmd == "history":
            which, limit = args.str("robot"), args.int("limit", low=1)
            args.done()
            self.submit(lambda r: {"events": [e.to_dict() for e in r.history(which, limit)]}, reply)
        elif cmd in ("promote", "rollback"):
            champion = args.str("id", required=cmd == "promote") if cmd == "promote" else args.str("to")
            reason, actor = args.str("reason"), args.str("actor") or "admin"
            force = args.bool("force") if cmd == "promote" else False
            args.done()
            self.transition(cmd, champion, actor, reason, force, reply)
        elif cmd in ("pause", "resume", "regime"):
            regime = args.str("regime", required=True) if cmd == "regime" else None
            actor = args.str("actor") or "admin"
            args.done()
            if regime is not None and regime not in self.config.regimes:
                raise p.ProtocolError(p.ErrorCode.BAD_REQUEST, f"unknown regime {regime!r} for robot {robot}; "
                                      f"known: {', '.join(self.config.regimes)}", request_id)
            if not self._to_daemon({"op": "command", "cmd": cmd, "regime": regime, "actor": actor}):
                raise p.ProtocolError(p.ErrorCode.UNAVAILABLE, "no evolution is attached to this server", request_id)
            self.publish("command", {"cmd": cmd, "regime": regime, "actor": actor})
            reply({"accepted": cmd, "regime": regime,
                   "note": "the evolution loop applies it at the end of the current generation"})
        else:
            raise p.ProtocolError(p.ErrorCode.BAD_REQUEST, f"unknown command {cmd!r}; known: status, champions, "
                                  "history, promote, rollback, pause, resume, regime", request_id)

    def transition(self, cmd: str, champion: str | None, actor: str, reason: str | None, force: bool,
                   reply: Callable[[dict | Exception], None]) -> None:
        """Promote or roll back in the registry, load the new live session, then swap and reply."""
        robot = self.config.robot

        def job(registry: Registry) -> dict:
            if cmd == "promote":
                target = registry.get(champion)
                if target.robot != robot:
                    raise PromotionRefused(f"champion {target.id} belongs to robot {target.robot}; this daemon "
                                           f"serves {robot}")
                event = registry.promote(target.id, actor, reason, force)
            else:
                event = registry.rollback(actor, robot, champion, reason)
            return {"event": event.to_dict(), "sync": self._sync_job(registry)}

        def done(result: dict | Exception) -> None:
            if isinstance(result, Exception):
                reply(result)
                return
            sync = result.pop("sync")
            live = sync["live"]
            if live is not None:
                self.failed.discard(live.champion_id)  # an operator put it back: serve it
            self._apply_sync(sync)
            self.publish("promotion" if cmd == "promote" else "rollback", result["event"])
            reply({**result, "serving": self._serving(), "serial": self.serial})

        self.submit(job, done)

    def status(self) -> dict:
        n = min(self.counts["act"], LATENCY_WINDOW)
        lat = self.latency[:n]
        now = time.time()
        returns = [r for c in self.clients.values() for r in list(c.returns)[-10:]]
        return {
            "robot": self.config.robot, "protocol": p.VERSION, "pid": os.getpid(),
            "uptime_s": round(now - self.started, 1),
            "endpoints": {"control": self.config.control, "admin": self.config.admin,
                          "telemetry": self.config.telemetry},
            "serving": {"champion": self._serving(),
                        "source": "live" if self.live else "safe",
                        "last_known_good": self.lkg.champion_id if self.lkg else None,
                        "serial": self.serial, "failed": sorted(self.failed)},
            "requests": {"act": self.counts["act"], "step": self.counts["step"], "errors": self.counts["errors"],
                         "watchdog": self.counts["watchdog"],
                         "act_us_p50": round(float(np.percentile(lat, 50)) * 1e6, 1) if n else None,
                         "act_us_p99": round(float(np.percentile(lat, 99)) * 1e6, 1) if n else None},
            "clients": [{"client": _client_name(k), "steps": c.steps, "episodes": c.episodes,
                         "mean_return_last_10": round(float(np.mean(list(c.returns)[-10:])), 2) if c.returns else None,
                         "seen_s_ago": round(now - c.last_seen, 1)} for k, c in list(self.clients.items())[-16:]],
            "episodes": {"count": sum(c.episodes for c in self.clients.values()),
                         "mean_return_recent": round(float(np.mean(returns)), 2) if returns else None},
            "evolution": self.evolution,
        }

    # -- internal (daemon) ---------------------------------------------------------------------------------------

    def on_internal(self, message: dict) -> None:
        op = message.get("op")
        if op == "publish":
            self.publish(message["topic"], message.get("data", {}))
        elif op == "evolution":
            self.evolution = message["status"]
        elif op == "sync":
            self.sync()
        elif op == "promote":
            token = message["token"]

            def answer(result: dict | Exception) -> None:
                ok = not isinstance(result, Exception)
                self._to_daemon({"op": "promoted", "token": token, "ok": ok,
                                 "result": result if ok else None, "error": None if ok else str(result)})

            self.transition("promote", message["id"], message.get("actor", "srghn-daemon"), message.get("reason"),
                            False, answer)
        elif op == "stop":
            self.stopping = True
            self.final_reply = True

    # -- loop ----------------------------------------------------------------------------------------------------

    def serve(self) -> None:
        # The first tick serves the last live champion: load it before reading any request.
        self._apply_sync(self.jobs.submit(lambda: self._sync_job(self.local.registry)).result())
        self.publish("server", {"event": "started", "pid": os.getpid(), "champion": self._serving()})
        if self.internal is not None:  # blocking: the daemon waits for it (and connecting takes a moment)
            self.internal.send_json({"op": "hello", "pid": os.getpid(), "champion": self._serving()})
        poller = zmq.Poller()
        for sock in (self.control, self.admin, self.wake, self.internal):
            if sock is not None:
                poller.register(sock, zmq.POLLIN)
        next_stats = next_sync = time.monotonic()
        last_counts = collections.Counter()
        while not self.stopping:
            timeout = max(0.0, min(next_stats, next_sync) - time.monotonic())
            for sock, _ in poller.poll(timeout * 1000):
                if sock is self.control:
                    self.on_control(self.control.recv_multipart())
                elif sock is self.admin:
                    self.on_admin(self.admin.recv_multipart())
                elif sock is self.wake:
                    self.wake.recv()
                    done, result = self.results.get()
                    done(result)
                elif sock is self.internal:
                    try:
                        self.on_internal(self.internal.recv_json())
                    except (ValueError, KeyError, TypeError) as exc:
                        self.publish("watchdog", {"event": "bad_internal_message", "error": str(exc)})
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + self.config.stats_interval_s
                self.publish("live", self._live_stats(last_counts))
                last_counts = self.counts.copy()
                self._send_transitions()
                if self.config.parent_pid and not _alive(self.config.parent_pid):
                    self.stopping = True
            if now >= next_sync:
                next_sync = now + self.config.sync_interval_s
                self.sync()
        self.close()

    def _send_transitions(self) -> None:
        """Hand the most recently active robot's latest transitions to the daemon, which replays them in each
        regime's simulator to tell whether the robot's dynamics changed."""
        if self.internal is None:
            return
        for identity, stats in reversed(self.clients.items()):
            if len(stats.transitions) < TRANSITIONS // 2 or stats.fresh < TRANSITIONS // 4:
                continue
            obs, actions, next_obs = (np.stack(column).tolist() for column in zip(*stats.transitions, strict=True))
            if self._to_daemon({"op": "transitions", "client": _client_name(identity), "obs": obs,
                                "actions": actions, "next_obs": next_obs}):
                stats.fresh = 0
            return

    def _live_stats(self, last: collections.Counter) -> dict:
        status = self.status()
        interval = self.config.stats_interval_s
        return {"champion": self._serving(), "serial": self.serial,
                "act_per_s": round((self.counts["act"] - last["act"]) / interval, 1),
                "step_per_s": round((self.counts["step"] - last["step"]) / interval, 1),
                "errors": self.counts["errors"], **{k: status["requests"][k] for k in ("act_us_p50", "act_us_p99")},
                "episodes": status["episodes"]}

    def close(self) -> None:
        final = self.status()
        self.publish("server", {"event": "stopped", "requests": final["requests"], "episodes": final["episodes"]})
        if self.final_reply:
            self._to_daemon({"op": "stopped", "status": final})
        self.jobs.shutdown(wait=True, cancel_futures=True)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.destroy(linger=1000)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return os.getppid() == pid


def _client_name(identity: bytes) -> str:
    """A ROUTER identity as text: printable names as they are (robots may set ZMQ_ROUTING_ID), others in hex."""
    try:
        text = identity.decode("ascii")
        if text.isprintable() and text:
            return text
    except UnicodeDecodeError:
        pass
    return identity.hex()


def _finite(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _error_code(exc: Exception) -> tuple[p.ErrorCode, str]:
    if isinstance(exc, UnknownChampion):
        return p.ErrorCode.UNKNOWN_CHAMPION, str(exc)
    if isinstance(exc, PromotionRefused):
        return p.ErrorCode.REFUSED, str(exc)
    if isinstance(exc, ConfigError):
        return p.ErrorCode.BAD_REQUEST, str(exc)
    if isinstance(exc, SrghnError):
        return p.ErrorCode.REFUSED, str(exc)
    return p.ErrorCode.INTERNAL, f"internal error: {exc!r}"


class _Args:
    """Typed, validated access to an admin request's fields; unknown fields are an error."""

    def __init__(self, request: dict, request_id: int) -> None:
        self.request, self.request_id, self.used = request, request_id, set()

    def _get(self, key: str, kind: type | tuple[type, ...], required: bool) -> object:
        self.used.add(key)
        value = self.request.get(key)
        if value is None:
            if required:
                raise p.ProtocolError(p.ErrorCode.BAD_REQUEST, f"field {key!r} is required", self.request_id)
            return None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise p.ProtocolError(p.ErrorCode.BAD_REQUEST, f"field {key!r} has the wrong type "
                                  f"({type(value).__name__})", self.request_id)
        return value

    def str(self, key: str, required: bool = False) -> str | None:
        value = self._get(key, str, required)
        if value is not None and not (0 < len(value) <= 1000):
            raise p.ProtocolError(p.ErrorCode.BAD_REQUEST, f"field {key!r} must be 1..1000 characters",
                                  self.request_id)
        if value is not None and not value.isascii():
            try:
                value.encode("utf-8")  # JSON's "\ud800" escapes decode to lone surrogates that no UTF-8 can hold
            except UnicodeEncodeError:
                raise p.ProtocolError(p.ErrorCode.BAD_REQUEST, f"field {key!r} holds a lone surrogate (not valid "
                                      "Unicode)", self.request_id) from None
        return value

    def int(self, key: str, low: int, high: int = 2**63 - 1) -> int | None:
        value = self._get(key, int, False)
        if value is not None and not low <= value <= high:
            raise p.ProtocolError(p.ErrorCode.BAD_REQUEST, f"field {key!r} must be in {low}..{high}",
                                  self.request_id)
        return value

    def bool(self, key: str) -> bool:
        return bool(self._get(key, bool, False))

    def done(self) -> None:
        unknown = sorted(set(self.request) - self.used)
        if unknown:
            raise p.ProtocolError(p.ErrorCode.BAD_REQUEST, f"unknown field(s) {', '.join(unknown)}", self.request_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srghn.deploy.server", description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="ServeConfig JSON file")
    args = parser.parse_args(argv)
    config = ServeConfig.from_json(args.config.read_text())
    if config.parent_pid:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when we stop (Ctrl-C reaches it)
    server = ControlServer(config)
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "stopping", True))
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
