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


def read_runfile(state_dir: Path) -> dict | None:
    """The running daemon's endpoints from ``<state dir>/daemon.json``, or None when no daemon runs there (no
    file, an unreadable one, or one left by a daemon whose process is gone)."""
    import json

    try:
        info = json.loads((Path(state_dir) / RUNFILE).read_text())
        pid = int(info["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info
