"""Release-side figures per robot profile, printed as JSON: export time and parity, gate-suite time, latency.

    .venv/bin/python benchmarks/champions.py [--robots cartpole lunarlander ant]

A seeded random policy per profile (weights N(0, 1)) is exported, registered in a throwaway state directory and
gated twice: once with nothing live, once against its twin as the live incumbent (so regression runs both sides).
Random policies miss the absolute floors, so the floors are left out of this timing profile.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from srghn.deploy.daemon.champions import gate_champion, register_policy
from srghn.deploy.registry.store import Registry
from srghn.sim.profiles import load_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robots", nargs="+", default=["cartpole", "lunarlander", "ant"])
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp, Registry.open(Path(tmp), create=True) as registry:
        for robot in args.robots:
            profile = load_profile(robot)
            params = np.random.default_rng(0).standard_normal(profile.policy.num_params).astype(np.float32)
            t0 = time.perf_counter()
            champion = register_policy(registry, profile, params, champion_id=f"{robot}-bench-a")
            export_s = time.perf_counter() - t0
            timing_profile = dataclasses.replace(profile, gates=dataclasses.replace(profile.gates, floors={}))
            alone = gate_champion(registry, champion.id, profile=timing_profile)
            registry.promote(champion.id, "bench")
            twin = register_policy(registry, profile, params, champion_id=f"{robot}-bench-b")
            against = gate_champion(registry, twin.id, profile=timing_profile)
            measured = {g.name: g.measured for g in alone.gates}
            results.append({
                "robot": robot, "model_bytes": champion.artifact_bytes, "export_s": round(export_s, 2),
                "export_parity_max_abs_diff": champion.meta["export"]["parity_max_abs_diff"],
                "gate_parity_max_abs_diff": measured["parity"], "stress_rows": champion.meta["export"]["stress_rows"],
                "latency_p99_us": measured["latency_p99"], "gates_alone_s": alone.wall_s,
                "gates_vs_incumbent_s": against.wall_s, "passed_vs_incumbent": against.passed,
            })
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
