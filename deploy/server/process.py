"""The control server: its own process, ONNX Runtime only (no torch on this path), and the most robust process
of srghn -- it outlives the evolution daemon, and its supervisor (systemd on a robot, else
:mod:`srghn.deploy.server.supervisor`) restarts it within a second when it dies.

Sockets (docs/architecture.md): **control** (ROUTER, :mod:`~srghn.deploy.server.serving`), **admin** (ROUTER,
:mod:`~srghn.deploy.server.admin`), **telemetry** (PUB, JSON events) and **internal** (ROUTER on
``ipc://<state dir>/internal.sock``, :mod:`~srghn.deploy.server.peer`: the daemon attaches there).
One thread serves them
all; registry work and model loads run on a second one (:mod:`~srghn.deploy.server.background`).

Life cycle, as uvicorn has it: :meth:`Server.startup` (load the live and last-known-good champions, *then* bind,
then tell systemd it is ready), :meth:`Server.main_loop` (serve; every tick: telemetry, registry re-read,
heartbeats, systemd watchdog), :meth:`Server.shutdown` (in order, each step bounded). SIGTERM and SIGINT only set
a flag the loop looks at between two requests.

Run it as ``python -m srghn.deploy.server.process CONFIG.json`` with a :class:`~srghn.deploy.server.config.ServeConfig`
(``srghn-ctl serve`` and ``srghn-ctl run`` write one).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gc
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Container
from pathlib import Path

import zmq

from srghn.deploy.process import logs, sdnotify
from srghn.deploy.process.signals import ExitFlag
from srghn.deploy.process.state import SERVER, hold_lock, lock_is_held, remove_runfile, secure_state_dir, write_runfile
from srghn.deploy.recording.tap import Tap
from srghn.deploy.server import fastloop, placement
from srghn.deploy.server.admin import Admin
from srghn.deploy.server.background import Background
from srghn.deploy.server.config import ServeConfig
from srghn.deploy.server.peer import DaemonPeer
from srghn.deploy.server.serving import Serving
from srghn.deploy.wire import protocol as p
from srghn.deploy.wire.keys import CurveServer, owner_identity
from srghn.deploy.wire.topics import Topic
from srghn.errors import ConfigError, SrghnError

log = logging.getLogger("srghn.server")

TICK_S = 0.1
SHUTDOWN_LINGER_MS = 1000
SWITCH_INTERVAL_S = 0.0005
"""How long the background thread may hold the interpreter lock while a request waits (Python's default: 5 ms)."""
class Server:
    def __init__(self, config: ServeConfig, supervised: bool = False, stoppable: bool = False,
                 config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        """Its ServeConfig file: what a new supervisor is started with when this one's died."""
        self.supervised = supervised
        self.supervisor = os.getppid() if supervised else None
        """The supervisor's pid (None: not supervised here, e.g. systemd's own unit or a test)."""
        self.replacement: subprocess.Popen | None = None
        self.unsupervised_since: float | None = None
        """Started by :mod:`srghn.deploy.server.supervisor`, which holds the server lock across restarts."""
        self.stoppable = stoppable
        """A daemon may stop it (``srghn-ctl run`` started it); otherwise a daemon's stop is a detach."""
        self.should_exit = ExitFlag()
        self.started = time.time()
        self.tap: Tap | None = None
        """Session recording: the recorder process's side in this one (``config.record``)."""
        self.socket_loop = "pyzmq"
        """Which loop answers robots (see :meth:`_robots_first`)."""

    def run(self) -> int:
        """Serve until SIGTERM / SIGINT or a daemon's stop; 0 after an orderly shutdown."""
        state = secure_state_dir(Path(self.config.state_dir))
        logs.configure(state, "server")
        with self.should_exit.captured(), (contextlib.nullcontext() if self.supervised else hold_lock(state, SERVER)):
            try:
                self.startup()
            except SrghnError as exc:
                log.error("the server cannot start: %s", exc)
                raise
            except Exception:
                log.exception("the server cannot start")
                raise
            try:
                self.main_loop()
            finally:
                self.shutdown()
        return 0

    # -- startup ---------------------------------------------------------------------------------------------------

    def startup(self) -> None:
        config = self.config
        _prioritise(config.realtime_priority)  # before any thread starts: they all inherit it
        if config.serve_cpu is not None:  # the threads started below inherit the other CPUs...
            placement.keep_off(config.serve_cpu)
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.ctx = zmq.Context()
        self.curve = CurveServer.for_endpoints(config.curve_dir, config.endpoints)
        identify = self.curve.identity if self.curve else None
        self.background = Background(self.ctx, Path(config.state_dir))
        if config.record:
            self.tap = Tap.start(self.ctx, Path(config.state_dir), config.robot, config.record)
        zmq_max = config.max_message_bytes * p.ZMQ_MAXMSGSIZE_FACTOR
        control, admin = self._socket(zmq.ROUTER, "control", zmq_max), self._socket(zmq.ROUTER, "admin", zmq_max)
        self.telemetry = self._socket(zmq.PUB, "telemetry", None)
        self.internal = self.ctx.socket(zmq.ROUTER)
        self.internal.setsockopt(zmq.LINGER, 0)
        self.internal.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.serving = Serving(config.robot, config.spec, config.safe_action, config.regimes,
                               config.max_message_bytes, control, self.publish, self.background, identify,
                               lane=config.socket_loop == "compiled")
        self.serving.tap = self.tap
        self.peer: DaemonPeer | None = None
        self.admin = Admin(admin, self.serving, self.background, self.publish,
                           lambda command: self.peer.send(command), self.status,
                           owner_identity(Path(config.state_dir)), identify)
        self.peer = DaemonPeer(self.internal, config.robot, config.endpoints, self.serving, self.admin,
                               self.publish, self.should_exit.set if self.stoppable else None)
        # the first request is served by the last live champion: load it (and the last-known-good) before binding
        self.serving.apply_sync(self.background.run_now(self.serving.sync_job))
        if self.curve:
            self.curve.start(self.ctx)
        for sock, endpoint in ((control, config.control), (admin, config.admin),
                               (self.telemetry, config.telemetry), (self.internal, config.internal_endpoint)):
            _bind(sock, endpoint)
        if config.serve_cpu is not None:  # ...and the serving thread takes its own
            rest = placement.serve_alone(config.serve_cpu)
            log.info("serving thread on CPU %d, the server's other threads on CPU %s", config.serve_cpu,
                     ", ".join(map(str, sorted(rest))))
        self.runfile = {"pid": os.getpid(), "supervisor": os.getppid() if self.supervised else None,
                        "stoppable": self.stoppable, "robot": config.robot,
                        **config.endpoints, "internal": config.internal_endpoint, "keys": config.curve_dir,
                        "started": self.started, "recording": bool(config.record)}
        self._write_runfile()
        gc.freeze()  # what start-up made lives as long as the server: keep it out of every collection
        log.info("serving %s for robot %s on %s", self.serving.serving_id or "the safe action", config.robot,
                 ", ".join(f"{k} {v}" for k, v in config.endpoints.items()))
        sdnotify.notify("READY=1", f"STATUS=serving {self.serving.serving_id or 'the safe action'} (pid "
                        f"{os.getpid()})")
        self.publish(Topic.SERVER, {"event": "started", "pid": os.getpid(), "champion": self.serving.serving_id})

    def _write_runfile(self) -> None:
        """``server.json``; on a full disk the server serves without it and tries again every second."""
        try:
            write_runfile(Path(self.config.state_dir), SERVER, self.runfile)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            if self.runfile.get("pending") is None:
                log.error("cannot write server.json (%s): serving all the same, trying again every second", exc)
            self.runfile["pending"] = True
            return
        if self.runfile.pop("pending", None):
            write_runfile(Path(self.config.state_dir), SERVER, self.runfile)
            log.info("server.json written: the disk has space again")

    def _socket(self, kind: int, role: str, max_msg: int | None) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 500)
        if max_msg is not None:
            sock.setsockopt(zmq.MAXMSGSIZE, max_msg)
            sock.setsockopt(zmq.RCVHWM, p.RCVHWM)
            sock.setsockopt(zmq.SNDHWM, p.SNDHWM)
        if kind == zmq.ROUTER:
            sock.setsockopt(zmq.ROUTER_MANDATORY, 0)  # replies to a vanished client are dropped, never raised
        if self.curve:
            self.curve.make_server(sock, role)
        return sock

    def publish(self, topic: Topic, data: dict) -> None:
        """One telemetry event: ``topic``, then JSON with ``topic``, ``time`` (Unix s), ``robot`` and ``data``.
        Non-finite numbers become null (strict JSON parsers reject NaN)."""
        topic = Topic(topic).value  # a Topic's value, never its name (a str: the daemon's Publish carries one)
        event = {**data, "topic": topic, "time": time.time(), "robot": self.config.robot}
        payload = json.dumps(_finite(event), default=str).encode()
        if self.tap is not None:
            self.tap.event(payload)
        with contextlib.suppress(zmq.Again):  # PUB drops for slow subscribers rather than block; so do we
            self.telemetry.send_multipart([topic.encode(), payload], zmq.NOBLOCK)

    # -- the loop --------------------------------------------------------------------------------------------------

    def main_loop(self) -> None:
        admin, wake, internal = self.admin.sock, self.background.wake, self.internal
        wait = self._robots_first((admin, wake, internal))
        watchdog_s = sdnotify.watchdog_interval_s()
        now = time.monotonic()
        next_stats = next_sync = now + self.config.stats_interval_s
        next_forward = now + TICK_S
        next_watchdog = now if watchdog_s else math.inf
        last = (0, 0)
        while not self.should_exit:
            timeout = max(0.0, min(next_stats, next_sync, next_watchdog, now + TICK_S) - time.monotonic())
            ready = wait(timeout)
            if wake in ready:
                self.background.deliver()
            if admin in ready:
                self.admin.drain()
            if internal in ready:
                self.peer.drain()
            now = time.monotonic()
            if self.tap is not None and self.tap.due(now):
                self.tap.flush(now)
            if now >= next_forward:
                next_forward = now + TICK_S
                self.peer.forward()
                if self.supervisor is not None:
                    self._watch_supervisor()
                if self.curve:
                    self._revocations()
            if now >= next_stats:
                interval = now - next_stats + self.config.stats_interval_s
                next_stats = now + self.config.stats_interval_s
                self.publish(Topic.LIVE, self._live_stats(last, interval))
                last = (self.serving.acts, self.serving.steps)
                self.peer.tick()
                if self.runfile.get("pending"):
                    self._write_runfile()
            if now >= next_sync:
                next_sync = now + self.config.sync_interval_s
                self.serving.sync()
            if now >= next_watchdog:
                next_watchdog = now + watchdog_s
                sdnotify.notify("WATCHDOG=1")

    def _robots_first(self, others: tuple[zmq.Socket, ...]) -> Callable[[float], Container[zmq.Socket]]:
        """``wait(timeout_s)``: answer robots until one of ``others`` is ready or the timeout, then the ready
        ones. After each answer it polls for the next robot request ``busy_poll_us`` before it sleeps again."""
        config, serving = self.config, self.serving
        loop = (fastloop.compiled_loop(serving.sock, others, serving.on_request, config.busy_poll_us,
                                       serving.max_bytes, p.MAX_REQUEST_FRAMES)
                if config.socket_loop != "pyzmq" and serving.identify is None else None)
        if loop is not None:
            serving.use_lane(loop)
        self.socket_loop = "pyzmq" if loop is None else "compiled" if serving.loop is not None else "handler"
        log.info("robots are answered by the %s socket loop", self.socket_loop)
        if loop is not None:
            def serve(timeout_s: float) -> Container[zmq.Socket]:
                mask = loop.serve(timeout_s * 1000)
                return [s for i, s in enumerate(others) if mask >> i & 1]

            return serve

        control, window_s, clock = serving.sock, config.busy_poll_us / 1e6, time.perf_counter
        poller = zmq.Poller()
        for sock in (control, *others):
            poller.register(sock, zmq.POLLIN)

        def wait(timeout_s: float) -> Container[zmq.Socket]:
            ready = dict(poller.poll(timeout_s * 1000))
            if control in ready:
                serving.handle()
                end = clock() + window_s
                while clock() < end:
                    if control.poll(0):
                        serving.handle()
                        end = clock() + window_s
            return ready

        return wait

    def _watch_supervisor(self) -> None:
        """Supervision all the way up: when the supervisor is gone (this process was re-parented), say that serving
        is unsupervised and start a new supervisor that adopts this server (:mod:`srghn.deploy.server.supervisor`);
        supervised again once it holds the server lock."""
        ours = self.replacement is not None and self.supervisor == self.replacement.pid
        if self.unsupervised_since is None:
            if (self.replacement.poll() is None) if ours else os.getppid() == self.supervisor:
                return
            self.unsupervised_since = time.monotonic()
            log.error("the supervisor pid %d is gone: serving is unsupervised; starting a new one", self.supervisor)
            self.publish(Topic.SERVER, {"event": "unsupervised", "supervisor": self.supervisor})
            self._start_supervisor()
            return
        if self.replacement is None or self.replacement.poll() is not None:
            if time.monotonic() - self.restarted >= 1.0:  # it could not start: again, once a second
                self._start_supervisor()
        elif lock_is_held(Path(self.config.state_dir), SERVER):
            log.info("supervised again by pid %d, %.2f s after the last supervisor died", self.replacement.pid,
                     time.monotonic() - self.unsupervised_since)
            self.publish(Topic.SERVER, {"event": "supervised", "supervisor": self.replacement.pid})
            self.supervisor, self.unsupervised_since = self.replacement.pid, None

    def _start_supervisor(self) -> None:
        self.restarted = time.monotonic()
        if self.config_path is None:
            return
        cmd = [sys.executable, "-m", "srghn.deploy.server.supervisor", str(self.config_path),
               "--adopt", str(os.getpid()),
               *(["--stoppable"] if self.stoppable else [])]
        env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_PID"}
        self.replacement = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL, start_new_session=True)

    def supervision(self) -> dict:
        return {"supervisor": self.supervisor, "supervised": self.supervisor is not None and
                self.unsupervised_since is None,
                "unsupervised_s": None if self.unsupervised_since is None else
                round(time.monotonic() - self.unsupervised_since, 2)}

    def _revocations(self) -> None:
        """Close what revoked keys have open: each connection a request came from (control, admin), and the
        telemetry socket's connections, which are all dropped (re-bound) when a key that may subscribe goes: a PUB
        socket cannot tell its subscribers apart, the others reconnect by themselves within 0.1 s."""
        gone = self.curve.revoke()
        for who in gone:
            log.warning("key %s (%s) revoked: its connections are closed", who.name, who.role)
            self.publish(Topic.SERVER, {"event": "revoked", "key": who.name, "role": who.role})
        if any(who.role in ("operator", "observer") for who in gone):
            endpoint = self.config.telemetry
            self.telemetry.unbind(endpoint)
            _bind(self.telemetry, endpoint)

    def status(self) -> dict:
        return {"robot": self.config.robot, "protocol": p.VERSION, "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started, 1), "endpoints": self.config.endpoints,
                "socket_loop": self.socket_loop, **self.supervision(),
                **self.serving.status(), "admin": self.admin.counts(),
                "evolution": self.peer.evolution if self.peer.attached else None,
                "daemon": self.peer.status()}

    def _live_stats(self, last: tuple[int, int], interval: float) -> dict:
        status = self.serving.status()
        requests = status["requests"]
        return {"champion": self.serving.serving_id, "serial": self.serving.serial,
                "act_per_s": round((self.serving.acts - last[0]) / interval, 1),
                "step_per_s": round((self.serving.steps - last[1]) / interval, 1),
                "errors": requests["errors"] + self.admin.errors,
                **{k: requests[k] for k in ("act_us_p50", "act_us_p99")}, "episodes": status["episodes"],
                "robots": [{k: c[k] for k in ("client", "regime", "champion")} for c in status["clients"]]}

    # -- shutdown --------------------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """In order: say so, answer a daemon that asked for the stop, finish background work, close sockets."""
        if not hasattr(self, "serving"):
            return  # start-up failed before anything was made: nothing to shut down
        sdnotify.notify("STOPPING=1")
        final = self.status()
        log.info("stopping (%s) after %d actions, %d steps", self.should_exit.reason, final["requests"]["act"],
                 final["requests"]["step"])
        self.publish(Topic.SERVER, {"event": "stopped", "requests": final["requests"], "episodes": final["episodes"]})
        self.peer.stopped({"requests": final["requests"], "episodes": final["episodes"],
                           "clients": final.get("clients", [])})  # the daemon's summary: who served which robot
        self.background.close()
        if self.tap is not None:
            self.tap.close()
        if self.curve:
            self.curve.stop()
        remove_runfile(Path(self.config.state_dir), SERVER)
        self.ctx.destroy(linger=SHUTDOWN_LINGER_MS)
        for endpoint in (*self.config.endpoints.values(), self.config.internal_endpoint):
            if endpoint.startswith("ipc://"):  # ZeroMQ leaves the socket files of bound ipc endpoints behind
                Path(endpoint[len("ipc://"):]).unlink(missing_ok=True)


def _stand_by(fd: int) -> bool:
    """A standby server (:mod:`srghn.deploy.server.supervisor`): done with its imports, it waits for the word to take
    over from a server that died. False when its supervisor went away instead."""
    import onnxruntime  # noqa: F401 (the slowest import: done before the word comes, not after)

    fastloop.lane_available()  # binding ONNX Runtime's C library takes ~70 ms: not after the word either
    with os.fdopen(fd, "rb") as word:
        return word.read(1) == b"g"


def _prioritise(priority: int | None) -> None:
    if priority is None or os.sched_getscheduler(0) in (os.SCHED_FIFO, os.SCHED_RR):
        return
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        log.info("serving at real-time priority %d (SCHED_FIFO)", priority)
    except (PermissionError, OSError) as exc:
        log.info("serving at normal priority: real-time priority %d was refused (%s)", priority, exc)


def _bind(sock: zmq.Socket, endpoint: str) -> None:
    if p.is_ipv6(endpoint):
        sock.setsockopt(zmq.IPV6, 1)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise ConfigError(f"cannot bind {endpoint}: {exc}") from None


def _finite(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srghn.deploy.server.process", description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="ServeConfig JSON file")
    parser.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--standby-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stoppable", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.standby_fd is not None and not _stand_by(args.standby_fd):
        return 0
    try:
        config = ServeConfig.from_json(args.config.read_text())
        return Server(config, args.supervised, args.stoppable, args.config.resolve()).run()
    except (SrghnError, OSError) as exc:
        print(f"srghn server: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
