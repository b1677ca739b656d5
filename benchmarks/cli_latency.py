"""How long ``srghn-ctl`` takes to answer ``--help`` and to reject bad input (issue 14's target: under 0.5 s on a
quiet machine): each command run as a fresh process, the median and max of several runs, with the machine's
load average before and after (the figures mean little on a loaded machine: say which it was).

    python benchmarks/cli_latency.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "help": ["--help"],
    "version": ["--version"],
    "run --help": ["run", "--help"],
    "unknown flag": ["run", "--bogus"],
    "not a number": ["evolve", "--generations", "ten"],
    "--fault-at without --fault": ["run", "--fault-at", "100"],
    "negative --robot-rate": ["run", "--sim-robot", "--robot-rate", "-1"],
    "unknown robot": ["evolve", "--robot", "spot"],
    "unknown regime": ["run", "--regime", "sideways"],
    "unknown watch topic": ["watch", "--topic", "bogus"],
    "state dir is a file": ["run", "--state-dir", "{file}"],
    "observation dimension mismatch": ["evolve", "--robot", "{wide}", "--out", "{tmp}/out"],
}


def ctl() -> list[str]:
    script = Path(sys.executable).with_name("srghn-ctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "srghn.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from srghn.sim.profiles import PROFILE_DIR

    load_before = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "state-file"
        file.write_text("not a directory")
        wide = Path(tmp) / "wide.toml"
        wide.write_text((PROFILE_DIR / "cartpole.toml").read_text().replace("dim = 4", "dim = 5"))
        env = {**os.environ, "SRGHN_STATE_DIR": str(Path(tmp) / "state")}
        for name, case in CASES.items():
            argv = [a.format(file=file, wide=wide, tmp=tmp) for a in case]
            times, codes = [], set()
            for _ in range(args.runs):
                t0 = time.perf_counter()
                done = subprocess.run([*ctl(), *argv], capture_output=True, env=env, timeout=120)
                times.append(time.perf_counter() - t0)
                codes.add(done.returncode)
            results[name] = {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
                             "exit_codes": sorted(codes)}
    print(json.dumps({"runs": args.runs, "cores": os.cpu_count(),
                      "load_average_before": [round(x, 2) for x in load_before],
                      "load_average_after": [round(x, 2) for x in os.getloadavg()],
                      "slowest_median_s": max(r["median_s"] for r in results.values()), "commands": results},
                     indent=2))


if __name__ == "__main__":
    main()
