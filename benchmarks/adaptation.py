"""Adaptation end to end: a simulated robot meets a fault, the runtime identifies it and serves a champion for it,
then the fault is repaired and the stored champion of the nominal regime serves again.

    python benchmarks/adaptation.py --robot cartpole --json
    python benchmarks/adaptation.py --robot ant --json [--fault invert_front_left]
    python benchmarks/adaptation.py --robot ant --fault-def '{"gain": {"hip_1": -0.6, "ankle_1": -0.6}}' --json

Real processes: ``srghn-ctl run`` (the daemon, which starts the supervised control server and the shadow workers)
on a throwaway state directory, and this process as the robot (the simulated robot of
:mod:`srghn.deploy.clients.robot_sim`
talking to the control socket; a thread of it follows the telemetry). Phases, each decided from what the robot
sees rather than from a fixed step:

1. **before**: the robot runs nominal until its last ``--episodes-before`` episodes, all served by one champion,
   average at least ``--ready-return`` (default: the profile's solved level; Ant: its factory champion serving),
   and the daemon has finished its start-up work (its first generation evolved: the factory champions of every
   regime are registered and gated by then, which a fresh state directory does once in a robot's life -- the Ant's
   first generation comes 59-80 s after the daemon's start on the 2-core machine; a robot in service meets its
   damage with that long done); their mean
   is ``live_return_before``; ``startup_to_first_generation_s`` and ``startup_to_fault_s`` are seconds from the
   daemon's start.
2. **fault**: the plant switches to ``--fault`` (a declared regime) or to the regime ``--fault-def`` defines (a
   fault nobody declared). ``fault_to_detect_steps``: robot steps from the fault until the runtime assigned the
   robot a regime other than nominal (the server's ``assignment`` event), or reported a fault nobody declared (the
   daemon's ``adaptation`` event ``undeclared``);
   ``identified``: that regime, and for a robot with a twin the largest error of its fitted gains against the
   fault's true ones. ``fault_to_recovered_s``: seconds from the fault until the end of the first episode that
   started after it and returned at least ``--recovered-fraction`` (0.9) of ``live_return_before``.
3. **repaired**: the plant goes back to nominal. ``switch_back_s``: seconds until the first step served by a
   champion of the nominal regime registered before the repair (a stored one); ``nominal_generations_before_switch
   _back``: generations the daemon evolved in nominal in between (0: no evolution was needed).
   ``live_return_after``: the mean return of the next ``--episodes-after`` episodes started after the switch.

A phase that does not finish within its time limit is reported as such (``null`` figures, ``stopped_at``); a
robot not recovered within ``--recover-timeout-s`` is repaired anyway (``recovery_timed_out``), so that the switch
back is still measured.
Goals (issue 13): CartPole ``fault_to_recovered_s`` <= 60 and ``switch_back_s`` <= 1; Ant walking again at >= 80 %
of its pre-fault return within 120 s of an undeclared leg fault.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zmq

GOALS = {"cartpole": {"fault_to_recovered_s": 60.0, "switch_back_s": 1.0},
         "ant": {"fault_to_recovered_s": 120.0, "recovered_fraction": 0.8}}
UNDECLARED = "undeclared"


class Telemetry(threading.Thread):
    """Every telemetry event, with the monotonic time it arrived."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.events, self.stop = endpoint, [], threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        self.ready.set()
        while not self.stop.is_set():
            if sock.poll(200):
                topic, body = sock.recv_multipart()
                self.events.append((time.monotonic(), topic.decode(), json.loads(body)))
        sock.close()

    def find(self, topic: str, since: float = 0.0, **match: object) -> list[tuple[float, dict]]:
        return [(t, e) for t, tp, e in list(self.events)
                if tp == topic and t >= since and all(e.get(k) == v for k, v in match.items())]


class Schedule:
    """The plant's regime as the run goes (``plant`` of :func:`~srghn.deploy.clients.robot_sim.run_robot`)."""

    def __init__(self, args: argparse.Namespace, fault: str, deadline: float,
                 settled: Callable[[], bool] = lambda: True) -> None:
        self.args, self.fault, self.phase, self.deadline, self.settled = args, fault, "before", deadline, settled
        self.before: list[float] = []
        self.t_fault = self.t_repair = self.t_switch = self.t_recovered = None
        self.step_fault = self.step_repair = None
        self.episode_fault = self.episode_switch = None
        self.stopped_at: str | None = None
        self.recovery_timed_out = False
        self.nominal_champions: set[str] = set()

    def __call__(self, run) -> str:  # noqa: ANN001 (RobotRun)
        a, now = self.args, time.monotonic()
        if self.phase == "before":
            recent = run.returns[-a.episodes_before:]
            ready = (len(recent) == a.episodes_before and len(set(run.finished_by[-a.episodes_before:])) == 1
                     and run.finished_by[-1] != "safe" and np.mean(recent) >= a.ready_return and self.settled())
            if ready:
                self.before = list(recent)
                self.phase, self.t_fault, self.step_fault, self.episode_fault = "fault", now, run.steps, run.episodes
            elif now > self.deadline:
                self.stopped_at = "before"
        elif self.phase == "fault":
            target = self.target
            started_after = [r for r, end, start in _episodes(run) if start >= self.step_fault]
            if _walking_again(started_after, target, a.recovered_episodes) is not None:
                self.t_recovered = now
                self.phase, self.t_repair, self.step_repair = "repaired", now, run.steps
                self.t_phase_end = now + a.repaired_timeout_s
            elif now - self.t_fault > a.recover_timeout_s:  # not recovered in time: repair anyway, and go on
                self.recovery_timed_out = True
                self.phase, self.t_repair, self.step_repair = "repaired", now, run.steps
                self.t_phase_end = now + a.repaired_timeout_s
        elif self.phase == "repaired":
            if self.episode_switch is not None and run.episodes - self.episode_switch > a.episodes_after:
                self.phase = "done"
            elif now > self.t_phase_end:
                self.stopped_at = "repaired"
        return self.fault if self.phase == "fault" else "nominal"

    @property
    def target(self) -> float:
        """The return an episode after the fault must reach to count as walking again."""
        a = self.args
        return a.recovered_return if a.recovered_return is not None else a.recovered_fraction * float(
            np.mean(self.before))

    def on_step(self, run, served: str) -> None:  # noqa: ANN001 (RobotRun)
        if self.phase == "repaired" and self.t_switch is None and served in self.nominal_champions:
            self.t_switch = time.monotonic()
            self.step_switch = run.steps
            self.episode_switch = run.episodes + 1  # the first episode that starts after the switch

    def done(self) -> bool:
        return self.phase == "done" or self.stopped_at is not None


def _walking_again(returns: list[float], target: float, streak: int) -> int | None:
    """The index of the first of ``streak`` episodes in a row that reach ``target`` (None: no such run yet): one
    lucky episode of a gait that mostly falls short is not walking again."""
    run = 0
    for i, r in enumerate(returns):
        run = run + 1 if r >= target else 0
        if run == streak:
            return i - streak + 1
    return None


def _episodes(run) -> list[tuple[float, int, int]]:  # noqa: ANN001
    """(return, end step, start step) of every finished episode."""
    starts = [0, *run.ended_at[:-1]]
    return list(zip(run.returns, run.ended_at, starts, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", choices=("cartpole", "ant"), default="cartpole")
    parser.add_argument("--fault", help="declared regime to switch the plant to (default: the profile's switch "
                                        "regime); with --fault-def the name of the undeclared one")
    parser.add_argument("--fault-def", help="JSON regime of a fault the profile does not declare")
    parser.add_argument("--rate", type=float, default=200.0, help="robot control steps per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gate-every", type=int, default=3)
    parser.add_argument("--population", type=int)
    parser.add_argument("--ready-return", type=float, help="pre-fault level to reach first (default: the "
                                                            "profile's solved level; Ant: 1000)")
    parser.add_argument("--episodes-before", type=int, default=5)
    parser.add_argument("--episodes-after", type=int, default=3)
    parser.add_argument("--recovered-fraction", type=float)
    parser.add_argument("--recovered-return", type=float, help="walking again means an episode returning at least "
                        "this (a damage's reference), instead of --recovered-fraction of the pre-fault return")
    parser.add_argument("--recovered-episodes", type=int, default=1,
                        help="walking again: this many episodes in a row at the target (the time is the first's end)")
    parser.add_argument("--warmup-timeout-s", type=float, default=600.0)
    parser.add_argument("--recover-timeout-s", type=float, default=300.0)
    parser.add_argument("--repaired-timeout-s", type=float, default=120.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from srghn.deploy.clients.robot_sim import run_robot, undeclared_fault
    from srghn.deploy.registry.store import Registry
    from srghn.deploy.wire.topics import Topic
    from srghn.sim.profiles import load_profile

    profile = load_profile(args.robot)
    fault = args.fault or (UNDECLARED if args.fault_def else profile.switch_regime)
    plant_profile = undeclared_fault(profile, fault, args.fault_def) if args.fault_def else profile
    if args.ready_return is None:
        args.ready_return = profile.solved_fitness if args.robot == "cartpole" else 1000.0
    if args.recovered_episodes < 1:
        parser.error(f"--recovered-episodes must be at least 1, got {args.recovered_episodes}")
    if args.recovered_fraction is None:
        args.recovered_fraction = 0.9 if args.robot == "cartpole" else GOALS["ant"]["recovered_fraction"]
    result: dict = {"robot": args.robot, "fault": fault, "fault_def": json.loads(args.fault_def)
                    if args.fault_def else None, "declared": args.fault_def is None, "rate_hz": args.rate,
                    "seed": args.seed, "goals": GOALS[args.robot]}
    with tempfile.TemporaryDirectory(prefix="srghn-adapt-") as tmp:
        state, socks = Path(tmp) / "state", Path(tmp)
        endpoints = {role: f"ipc://{socks}/{role[0]}.sock" for role in ("control", "admin", "telemetry")}
        cmd = [sys.executable, "-m", "srghn.cli", "run", "--robot", args.robot, "--state-dir", str(state), "--json",
               "--workers", str(args.workers), "--gate-every", str(args.gate_every), "--seed", str(args.seed),
               *(f"--{role}={e}" for role, e in endpoints.items())]
        if args.population:
            cmd += ["--population", str(args.population)]
        started = time.monotonic()
        daemon = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        telemetry = Telemetry(endpoints["telemetry"])
        telemetry.start()
        # the daemon's start-up work is done when it evolved a generation (it registers and gates the factory's
        # champions first)
        schedule = Schedule(args, fault, started + args.warmup_timeout_s,
                            settled=lambda: bool(telemetry.find(Topic.GENERATION.value)))
        run = None
        try:
            def refresh_nominal() -> None:  # the champions of nominal registered before the repair: "stored"
                with Registry.open(state) as registry:
                    schedule.nominal_champions = {c.id for c in registry.list(profile.name)
                                                  if c.regime == "nominal"}

            def on_step(run, served: str, reward: float) -> None:  # noqa: ANN001
                if schedule.phase == "repaired" and schedule.t_switch is None and not schedule.nominal_champions:
                    refresh_nominal()
                schedule.on_step(run, served)
                if run.ended_at and run.ended_at[-1] == run.steps:
                    episode_ends.append(time.monotonic())

            episode_ends: list[float] = []
            run = run_robot(plant_profile, endpoints["control"], rate_hz=args.rate, seed=args.seed,
                            identity=b"bench-robot", timeout_s=5.0, plant=schedule, on_step=on_step,
                            should_stop=lambda: schedule.done() or daemon.poll() is not None)
        finally:
            serving = None
            if daemon.poll() is None:
                try:  # the server's own handling time of ACTs, per-robot serving included
                    from srghn.deploy.clients.client import AdminClient

                    with AdminClient(endpoints["admin"], timeout_s=10) as admin:
                        serving = admin.status()["requests"]
                except Exception as exc:  # noqa: BLE001 (a figure missing, not a failed benchmark)
                    serving = {"error": str(exc)}
                daemon.send_signal(signal.SIGTERM)
            try:
                stdout, stderr = daemon.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                daemon.kill()
                stdout, stderr = daemon.communicate()
            telemetry.stop.set()
        summary = json.loads(stdout) if stdout.strip() else {"error": stderr[-2000:]}
        result.update(_figures(args, profile, fault, schedule, run, episode_ends, telemetry))
        result["server_requests"] = serving
        result["startup_to_fault_s"] = None if schedule.t_fault is None else round(schedule.t_fault - started, 2)
        generations = telemetry.find(Topic.GENERATION.value)
        result["startup_to_first_generation_s"] = round(generations[0][0] - started, 2) if generations else None
        if run is not None:  # requests the robot got no answer to in time, in all and after the fault
            result["robot_timeouts"] = run.timeouts
            fault_step = schedule.step_fault
            result["robot_timeouts_after_fault"] = sum(1 for step in run.timeout_steps
                                                       if fault_step is not None and step >= fault_step)
        result["daemon"] = {k: summary.get(k) for k in ("stopped_by", "generation", "generations_this_run",
                                                          "regime", "candidates", "live")}
        with Registry.open(state) as registry:
            if result.get("recovered_by") not in (None, "safe"):
                champion = registry.get(result["recovered_by"])
                result["recovered_by_regime"] = champion.regime
                # how it was made: evolved (none), repertoire, trial, compensation; and from which stored champion
                result["recovered_by_source"] = champion.meta.get("source")
                result["recovered_by_from"] = champion.meta.get("stored", champion.meta.get("compensates"))
            result["adaptation_events"] = [
                {**e.to_dict(), "to_regime": registry.get(e.to_id).regime if e.to_id else None}
                for e in registry.history(profile.name) if e.actor == "adaptation"]
    result["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2) if args.json else result)
    return 0


def _figures(args, profile, fault: str, s: Schedule, run, ends: list[float], tel: Telemetry) -> dict:  # noqa: ANN001
    out: dict = {"stopped_at": s.stopped_at, "recovery_timed_out": s.recovery_timed_out,
                 "live_return_before": round(float(np.mean(s.before)), 2) if s.before else None}
    if s.t_fault is None or run is None:
        return out
    episodes = _episodes(run)
    # detection: the first assignment of another regime than nominal after the fault, or an undeclared fit
    assigned = [(t, e) for t, e in tel.find("assignment", s.t_fault, client="bench-robot")
                if e.get("regime") not in (None, "nominal") and e.get("previous_regime") != e.get("regime")]
    undeclared = [(t, e) for t, e in tel.find("adaptation", s.t_fault, event="undeclared", client="bench-robot")]
    first = min([*assigned, *undeclared], key=lambda te: te[0], default=None)
    if first is not None:
        t, event = first
        steps = event.get("steps")
        out["fault_to_detect_steps"] = steps - s.step_fault if isinstance(steps, int) else None
        out["fault_to_detect_s"] = round(t - s.t_fault, 3)
        out["identified"] = {"regime": event.get("regime"), "declared": event.get("event") != "undeclared"}
        if "fit_s" in event:
            out["identified"]["fit_s"] = event["fit_s"]
        if profile.twin is not None:
            out["identified"]["param_error"] = _param_error(profile, fault, args.fault_def, event)
    else:
        out["fault_to_detect_steps"], out["identified"] = None, None
    out["timeline"] = _timeline(tel, s.t_fault)
    out["episodes"] = [{"end_s": round(ends[i] - s.t_fault, 2) if i < len(ends) else None, "return": round(r, 2),
                        "after_fault": start >= s.step_fault, "served_by": run.finished_by[i]}
                       for i, (r, _, start) in enumerate(episodes)]
    if s.t_recovered is not None:
        # the end of the first episode that started after the fault and got back to the target (with the next
        # --recovered-episodes - 1 as well)
        after = [i for i, (_, _, start) in enumerate(episodes) if start >= s.step_fault]
        index = after[_walking_again([episodes[i][0] for i in after], s.target, args.recovered_episodes)]
        out["fault_to_recovered_s"] = round(ends[index] - s.t_fault, 2) if index < len(ends) else None
        out["recovered_return"] = round(episodes[index][0], 2)
        out["recovered_by"] = run.finished_by[index]
    else:
        out["fault_to_recovered_s"] = None
    faulty = [r for r, _, start in episodes if start >= s.step_fault and (s.step_repair is None
                                                                          or start < s.step_repair)]
    out["live_return_during_fault_first"] = round(faulty[0], 2) if faulty else None
    if s.t_switch is not None:
        out["switch_back_s"] = round(s.t_switch - s.t_repair, 3)
        out["switch_back_steps"] = s.step_switch - s.step_repair
        out["nominal_generations_before_switch_back"] = len(
            [1 for t, e in tel.find("generation", s.t_repair) if t < s.t_switch and e.get("regime") == "nominal"])
        after = [r for r, _, start in episodes if start >= s.step_switch][:args.episodes_after]
        out["live_return_after"] = round(float(np.mean(after)), 2) if after else None
    else:
        out["switch_back_s"] = out["live_return_after"] = None
    out["promotions"] = [{"to": e.get("to"), "actor": e.get("actor"), "at_s": round(t - s.t_fault, 2)}
                         for t, e in [*tel.find("promotion", s.t_fault), *tel.find("rollback", s.t_fault)]]
    return out


TIMELINE_TOPICS = ("adaptation", "gate", "drift", "assignment")
BULKY = ("errors", "params", "stderr", "finalists", "changes", "candidates", "gates", "trials")


def _timeline(tel: Telemetry, t_fault: float) -> list[dict]:
    """What the daemon said about the fault, in order: each adaptation, gate, drift and assignment event after it,
    seconds from the fault, without its bulky fields (what a reader needs to see where the time went)."""
    return [{"t_s": round(t - t_fault, 2), "topic": topic, **{k: v for k, v in e.items() if k not in BULKY}}
            for t, topic, e in list(tel.events) if t >= t_fault and topic in TIMELINE_TOPICS]


def _param_error(profile, fault: str, fault_def: str | None, event: dict) -> float | None:  # noqa: ANN001
    """Largest error of the identified regime against the fault's definition, in each kind's unit (decades for
    damping): the regime the daemon acts on, whose values are the fit's on its tolerance grid. Not the raw fit: a
    parameter the robot's window left free (a leg sent no torque) lands anywhere, and the regime leaves it out."""
    from srghn.deploy.clients.robot_sim import undeclared_fault
    from srghn.sim.envs import parse_regime, regime_distances

    truth = (undeclared_fault(profile, fault, fault_def) if fault_def else profile).regime_defs[fault]
    found = (parse_regime(event["changes"], "identified") if "changes" in event
             else profile.regime_defs.get(event.get("regime")))
    if found is None:
        return None
    return round(max(regime_distances(truth, found).values(), default=0.0), 4)


if __name__ == "__main__":
    sys.exit(main())
