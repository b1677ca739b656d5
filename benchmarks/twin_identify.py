"""How well and how fast the parametric twin identifies faults from recorded transitions, printed as JSON.

    .venv/bin/python benchmarks/twin_identify.py [--robot ant] [--transitions 200] [--seeds 3]

For every declared regime of the robot, and for undeclared faults (Ant: one leg at gain 0.4, a 0.5 kg torso
payload, a leg at 0.4 with 0.3 kg; other robots with a ``[twin]`` table: half the first actuator's gain), the
simulated robot reports ``--transitions`` transitions under seeded random actions (half the action range), and
``srghn.sim.identify.identify`` names the regime. Reported: whether the declared regimes were named right, the
largest parameter error of each undeclared fault, and the wall time of each identification (this machine, one
process, whatever else it runs).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from srghn.sim.envs import KINDS, Regime
from srghn.sim.identify import identify, random_transitions
from srghn.sim.profiles import load_profile


def undeclared(robot: str, first_actuator: str) -> dict[str, Regime]:
    if robot == "ant":
        return {"front_left_at_0.4": Regime(gain={"hip_1": 0.4, "ankle_1": 0.4}),
                "payload_0.5kg": Regime(payload={"torso": 0.5}),
                "back_left_at_0.4_and_0.3kg": Regime(gain={"hip_3": 0.4, "ankle_3": 0.4}, payload={"torso": 0.3})}
    return {f"{first_actuator}_at_0.5": Regime(gain={first_actuator: 0.5})}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robot", default="ant", help="profile name or .toml path (default: ant)")
    parser.add_argument("--transitions", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3, help="recordings per fault (default 3)")
    args = parser.parse_args(argv)
    profile = load_profile(args.robot)
    declared, faults = [], {}
    for regime in profile.regimes:
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            found = identify(profile, *random_transitions(profile, regime, args.transitions, seed), current="nominal")
            declared.append({"regime": regime, "seed": seed, "identified": found.regime,
                             "wall_s": round(time.perf_counter() - t0, 2)})
    if profile.twin is not None:
        from srghn.sim.twin import Twin

        twin = Twin(profile)
        first = twin.params.names["gain"][0]
        twin.close()
        for name, regime in undeclared(profile.name, first).items():
            robot = profile.with_regime(name, regime)
            rows = []
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                found = identify(profile, *random_transitions(robot, name, args.transitions, seed), current="nominal")
                truth = {f"{kind}.{element}": value for kind, values in regime.changes().items()
                         for element, value in values.items()}
                errors = {key: abs(value - truth.get(key, KINDS[key.split(".")[0]]))
                          for key, value in found.params.items()}
                rows.append({"seed": seed, "identified": found.regime, "new_regime": not found.known,
                             "max_param_error": round(max(errors.values()), 6),
                             "fitted": {k: round(v, 4) for k, v in found.params.items() if k in truth},
                             "residual": float(f"{found.residual:.3g}"), "wall_s": round(time.perf_counter() - t0, 2)})
            faults[name] = {"truth": regime.to_dict(), "runs": rows,
                            "max_param_error": max(r["max_param_error"] for r in rows)}
    result = {"robot": profile.name, "transitions": args.transitions, "seeds": args.seeds,
              "declared_correct": sum(d["regime"] == d["identified"] for d in declared),
              "declared_total": len(declared),
              "declared_wall_s_median": float(np.median([d["wall_s"] for d in declared])),
              "declared_wrong": [d for d in declared if d["regime"] != d["identified"]],
              "undeclared": faults}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
