"""The champion registry: opening, lifecycle, promote/rollback/last-known-good, refusals, tampering, lineage."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from champion_helpers import passing_report, variant

from srghn import ConfigError
from srghn.deploy.process.state import STATE_DIR_ENV, resolve_state_dir
from srghn.deploy.registry.artifacts import ArtifactStore, atomic_write
from srghn.deploy.registry.store import ONNX_SUFFIX, SCHEMA_VERSION, Registry
from srghn.errors import ArtifactCorrupted, PromotionRefused, RegistryError, StateDirMissing, UnknownChampion
from srghn.safety.report import GateReport, GateResult

ROBOT = "cartpole"


def add(registry: Registry, model: bytes, cid: str, parents: tuple[str, ...] = (), gated: bool = True) -> None:
    """Register ``cid`` with its own artifact; with ``gated`` also store a passing report against the live one."""
    registry.register(champion_id=cid, robot=ROBOT, model=variant(model, cid), params=np.arange(4, dtype=np.float32),
                      policy={"obs_dim": 4}, parents=parents, generation=3, regime="nominal", seed=0,
                      fitness={"fitness": 1.0})
    if gated:
        regate(registry, cid)


def regate(registry: Registry, cid: str) -> None:
    live = registry.live(ROBOT)
    registry.store_report(cid, passing_report(cid, ROBOT, live.id if live else None))


def live_id(registry: Registry) -> str | None:
    live = registry.live(ROBOT)
    return live.id if live else None


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_open_refuses_missing_state_and_creates_schema_on_request(tmp_path: Path) -> None:
    with pytest.raises(StateDirMissing, match="does not exist"):
        Registry.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StateDirMissing, match="holds no registry.db"):
        Registry.open(tmp_path / "empty")
    assert not (tmp_path / "nope").exists()  # reading never creates state
    with Registry.open(tmp_path / "state", create=True) as reg:
        assert reg.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reg.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert reg.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert reg.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with Registry.open(tmp_path / "state") as reg:  # reopening without create works
        assert reg.list() == []


def test_open_rejects_other_schema_versions_and_non_databases(tmp_path: Path) -> None:
    Registry.open(tmp_path / "a", create=True).close()
    db = sqlite3.connect(tmp_path / "a" / "registry.db")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(RegistryError, match="schema version 99"):
        Registry.open(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "registry.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RegistryError, match="not a readable SQLite registry"):
        Registry.open(tmp_path / "b")


def test_state_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "env"))
    assert resolve_state_dir(tmp_path / "opt") == tmp_path / "opt"
    assert resolve_state_dir(None) == tmp_path / "env"
    monkeypatch.delenv(STATE_DIR_ENV)
    assert resolve_state_dir(None).name == "srghn"


def test_register_stores_content_addressed_artifacts(registry: Registry, cartpole_model: bytes) -> None:
    add(registry, cartpole_model, "a", gated=False)
    champion = registry.get("a")
    path = registry.state_dir / "artifacts" / f"{champion.artifact_sha256}{ONNX_SUFFIX}"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == champion.artifact_sha256
    assert registry.load_model("a") == variant(cartpole_model, "a")
    assert registry.load_params("a").tolist() == [0, 1, 2, 3]
    assert champion.status == "candidate" and champion.gate_report is None
    assert not list((registry.state_dir / "artifacts").glob(".*.tmp"))  # no temp files left behind
    with pytest.raises(RegistryError, match="already registered"):
        add(registry, cartpole_model, "a")
    assert [e.kind for e in registry.history()] == ["register"]


def test_unknown_ids_suggest_and_prefixes_resolve(registry: Registry, cartpole_model: bytes) -> None:
    add(registry, cartpole_model, "cartpole-s0-abc-i12", gated=False)
    add(registry, cartpole_model, "cartpole-s0-abc-i15", gated=False)
    with pytest.raises(UnknownChampion, match="ambiguous"):
        registry.get("cartpole-s0-abc-i1")
    assert registry.get("cartpole-s0-abc-i12").id == "cartpole-s0-abc-i12"
    assert registry.get("cartpole-s0-abc-i15"[:-1] + "5").id == "cartpole-s0-abc-i15"
    with pytest.raises(UnknownChampion, match="did you mean cartpole-s0-abc-i1[25]"):
        registry.get("cartpole-s0-abc-i13")
    with pytest.raises(UnknownChampion) as info:
        registry.get("zzz")
    assert isinstance(info.value, ConfigError)  # a user's typo: the CLI exits 2


def test_promote_rollback_and_rollback_to_return_the_expected_live_champion(registry: Registry,
                                                                            cartpole_model: bytes) -> None:
    for cid in ("a", "b", "c"):
        add(registry, cartpole_model, cid, gated=False)
    regate(registry, "a")
    assert registry.get("a").status == "passed"
    registry.promote("a", "alice", "first")
    assert live_id(registry) == "a" and registry.last_known_good(ROBOT).id == "a"
    regate(registry, "b")
    registry.promote("b", "alice", "better")
    assert live_id(registry) == "b" and registry.last_known_good(ROBOT).id == "a"
    regate(registry, "c")
    registry.promote("c", "bob", "best")
    assert (live_id(registry), registry.last_known_good(ROBOT).id) == ("c", "b")
    assert registry.live_stack(ROBOT) == ["a", "b", "c"]

    registry.rollback("carol", reason="c misbehaves")  # default: previous live
    assert (live_id(registry), registry.last_known_good(ROBOT).id) == ("b", "a")
    registry.rollback("carol", robot=ROBOT)
    assert (live_id(registry), registry.last_known_good(ROBOT).id) == ("a", "a")
    with pytest.raises(PromotionRefused, match="no previous live champion"):
        registry.rollback("carol")
    registry.rollback("carol", to="c", reason="c was fine after all")  # c had been popped: pushed back
    assert (live_id(registry), registry.last_known_good(ROBOT).id) == ("c", "a")
    registry.rollback("carol", to="a")
    assert live_id(registry) == "a" and registry.live_stack(ROBOT) == ["a"]
    assert {c.id: c.status for c in registry.list()} == {"a": "live", "b": "retired", "c": "retired"}

    moves = [(e.kind, e.from_id, e.to_id, e.actor) for e in registry.history() if e.kind in ("promote", "rollback")]
    assert moves == [("promote", None, "a", "alice"), ("promote", "a", "b", "alice"), ("promote", "b", "c", "bob"),
                     ("rollback", "c", "b", "carol"), ("rollback", "b", "a", "carol"), ("rollback", "a", "c", "carol"),
                     ("rollback", "c", "a", "carol")]
    reasons = [e.reason for e in registry.history() if e.kind in ("promote", "rollback")]
    assert reasons[:4] == ["first", "better", "best", "c misbehaves"]
    refused = [e for e in registry.history() if e.kind == "refused"]
    assert len(refused) == 1 and refused[0].detail["action"] == "rollback"
    assert registry.check() == []


def test_promote_refusals_are_explained_and_audited(registry: Registry, cartpole_model: bytes) -> None:
    add(registry, cartpole_model, "a", gated=False)
    with pytest.raises(PromotionRefused, match="no gate report; run `srghn-ctl gate a`"):
        registry.promote("a", "alice")
    registry.store_report("a", GateReport("a", ROBOT, ()))
    with pytest.raises(PromotionRefused, match="holds no gates"):
        registry.promote("a", "alice")
    hard_fail = GateReport("a", ROBOT, (GateResult("finite_actions", True, 0, 3, False),
                                        GateResult("latency_p99", False, 1000.0, 2000.0, False)))
    registry.store_report("a", hard_fail)
    assert registry.get("a").status == "failed"
    with pytest.raises(PromotionRefused, match=r"hard gate\(s\) finite_actions; hard gates cannot be overridden"):
        registry.promote("a", "alice", reason="please", force=True)
    regate(registry, "a")
    registry.promote("a", "alice")
    with pytest.raises(PromotionRefused, match="already live"):
        registry.promote("a", "alice")
    add(registry, cartpole_model, "b", gated=False)
    registry.store_report("b", passing_report("b", ROBOT, incumbent_id=None))  # gated before a went live
    with pytest.raises(PromotionRefused, match="compared it with nothing but a is live now"):
        registry.promote("b", "alice")
    with pytest.raises(ConfigError, match="--force needs --reason"):
        registry.promote("b", "alice", force=True)
    regate(registry, "b")
    registry.promote("b", "alice")
    with pytest.raises(PromotionRefused, match="rollback --to a"):
        registry.promote("a", "alice")
    kinds = [e.kind for e in registry.history()]
    assert kinds.count("refused") == 6 and live_id(registry) == "b"
    assert registry.check() == []


def test_soft_gate_override_needs_force_and_reason_and_is_audited(registry: Registry, cartpole_model: bytes) -> None:
    add(registry, cartpole_model, "a", gated=False)
    soft_fail = GateReport("a", ROBOT, (GateResult("parity", True, 1e-5, 0.0, True),
                                        GateResult("regression[nominal]", False, 450.0, 188.0, False)))
    registry.store_report("a", soft_fail)
    with pytest.raises(PromotionRefused, match=r"regression\[nominal\]; promote anyway only with --force --reason"):
        registry.promote("a", "alice")
    event = registry.promote("a", "alice", reason="field test needs it", force=True)
    assert event.forced and event.detail == {"overridden": ["regression[nominal]"]}
    assert registry.history()[-1].reason == "field test needs it"


def test_tampered_candidate_is_refused_and_last_known_good_stays_live(registry: Registry,
                                                                      cartpole_model: bytes) -> None:
    add(registry, cartpole_model, "a")
    registry.promote("a", "alice")
    add(registry, cartpole_model, "b")
    b = registry.get("b")
    path = registry.artifacts.path(b.artifact_sha256, ONNX_SUFFIX)
    flip_byte(path)
    with pytest.raises(ArtifactCorrupted) as info:
        registry.promote("b", "alice")
    message = str(info.value)
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    assert str(path) in message and b.artifact_sha256 in message and actual in message
    with pytest.raises(ArtifactCorrupted):
        registry.load_model("b")
    assert live_id(registry) == "a" and registry.last_known_good(ROBOT).id == "a"
    assert registry.history()[-1].kind == "refused" and registry.check() == []


def test_rollback_to_a_corrupted_champion_keeps_the_live_one(registry: Registry, cartpole_model: bytes) -> None:
    add(registry, cartpole_model, "a")
    registry.promote("a", "alice")
    add(registry, cartpole_model, "b")
    registry.promote("b", "alice")
    flip_byte(registry.artifacts.path(registry.get("a").artifact_sha256, ONNX_SUFFIX))
    with pytest.raises(ArtifactCorrupted, match="b stays live"):
        registry.rollback("alice")
    assert live_id(registry) == "b" and registry.live_stack(ROBOT) == ["a", "b"]
    assert registry.check() == []


def test_check_reports_a_live_artifact_that_no_longer_verifies(registry: Registry, cartpole_model: bytes) -> None:
    add(registry, cartpole_model, "a")
    registry.promote("a", "alice")
    registry.artifacts.path(registry.get("a").artifact_sha256, ONNX_SUFFIX).unlink()
    assert registry.check() == [f"{ROBOT}: live champion a's artifact does not verify"]
    with pytest.raises(ArtifactCorrupted, match="is missing"):
        registry.load_model("a")


def test_rollback_needs_something_live(registry: Registry, cartpole_model: bytes) -> None:
    with pytest.raises(PromotionRefused, match="nothing is live"):
        registry.rollback("alice")
    add(registry, cartpole_model, "a")
    with pytest.raises(PromotionRefused, match="nothing is live for robot cartpole"):
        registry.rollback("alice", robot=ROBOT)
    registry.promote("a", "alice")
    add(registry, cartpole_model, "b")
    with pytest.raises(PromotionRefused, match="was never live; promote it instead"):
        registry.rollback("alice", to="b")


def test_lineage_links_parents_and_children(registry: Registry, cartpole_model: bytes) -> None:
    add(registry, cartpole_model, "r-i1", parents=("r-i0",), gated=False)
    add(registry, cartpole_model, "r-i2", parents=("r-i1",), gated=False)
    add(registry, cartpole_model, "r-i3", parents=("r-i1",), gated=False)
    tree = registry.lineage("r-i2")
    assert tree["id"] == "r-i2" and tree["parents"][0]["id"] == "r-i1"
    assert tree["parents"][0]["parents"] == [{"id": "r-i0", "registered": False, "parents": []}]
    assert [c["id"] for c in registry.lineage("r-i1")["children"]] == ["r-i2", "r-i3"]
    assert registry.get("r-i3").parents == ("r-i1",)


def test_artifact_store_writes_atomically_and_verifies(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    digest = store.put(b"hello", ".bin")
    assert store.read(digest, ".bin") == b"hello" and store.put(b"hello", ".bin") == digest
    atomic_write(tmp_path / "x", b"abc")
    assert (tmp_path / "x").read_bytes() == b"abc" and sorted(p.name for p in tmp_path.iterdir()) == [
        f"{digest}.bin", "x"]
    (tmp_path / f"{digest}.bin").write_bytes(b"hellp")
    assert not store.verify(digest, ".bin")
    with pytest.raises(RegistryError, match="not a sha256"):
        store.path("../etc/passwd", ".bin")
