"""`evolve --resume` after a SIGINT (issue 14): the interrupted and resumed run ends exactly where an uninterrupted
run with the same flags ends, every deterministic figure and the champion bit for bit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from server_helpers import wait_for

pytestmark = pytest.mark.slow

FLAGS = ["--robot", "cartpole", "--generations", "30", "--population", "4", "--seed", "7", "--backend", "local",
         "--workers", "1", "--no-register", "--json"]


def evolve(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "srghn.cli", "evolve", *FLAGS, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def records(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "timing"} for line in lines]


def test_resume_after_sigint_equals_an_uninterrupted_run(tmp_path):
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    proc = evolve(cut)
    wait_for(lambda: (cut / "metrics.jsonl").is_file() and len((cut / "metrics.jsonl").read_text().splitlines()) >= 2,
             300, "two generations")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr
    stopped_at = len(records(cut))
    assert 2 <= stopped_at < 30
    again = evolve(cut)  # without --resume an existing run is refused, and left as it is
    _, stderr = again.communicate(timeout=120)
    assert again.returncode == 2 and "already holds a run; pass --resume" in stderr
    assert len(records(cut)) == stopped_at
    resumed = evolve(cut, "--resume")
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert "evolve cartpole: 30/30" in stderr  # its progress counts from where the run stood, not from 0
    reference = evolve(whole)
    ref_stdout, stderr = reference.communicate(timeout=600)
    assert reference.returncode == 0, stderr
    # without a terminal, progress is a line at the start and one at the end (--json's stdout stays clean)
    assert "evolve cartpole: started, 30 to do" in stderr and "evolve cartpole: 30/30" in stderr

    assert records(cut) == records(whole) and len(records(whole)) == 30
    a, b = json.loads(stdout), json.loads(ref_stdout)
    assert a["champion"]["fitness"] == b["champion"]["fitness"] and a["champion"]["id"] == b["champion"]["id"]
    with np.load(cut / "champion.npz") as x, np.load(whole / "champion.npz") as y:
        assert sorted(x.files) == sorted(y.files)
        for name in x.files:
            if x[name].dtype.kind in "fiub":
                np.testing.assert_array_equal(x[name], y[name], err_msg=name)
