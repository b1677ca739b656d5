"""The control server's configuration: what a server needs to know, written as JSON in the state directory by
``srghn-ctl run`` and ``srghn-ctl serve`` and read by every (re)starting server, which loads no profile."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from srghn.controller.policy import PolicySpec
from srghn.deploy.server.placement import check_serve_cpu
from srghn.deploy.wire import protocol as p
from srghn.errors import ConfigError

REALTIME_PRIORITY = 10
SERVE_CONFIG = "serve.json"
"""Where ``srghn-ctl run`` and ``srghn-ctl serve`` write the configuration, in the state directory."""
IPC_PATH_MAX = 100
"""ipc:// paths longer than this do not fit a Unix socket address (108 bytes on Linux, 104 on macOS)."""


def choose_endpoints(state_dir: Path, control: str | None = None, admin: str | None = None,
                     telemetry: str | None = None) -> dict[str, str]:
    """The three public endpoints: as given, else ``ipc://`` sockets in the state directory; checked."""
    chosen = {}
    for role, given in (("control", control), ("admin", admin), ("telemetry", telemetry)):
        endpoint = given or f"ipc://{Path(state_dir).resolve()}/{role}.sock"
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


SOCKET_LOOPS = ("compiled", "handler", "pyzmq")


def wants_realtime(serve_cpu: int | None) -> bool:
    """Whether the server asks for real-time priority by default: where its serving thread has a CPU of its own.
    On CPUs shared with evolution, SCHED_FIFO made the robot's ACT p99 under load miss 2 x idle in 3 of 17 runs
    here, normal priority in none of 15 (docs/daemon.md, "Under evolution load")."""
    return serve_cpu is not None


@dataclass(frozen=True)
class ServeConfig:
    """What the server needs to know, written as JSON next to the state. Everything about the robot is resolved
    from its profile beforehand, so a restarting server loads no profile."""

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
    """Where daemons attach (None: ``ipc://<state dir>/internal.sock``)."""
    max_message_bytes: int = p.DEFAULT_MAX_MESSAGE_BYTES
    stats_interval_s: float = 1.0
    sync_interval_s: float = 1.0
    """How often the registry's live pointer is re-read (changes made by other processes are picked up)."""
    curve_dir: str | None = None
    """Directory of the CURVE keys (see :mod:`srghn.deploy.wire.keys`); required when any endpoint is not local."""
    realtime_priority: int | None = REALTIME_PRIORITY
    """The SCHED_FIFO priority the server asks for, so that a robot's request preempts evolution at once (its
    ZeroMQ threads inherit it; the background thread drops back to normal). Without the privilege (a user
    without ``LimitRTPRIO``) it serves at normal priority, above the daemon's nice +5 and the workers' +15.
    None: leave the scheduling alone (e.g. when systemd's ``CPUSchedulingPolicy=`` sets it)."""
    busy_poll_us: int = 0
    """After answering a robot, keep polling for the next request this long before going to sleep: a robot that
    steps faster than that is answered by a server whose caches are still warm (handling measured ~19 us instead
    of ~33 us here), at the price of that much CPU per request. For a core of its own (``serve_cpu``);
    not with ``realtime_priority`` (a real-time spinner starves whatever shares its core)."""

    serve_cpu: int | None = None
    """The CPU the serving thread has to itself: the server's main thread (every robot request) pins itself there
    and its other threads (ZeroMQ's I/O thread, the background loader, the CURVE handler) run on the process's
    other CPUs. An I/O thread on the serving core must preempt it for every message and leaves its caches cold
    (docs/daemon.md, "The hot path"). None: the scheduler places every thread."""
    socket_loop: str = "compiled"
    """``compiled``: robots are answered by the socket loop in C (:mod:`srghn.deploy.server.fastloop`) where it is
    built and CURVE is off, well-formed ACTs in its lane where ONNX Runtime's C library is there, else by the same
    loop in pyzmq; ``handler``: the loop in C, every request through the Python handler; ``pyzmq``: always the
    loop in pyzmq."""
    record: dict | None = None
    """Session recording (docs/recording.md): ``{"max_file_bytes": N, "max_total_bytes": N}`` to record every
    control request and telemetry event into ``<state dir>/recordings``; None: no recording."""

    def __post_init__(self) -> None:
        if self.busy_poll_us and self.realtime_priority is not None:
            raise ConfigError("busy polling needs realtime_priority None: a real-time spinner starves its core")
        if not 0 <= self.busy_poll_us <= 100_000:
            raise ConfigError(f"busy_poll_us must be in 0..100000, got {self.busy_poll_us}")
        if self.serve_cpu is not None:
            check_serve_cpu(self.serve_cpu)
        if self.socket_loop not in SOCKET_LOOPS:
            raise ConfigError(f"socket_loop must be one of {', '.join(SOCKET_LOOPS)}, got {self.socket_loop!r}")

    @classmethod
    def for_profile(cls, profile, state_dir: Path, endpoints: dict[str, str], keys: Path | None,
                    realtime: bool | None = None, busy_poll_us: int = 0, record: dict | None = None,
                    serve_cpu: int | None = None, socket_loop: str = "compiled") -> ServeConfig:
        """The configuration for a robot profile (a :class:`srghn.sim.profiles.RobotProfile`). ``realtime``
        None: real-time priority where the serving thread has a CPU of its own (:func:`wants_realtime`); busy
        polling turns it off."""
        wanted = wants_realtime(serve_cpu) if realtime is None else realtime
        return cls(robot=profile.name, state_dir=str(Path(state_dir).resolve()), policy=profile.policy.to_dict(),
                   safe_action=profile.safe_action, regimes=profile.regimes, **endpoints,
                   curve_dir=str(keys) if keys else None,
                   realtime_priority=REALTIME_PRIORITY if wanted and not busy_poll_us else None,
                   busy_poll_us=busy_poll_us, record=record, serve_cpu=serve_cpu, socket_loop=socket_loop)

    @property
    def spec(self) -> PolicySpec:
        return PolicySpec.from_dict(self.policy)

    @property
    def internal_endpoint(self) -> str:
        return self.internal or f"ipc://{Path(self.state_dir).resolve()}/internal.sock"

    @property
    def endpoints(self) -> dict[str, str]:
        return {"control": self.control, "admin": self.admin, "telemetry": self.telemetry}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        try:
            data = json.loads(text)
            for key in ("safe_action", "regimes"):
                data[key] = tuple(data[key])
            return cls(**data)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"not a server configuration: {exc}") from None
