"""Signals only set a flag (the uvicorn habit): the process's own loop looks at it at a safe point -- the server
between two requests, the daemon between two generations -- and shuts down in order from there."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM)
"""SIGINT: Ctrl-C in a terminal. SIGTERM: ``kill``, systemd's stop, the daemon stopping what it started."""


class ExitFlag:
    """Set by the first handled signal (its name is the reason); a second SIGINT also sets :attr:`force`.

    ``on_first`` is told the first signal's name (e.g. to say what stopping means); with ``interrupt=True`` a second
    SIGINT raises :class:`KeyboardInterrupt` at once (a command in a terminal: Ctrl-C twice stops now)."""

    def __init__(self, on_first: Callable[[str], None] | None = None, interrupt: bool = False) -> None:
        self.reason: str | None = None
        self.force = False
        self.on_first, self.interrupt = on_first, interrupt

    def __bool__(self) -> bool:
        return self.reason is not None

    def set(self, reason: str) -> None:
        self.reason = self.reason or reason

    def _handle(self, signum: int, frame: object) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            self.force = True
            if self.interrupt:
                raise KeyboardInterrupt
        first = self.reason is None
        self.set(signal.Signals(signum).name)
        if first and self.on_first is not None:
            self.on_first(self.reason)

    def __call__(self) -> bool:
        """Whether a stop was asked for (so the flag itself is a ``should_stop`` callable)."""
        return self.reason is not None

    @contextlib.contextmanager
    def captured(self, signals: tuple[signal.Signals, ...] = HANDLED) -> Iterator[ExitFlag]:
        """Route ``signals`` to this flag for the block; the previous handlers come back after it."""
        previous = {s: signal.signal(s, self._handle) for s in signals}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
