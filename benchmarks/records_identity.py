"""The generation records (minus timing) of a short run, to compare two revisions of the evaluation path.

    python benchmarks/records_identity.py ant /tmp/records-new.json

Three generations of SR-GHN (seed 3, population 4, two episodes each; the profile's first regime, then its
second twice) through ``Driver`` and ``LocalEvaluator`` with two workers and no job timeout (a loaded machine
must not turn slow jobs into faults). Run it on two checkouts and compare the files: the same bytes means the
same fitness, returns, steps, ancestry, faults and diversity in every generation (``docs/shadow.md``).
"""
import dataclasses
import json
import sys

from srghn.sim.driver import Driver, RunSpec
from srghn.sim.profiles import load_profile
from srghn.sim.workers import LocalEvaluator, WorkerLimits

if len(sys.argv) != 3:
    sys.exit("usage: records_identity.py ROBOT OUT.json")
robot, out = sys.argv[1], sys.argv[2]
profile = load_profile(robot)
spec = RunSpec(profile, seed=3, population=4, episodes=2)
rows = []
with LocalEvaluator(profile, workers=2, limits=WorkerLimits(job_timeout_s=3600)) as ev:
    driver = Driver.start(spec, ev)
    for regime in [profile.regimes[0], profile.regimes[1], profile.regimes[1]]:
        r = dataclasses.asdict(driver.step(regime))
        r.pop("timing", None)
        rows.append(r)
with open(out, "w") as f:
    json.dump(rows, f)
print(out, [x["faults"] for x in rows], [x["env_steps"] for x in rows])
