"""What one ``srghn-ctl run`` is asked to do: :class:`DaemonSettings`, checked once, when made
(:mod:`srghn.sim.preflight` holds the checks). No torch: the command line makes it before its heavy imports."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from srghn import ConfigError
from srghn.deploy.server.config import ServeConfig, choose_endpoints
from srghn.sim.preflight import INIT_FACTORY, INIT_SCRATCH, check_init, check_regime, check_run_flags, check_spaces

if TYPE_CHECKING:  # no torch here: `srghn-ctl run` makes these settings before its heavy imports
    from srghn.sim.driver import RunSpec
    from srghn.sim.profiles import RobotProfile


@dataclass(frozen=True)
class DaemonSettings:
    """One ``srghn-ctl run``. ``None`` means: the profile's default or the state directory's default."""

    profile: RobotProfile
    state_dir: Path
    seed: int = 0
    population: int | None = None
    episodes: int | None = None
    generations: int | None = None
    """Stop after this many generations of this run (None: run until stopped)."""
    duration_s: float | None = None
    """Stop after this many seconds (checked between generations)."""
    auto_promote: bool = True
    gate_every: int = 5
    """Consider the champion for release every this many generations."""
    regime: str | None = None
    """Shadow regime to start in (None: where the last run left off, else nominal)."""
    control: str | None = None
    admin: str | None = None
    telemetry: str | None = None
    keys: Path | None = None
    """CURVE key directory (``srghn-ctl keys``); required when an endpoint is not local."""
    backend: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    follow_drift: bool = True
    """Switch the shadow simulator to the regime the robot's reported transitions show (where identifiable)."""
    sim_robot: bool = False
    """Also start a simulated robot (:mod:`srghn.deploy.clients.robot_sim`) against the control socket."""
    robot_args: tuple[str, ...] = ()
    """Extra arguments for the simulated robot (e.g. ``--fault inverted --fault-at 3000``)."""
    attach: bool = False
    """Attach to a control server that runs already (systemd's units); never start or stop one."""
    realtime: bool | None = None
    """The server this daemon starts asks for real-time priority (None: where its serving thread has a CPU of its
    own; see :class:`ServeConfig`)."""
    busy_poll_us: int = 0
    """The server this daemon starts busy-polls this long after each request (see :class:`ServeConfig`)."""
    serve_cpu: int | None = None
    """The CPU the serving thread of the server this daemon starts has to itself (see :class:`ServeConfig`)."""
    record: dict | None = None
    """The server this daemon starts records the session (:mod:`srghn.deploy.recording.tap`): its size bounds."""
    actor: str = "srghn-daemon"
    init: str | None = None
    """Where a state directory without a population starts: ``factory`` (grown from the robot's factory GHN),
    ``scratch``, or a path (see :class:`~srghn.sim.driver.RunSpec`). ``None``: the factory if the robot has one."""

    def __post_init__(self) -> None:
        check_run_flags(self, ("generations", "population", "episodes", "gate_every"))
        if self.duration_s is not None and not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise ConfigError(f"--duration must be a positive number of seconds, got {self.duration_s}")
        check_regime(self.profile, self.regime)
        check_init(self.init)
        check_spaces(self.profile)

    @property
    def home(self) -> Path:
        return Path(self.state_dir) / "daemon" / self.profile.name

    @property
    def spec(self) -> RunSpec:
        """The run a state directory without a population starts."""
        from srghn.sim.driver import RunSpec
        from srghn.sim.factory import factory_path

        init = self.init or (INIT_FACTORY if factory_path(self.profile).is_file() else INIT_SCRATCH)
        return RunSpec(self.profile, "srghn", self.seed, self.population, self.episodes, init)

    def endpoints(self) -> dict[str, str]:
        """The three public endpoints: as given, else ``ipc://`` sockets in the state directory."""
        return choose_endpoints(self.state_dir, self.control, self.admin, self.telemetry)

    def serve_config(self) -> ServeConfig:
        """The configuration of the control server this daemon starts when none runs."""
        return ServeConfig.for_profile(self.profile, self.state_dir, self.endpoints(), self.keys, self.realtime,
                                       self.busy_poll_us, self.record, self.serve_cpu)
