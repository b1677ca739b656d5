"""The state directory: where it is, who acts on it, and the run files of the processes working on it. No torch.

One control server and one daemon at most per state directory. Each holds an ``flock`` on ``<who>.lock`` for its
whole life (for the server: its supervisor, which outlives every restart of it) and describes itself in
``<who>.json`` (pid, robot, endpoints). A run file is believed only while its lock is held, so one left behind by
a killed process is ignored. The directory is kept 0700: on ``ipc://`` its permissions are what keeps everyone
but its owner away from the sockets.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from srghn import ConfigError
from srghn.controller.files import atomic_write

STATE_DIR_ENV = "SRGHN_STATE_DIR"
ACTOR_ENV = "SRGHN_ACTOR"
SERVER, DAEMON = "server", "daemon"


def resolve_state_dir(option: Path | None = None) -> Path:
    """``--state-dir`` if given, else ``$SRGHN_STATE_DIR``, else the platform's user state dir for srghn."""
    if option is not None:
        return Path(option).expanduser()
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_state_dir("srghn"))


def check_state_dir(state_dir: Path) -> Path:
    """A state directory that is a directory and writable, or can be made one; one line naming the problem
    otherwise (before any work starts)."""
    state_dir = Path(state_dir).expanduser()
    existing = state_dir
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"state directory {state_dir}: {existing} is not a directory"
                          + (" (--state-dir or $SRGHN_STATE_DIR)" if existing == state_dir else ""))
    from srghn.sim.preflight import can_make_directory_in

    if not os.access(existing, os.W_OK | os.X_OK) or (existing != state_dir and not can_make_directory_in(existing)):
        raise ConfigError(f"state directory {state_dir}: {existing} is not writable")
    return state_dir


def check_free(state_dir: Path, who: str) -> None:
    """No ``who`` (server or daemon) runs on the state directory yet."""
    if lock_is_held(state_dir, who):
        running = read_runfile(state_dir, who) or {}
        pid = f" (pid {running['pid']})" if "pid" in running else ""
        raise ConfigError(f"another {who}{pid} already runs on state directory {state_dir}; talk to it with "
                          "`srghn-ctl status`, or stop it first")


def secure_state_dir(state_dir: Path) -> Path:
    """Create the state directory 0700 (or make an existing one of ours 0700); return it."""
    state_dir = Path(state_dir)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if state_dir.stat().st_uid == os.getuid() and state_dir.stat().st_mode & 0o077:
        os.chmod(state_dir, 0o700)
    return state_dir


def default_actor() -> str:
    """``$SRGHN_ACTOR`` if set, else ``user@host`` (recorded with every audited event made without a server)."""
    env = os.environ.get(ACTOR_ENV)
    if env:
        return env
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def _paths(state_dir: Path, who: str) -> tuple[Path, Path]:
    return Path(state_dir) / f"{who}.json", Path(state_dir) / f"{who}.lock"


@contextlib.contextmanager
def hold_lock(state_dir: Path, who: str) -> Iterator[None]:
    """Hold ``<who>.lock`` for the block; :class:`ConfigError` when another process holds it."""
    _, lock = _paths(state_dir, who)
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"another {who} already runs on state directory {state_dir}; talk to it with "
                              "`srghn-ctl status`, or stop it first") from None
        yield


def lock_is_held(state_dir: Path, who: str) -> bool:
    """Whether some process holds ``<who>.lock`` (checking creates nothing)."""
    _, lock = _paths(state_dir, who)
    if not lock.is_file():
        return False
    try:
        with open(lock, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def write_runfile(state_dir: Path, who: str, info: dict) -> None:
    atomic_write(_paths(state_dir, who)[0], json.dumps(info, indent=2).encode())


def remove_runfile(state_dir: Path, who: str) -> None:
    _paths(state_dir, who)[0].unlink(missing_ok=True)


def read_runfile(state_dir: Path, who: str = SERVER) -> dict | None:
    """What the running ``who`` (server or daemon) wrote about itself, or None when none runs there."""
    if not lock_is_held(state_dir, who):
        return None
    try:
        info = json.loads(_paths(state_dir, who)[0].read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "pid" in info else None


def no_space(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) says the disk or the quota is full: ENOSPC / EDQUOT, or SQLite's
    SQLITE_FULL ("database or disk is full")."""
    import errno
    import sqlite3

    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.OperationalError) and (
                getattr(exc, "sqlite_errorcode", None) == 13 or "disk is full" in str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def has_space(path: Path, at_least: int = 64 << 20) -> bool:
    """Whether the filesystem of ``path`` has ``at_least`` bytes free for this user, or an eighth of its size
    when that is less (a small filesystem)."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize >= min(at_least, stats.f_blocks * stats.f_frsize // 8)
