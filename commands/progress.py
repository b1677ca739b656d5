"""Progress of a long command on stderr, and the Ctrl-C that stops one between two generations."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.markup import escape

from srghn.commands import console
from srghn.commands.console import duration, say

PROGRESS_EVERY_S = 10.0
"""Without a terminal on stderr (a log, CI, a pipe), long commands print one status line this often."""


class Progress:
    """Progress of a long command on stderr: a rich bar on a terminal; otherwise one line at the start, then at
    most every :data:`PROGRESS_EVERY_S`, and one at the end (``--json`` included: stdout stays the JSON's)."""

    def __init__(self, what: str, total: int | None, transient: bool = False) -> None:
        self.what, self.total, self.done = what, total, 0
        self.base = 0  # done before this command (a resumed run): not counted in its pace
        self.started = self.last = time.monotonic()
        self.fields: dict[str, str] = {}
        self.bar = None
        if console.err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console.err,
                           transient=transient)
            self.task = self.bar.add_task(what, total=total, info="")

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.start()
        else:
            say(f"{self.what}: started" + (f", {self.total} to do" if self.total else ""), console.err)
        return self

    def update(self, advance: int = 1, description: str | None = None, at: int | None = None,
               **fields: object) -> None:
        """``at``: where the work stands now, instead of ``advance``; what it jumps over was done before this
        command (a resumed run starts past 0) and does not count in the pace."""
        if at is not None:
            self.base += max(0, at - 1 - self.done)
            advance = at - self.done
        self.done += advance
        self.fields.update({k: str(v) for k, v in fields.items()})
        info = ", ".join(f"{k} {v}" for k, v in self.fields.items() if v != "")
        if self.bar is not None:
            self.bar.update(self.task, advance=advance, info=escape(info),
                            **({"description": description} if description else {}))
            return
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S or (self.total and self.done >= self.total):
            self.last = now
            self._line(info, now)

    def skip(self, n: int) -> None:
        """``n`` more done, all before this command (a finished run read back)."""
        self.base += n
        self.update(n)

    def _line(self, info: str, now: float) -> None:
        elapsed = now - self.started
        of = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        left = ""
        if self.total and self.base < self.done < self.total:
            left = f", about {duration(elapsed / (self.done - self.base) * (self.total - self.done))} left"
        say(f"{self.what}: {of}{', ' + info if info else ''} ({duration(elapsed)} elapsed{left})", console.err)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def working(what: str):
    """A spinner on a terminal; otherwise the line once (a log shows what the command is busy with)."""
    if console.err.is_terminal:
        return console.err.status(escape(what))
    say(what + " ...", console.err)
    return contextlib.nullcontext()



@contextlib.contextmanager
def between_generations() -> Iterator[Callable[[], bool]]:
    """SIGINT / SIGTERM only set a flag that the run checks between generations (a population is never saved
    half-updated); a second Ctrl-C stops at once, keeping the last checkpoint. Handlers are restored on exit."""
    from srghn.deploy.process.signals import ExitFlag

    flag = ExitFlag(lambda _: console.err.print("stopping after this generation (Ctrl-C again to stop at once, "
                                                "keeping the last checkpoint)"), interrupt=True)
    with flag.captured():
        yield flag

