"""systemd's readiness and liveness protocol (``sd_notify``), spoken directly: one datagram to
``$NOTIFY_SOCKET``. Without systemd (no such variable) every call is a no-op."""

from __future__ import annotations

import os
import socket


def notify(*assignments: str) -> bool:
    """Send ``READY=1``, ``WATCHDOG=1``, ``STATUS=...``, ``STOPPING=1``; False when not run by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto("\n".join(assignments).encode(), address)
        except OSError:
            return False
    return True


def watchdog_interval_s() -> float | None:
    """How often to send ``WATCHDOG=1``: half of ``WatchdogSec=`` (None when the unit has no watchdog). Under
    the supervisor (the unit's main process) the server it runs pings: the supervisor clears ``WATCHDOG_PID``."""
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6
