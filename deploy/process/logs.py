"""Logging for the long-running processes (server, supervisor, daemon): standard ``logging``, named loggers under
``srghn``, to a rotating file in ``<state dir>/logs/`` and to stderr (the journal, under systemd).

Client-supplied text can reach a log line (an unknown command, a routing id, a regime name): every message is
escaped on output, so a newline or a terminal escape sequence in it cannot forge or garble lines. Tracebacks,
which come from the code, are kept as they are.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3


class EscapingFormatter(logging.Formatter):
    """Escapes control characters (newlines included) and non-ASCII in the message; the traceback of an
    exception, appended after the message, stays readable."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = record.message.encode("ascii", "backslashreplace").decode("ascii")
        record.message = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in record.message)
        return super().formatMessage(record)


def configure(state_dir: Path | None, name: str, level: int = logging.INFO,
              stderr_level: int = logging.INFO) -> Path | None:
    """Send the ``srghn`` loggers to ``<state dir>/logs/<name>.log`` (rotated) and to stderr (from
    ``stderr_level`` on); returns the file."""
    root = logging.getLogger("srghn")
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = EscapingFormatter(FORMAT)
    path = None
    if state_dir is not None:
        directory = Path(state_dir) / "logs"
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / f"{name}.log"
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.setLevel(stderr_level)
    root.addHandler(handler)
    root.propagate = False
    return path
