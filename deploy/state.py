"""Where the state directory is, and who is acting: shared by the CLI and (later) the daemon. No torch."""

from __future__ import annotations

import getpass
import os
import socket
from pathlib import Path

STATE_DIR_ENV = "SRGHN_STATE_DIR"
ACTOR_ENV = "SRGHN_ACTOR"


def resolve_state_dir(option: Path | None = None) -> Path:
    """``--state-dir`` if given, else ``$SRGHN_STATE_DIR``, else the platform's user state dir for srghn."""
    if option is not None:
        return Path(option).expanduser()
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_state_dir("srghn"))


def default_actor() -> str:
    """``$SRGHN_ACTOR`` if set, else ``user@host`` (recorded with every audited event)."""
    env = os.environ.get(ACTOR_ENV)
    if env:
        return env
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


RUNFILE = "daemon.json"
LOCKFILE = "daemon.lock"
"""Held (flock) by the running daemon for its whole life: one daemon per state directory."""


def read_runfile(state_dir: Path) -> dict | None:
    """The running daemon's endpoints from ``<state dir>/daemon.json``, or None when no daemon runs there. A file
    left behind by a daemon that died is ignored: only a live daemon holds the lock next to it."""
    import fcntl
    import json

    state_dir = Path(state_dir)
    if not (state_dir / LOCKFILE).is_file():
        return None  # never ran here (and reading creates nothing)
    try:
        with open(state_dir / LOCKFILE, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # held: a daemon runs
            else:
                fcntl.flock(lock, fcntl.LOCK_UN)
                return None
        info = json.loads((state_dir / RUNFILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "admin" in info else None
