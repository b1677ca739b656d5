"""`evolve --backend/--workers/--ray-address`: validated flags, a clear message without Ray, records on disk."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from srghn.cli import app
from srghn.errors import EvaluatorError
from srghn.sim.profiles import load_profile

runner = CliRunner()


@pytest.mark.parametrize(("args", "message"), [
    (["evolve", "--workers", "0"], "--workers must be >= 1"),
    (["evolve", "--backend", "gpu"], "--backend must be one of local, ray, inprocess"),
    (["evolve", "--ray-address", "10.0.0.1:6379"], "--ray-address only applies to --backend ray"),
])
def test_bad_backend_flags_exit_2(args, message, tmp_path):
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_ray_backend_without_ray_says_to_install_the_extra(monkeypatch):
    from srghn.sim.ray_backend import RayEvaluator

    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as if it were not installed
    with pytest.raises(EvaluatorError, match=r"install the \[ray\] extra"):
        RayEvaluator(load_profile("cartpole"), workers=1)


def test_evolve_with_two_local_workers_writes_records_with_faults(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["evolve", "--generations", "3", "--population", "4", "--workers", "2",
                                 "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["faults"] == {} for r in records)
    assert json.loads((out / "run.json").read_text())["evaluator"] == {"backend": "local", "workers": 2}
