"""Signals only set a flag (the uvicorn habit): the process's own loop looks at it at a safe point -- the server
between two requests, the daemon between two generations -- and shuts down in order from there."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)
"""SIGINT: Ctrl-C in a terminal. SIGTERM: ``kill``, systemd's stop, the daemon stopping what it started."""


class ExitFlag:
    """Set by the first handled signal (its name is the reason); a second SIGINT also sets :attr:`force`."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.force = False

    def __bool__(self) -> bool:
        return self.reason is not None

    def set(self, reason: str) -> None:
        self.reason = self.reason or reason

    def _handle(self, signum: int, frame: object) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            self.force = True
        self.set(signal.Signals(signum).name)

    @contextlib.contextmanager
    def captured(self, signals: tuple[signal.Signals, ...] = HANDLED) -> Iterator[ExitFlag]:
        """Route ``signals`` to this flag for the block; the previous handlers come back after it."""
        previous = {s: signal.signal(s, self._handle) for s in signals}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
