"""Checks made before any work: what a command can tell is wrong from its flags, the profile and the disk, in a
fraction of a second and without torch (``srghn-ctl`` runs them before its heavy imports, so a bad flag is one
line and exit code 2, never a traceback after minutes of evolution). The objects that run the work check again."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from srghn import ConfigError

if TYPE_CHECKING:  # the flag checks run before anything else is imported (gymnasium takes a quarter second)
    from srghn.sim.profiles import RobotProfile


IDENTIFIED = "identified-"
"""The prefix of a regime the daemon identified from a robot's transitions (:mod:`srghn.sim.identify`): stored in the
registry, not in the profile."""


def check_run_flags(settings: object, counts: tuple[str, ...]) -> None:
    """The flags every evolution run shares: ``counts`` must be >= 1 where given, the seed >= 0, the backend
    valid. Errors name the flag."""
    from srghn.sim.backends import check_backend  # gymnasium: the settings modules import this one without it

    check_backend(settings.backend, settings.workers, settings.ray_address)
    check_counts(settings, counts)
    if settings.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {settings.seed}")


def check_counts(settings: object, names: tuple[str, ...], low: int = 1, high: int | None = None) -> None:
    """Each of ``names`` (a field of ``settings``, ``--name`` on the command line), where given, is in
    ``low..high``."""
    for name in names:
        value = getattr(settings, name)
        if value is None:
            continue
        flag = f"--{name.replace('_', '-')}"
        if high is None and value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}")
        if high is not None and not low <= value <= high:
            raise ConfigError(f"{flag} must be within {low}..{high}, got {value}")


def check_regime(profile: RobotProfile, regime: str | None, flag: str = "--regime") -> None:
    """A regime of the profile, or one the daemon identified (those are checked against the registry, where they
    are stored)."""
    if regime is not None and regime not in profile.regimes and not regime.startswith(IDENTIFIED):
        raise ConfigError(f"{flag} {regime!r} is not a regime of {profile.name}; known: {', '.join(profile.regimes)}"
                          f" (or one the daemon identified, {IDENTIFIED}…)")


def check_update_clip(update_clip: float | None, decay: float | None = None, floor: float | None = None) -> None:
    """``--update-clip`` (finite, > 0), ``--update-clip-decay`` (in (0, 1]) and ``--update-clip-min`` (finite,
    >= 0), each where given."""
    if update_clip is not None and not (math.isfinite(update_clip) and update_clip > 0):
        raise ConfigError(f"--update-clip must be finite and > 0, got {update_clip}")
    if decay is not None and not 0 < decay <= 1:
        raise ConfigError(f"--update-clip-decay must be in (0, 1], got {decay}")
    if floor is not None and not (math.isfinite(floor) and floor >= 0):
        raise ConfigError(f"--update-clip-min must be finite and >= 0, got {floor}")


def check_switches(profile: RobotProfile, generations: int | None, switch_at: int | None,
                   switch_back_at: int | None, switch_regime: str | None = None) -> None:
    """Switches inside the run, in order, to a regime the profile declares."""
    if switch_regime is not None:
        if switch_regime not in profile.regimes[1:]:
            raise ConfigError(f"--switch-regime must be one of {profile.name}'s non-nominal regimes "
                              f"{list(profile.regimes[1:])}, got {switch_regime!r}")
        if switch_at is None:
            raise ConfigError("--switch-regime needs --switch-at (the generation to switch at; 0: from the start)")
    if switch_at is not None and switch_at < 0:
        raise ConfigError(f"--switch-at must be >= 0 (0: the whole run in the switch regime), got {switch_at}")
    n = generations or profile.generations
    for name, value in (("switch_at", switch_at), ("switch_back_at", switch_back_at)):
        if value is not None and value >= n:
            raise ConfigError(f"--{name.replace('_', '-')} {value} is not before the end of the run ({n} generations)")
    from srghn.sim.schedule import Schedule

    Schedule.switch(profile.switch_regime, switch_at, switch_back_at)


def check_out_dir(out: Path, resume: bool) -> None:
    """An ``evolve`` output directory: a directory (or creatable), writable; a run there only with ``resume``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if resume and not (out / "population.npz").exists():
        raise ConfigError(f"--resume: {out} holds no checkpointed run (no population.npz)")
    if not resume and (out / "run.json").exists():
        raise ConfigError(f"--out {out} already holds a run; pass --resume to continue it, or choose another --out")
    check_writable(out, "--out")


def check_writable(path: Path, flag: str) -> None:
    """``path`` is a writable directory, or can be made one (its nearest existing parent is)."""
    path = Path(path).expanduser()
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        what = path if existing == path else existing
        raise ConfigError(f"{flag} {path}: {what} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK) or not can_make_directory_in(existing):
        raise ConfigError(f"{flag} {path}: {existing} is not writable")


def can_make_directory_in(directory: Path) -> bool:
    """Whether a directory can be made inside ``directory``: tried (and removed again), since ``os.access`` says yes
    to root on file systems that refuse every new entry (``/proc``, a read-only mount)."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".srghn-probe-", dir=directory))
    except OSError:
        return False
    return True


def check_rate(rate: float | None, flag: str) -> None:
    if rate is not None and not (rate >= 0 and math.isfinite(rate)):
        raise ConfigError(f"{flag} must be >= 0 steps per second (0: as fast as the server answers), got {rate}")


INIT_SCRATCH, INIT_FACTORY = "scratch", "factory"
"""Where a first population comes from (see :class:`~srghn.sim.driver.RunSpec`), besides a file."""


def check_init(init: str | None) -> None:
    if init is not None and init not in (INIT_SCRATCH, INIT_FACTORY) and not Path(init).exists():
        raise ConfigError(f"--init {init!r}: expected 'scratch', 'factory' or the path of a run directory, "
                          "population.npz or policy file, and no such path exists")


def check_spaces(profile: RobotProfile) -> None:
    """The profile's observation and action sizes match its environment's (one environment made and closed)."""
    from srghn.sim.evaluator import make_env

    make_env(profile).close()
