"""End to end on a dead leg (issue 33), with real processes: the daemon, its supervised server and a simulated Ant
at 200 Hz (``benchmarks/adaptation.py``, as ``benchmarks/damage.py`` runs it) whose back-left leg dies -- a fault
its profile does not declare. The twin identifies it from the robot's own steps, the fault becomes a regime, the
stored champions and the repertoire are played under it in the shadow simulator, the best is gated there and
served to the robot, which walks better than the factory gait did on three legs; the control path answers every
request throughout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DEAD_BACK_LEFT = {"gain": {"hip_3": 0.0, "ankle_3": 0.0}}
WALKING = 1400.0
"""Above what the factory gait returns on three legs here (about 1190) and standing still (995), below what the
champion stored for a weak back-left leg returns with it dead (about 1600: docs/results.md, "The Ant's damage
references")."""


def test_a_dead_leg_is_identified_searched_in_the_twin_and_answered(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "adaptation.py"), "--robot", "ant", "--fault", "dead_back_left",
         "--fault-def", json.dumps(DEAD_BACK_LEFT), "--seed", "1", "--json", "--recovered-return", str(WALKING),
         "--recovered-episodes", "2", "--recover-timeout-s", "400", "--episodes-before", "2", "--episodes-after", "1"],
        capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads(done.stdout)
    assert not run["recovery_timed_out"], "\n".join(json.dumps(e) for e in run["timeline"])
    # identified from the robot's steps as a new regime: both of the leg's gains at zero, nothing else changed
    assert run["identified"]["declared"] is False and run["identified"]["param_error"] <= 0.1
    events = [e.get("event") for e in run["timeline"] if e["topic"] == "adaptation"]
    assert events.index("undeclared") < events.index("repertoire_search")
    # walking again on a gait the twin search released for that regime, gated there
    assert run["recovered_by_regime"] == run["identified"]["regime"]
    assert run["recovered_by_source"] == "repertoire"
    gates = [e for e in run["timeline"] if e["topic"] == "gate" and e.get("champion") == run["recovered_by"]]
    assert gates and gates[0]["passed"]
    assert run["recovered_return"] >= WALKING > run["live_return_during_fault_first"]
    # the control path never stopped answering
    assert run["robot_timeouts_after_fault"] == 0 and run["server_requests"]["errors"] == 0
