"""``srghn-ctl`` run as a user runs it: the real console entry point in a fresh interpreter, which reports the heavy
modules it imported (a refusal must come before torch)."""

from __future__ import annotations

import os
import subprocess
import sys

RUN = """
import sys
sys.argv = ["srghn-ctl", *sys.argv[1:]]
from srghn.cli import app
try:
    app()
except SystemExit as exc:
    code = exc.code
print("HEAVY", sorted(m for m in ("torch", "torch_geometric") if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def real_ctl(*args: object, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUN, *map(str, args)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def refused(done: subprocess.CompletedProcess, message: str) -> None:
    """Exit 2, nothing on stdout, one error line naming the problem, no traceback, and no heavy import before it."""
    lines = [line for line in done.stderr.splitlines() if not line.startswith("HEAVY")]
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert "HEAVY []" in done.stderr, f"heavy imports before the error: {done.stderr}"
    assert "Traceback" not in done.stderr
