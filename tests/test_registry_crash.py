"""Crash consistency with real processes: a child promotes and rolls back in a loop and is SIGKILLed at random.

After every kill the registry must open, pass ``PRAGMA integrity_check``, name a live champion whose artifact
verifies, and show no half-applied transition: live pointer, live status, live stack and the last audited
promote/rollback agree, and the audited moves form an unbroken chain (each one starts where the last ended).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from champion_helpers import passing_report

from srghn.deploy.registry.store import ONNX_SUFFIX, PARAMS_SUFFIX, Registry

KILLS = 50
ROBOT = "cartpole"

CHILD = r"""
import random, sys
import numpy as np
from srghn.errors import PromotionRefused
from srghn.deploy.registry.store import Registry
from srghn.safety.report import GateReport, GateResult

state, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
reg = Registry.open(state)
model = reg.load_model("seed-champion")
print("ready", flush=True)
n = 0
while True:
    live = reg.live("cartpole")
    roll = rng.random()
    try:
        if roll < 0.3:
            reg.rollback("crash-child", robot="cartpole", reason="loop rollback")
        elif roll < 0.45:
            retired = [c.id for c in reg.list("cartpole", "retired")]
            if retired:
                reg.rollback("crash-child", to=rng.choice(retired), reason="loop rollback --to")
        else:
            cid = f"k{seed}-{n}"
            reg.register(champion_id=cid, robot="cartpole", model=model, params=np.full(8, n, np.float32),
                         policy={"obs_dim": 4}, parents=(live.id,), generation=n, regime="nominal")
            gates = (GateResult("parity", True, 1e-5, 0.0, True),)
            reg.store_report(cid, GateReport(cid, "cartpole", gates, live.id))
            reg.promote(cid, "crash-child", reason="loop promote")
    except PromotionRefused:
        pass
    n += 1
"""


def audit_chain_problems(registry: Registry) -> list[str]:
    """Moves must chain: every promote/rollback starts from the champion the previous one made live."""
    moves = [e for e in registry.history(ROBOT) if e.kind in ("promote", "rollback")]
    return [f"event {b.seq} goes {b.from_id} -> {b.to_id} but {a.to_id} was live"
            for a, b in zip(moves, moves[1:], strict=False) if b.from_id != a.to_id]


@pytest.mark.slow
def test_sigkill_during_promote_and_rollback_never_leaves_half_a_transition(tmp_path: Path,
                                                                             cartpole_model: bytes) -> None:
    state = tmp_path / "state"
    with Registry.open(state, create=True) as registry:
        registry.register(champion_id="seed-champion", robot=ROBOT, model=cartpole_model,
                          params=np.zeros(8, np.float32), policy={"obs_dim": 4})
        registry.store_report("seed-champion", passing_report("seed-champion", ROBOT, None))
        registry.promote("seed-champion", "test", reason="start")
    rng = random.Random(1234)
    transitions_before, t0 = 1, time.perf_counter()
    for cycle in range(KILLS):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(state), str(cycle)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        try:
            ready = child.stdout.readline()
            if ready != b"ready\n":
                child.kill()
                pytest.fail(f"child {cycle} did not start: {child.communicate()[1].decode()[-2000:]}")
            time.sleep(rng.uniform(0.0, 0.15))  # the random moment of the kill
            if child.poll() is not None:
                pytest.fail(f"child {cycle} died on its own: {child.communicate()[1].decode()[-2000:]}")
            child.send_signal(signal.SIGKILL)
            child.communicate()
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
        assert child.returncode == -signal.SIGKILL
        with Registry.open(state) as registry:
            assert registry.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert registry.check() == [], f"after kill {cycle}"
            live = registry.live(ROBOT)
            assert live is not None and registry.load_model(live.id)  # the live artifact verifies
            assert audit_chain_problems(registry) == [], f"after kill {cycle}"
            for champion in registry.list(ROBOT):  # a row is written only after its artifacts are durable
                assert registry.artifacts.verify(champion.artifact_sha256, ONNX_SUFFIX)
                assert registry.artifacts.verify(champion.params_sha256, PARAMS_SUFFIX)
            transitions = sum(e.kind in ("promote", "rollback") for e in registry.history(ROBOT))
        assert transitions >= transitions_before
        transitions_before = transitions
    elapsed = time.perf_counter() - t0
    print(f"{KILLS} SIGKILLs, {transitions_before} promote/rollback transitions survived, {elapsed:.1f} s")
    assert transitions_before > KILLS  # the kills landed while the child was busy transitioning
