"""Session recordings (docs/recording.md): a real control server records into MCAP through its recorder process;
the files are read back with the ``mcap`` library's own reader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from server_helpers import gate_and_promote, live_champion, register_champion, running_server, wait_for

from srghn.deploy.clients.client import ControlClient
from srghn.deploy.recording.files import list_recordings, read_messages
from srghn.deploy.recording.format import RECORDINGS, check_limits
from srghn.deploy.recording.writer import RecordingWriter
from srghn.errors import ConfigError, ReplyError


def _read_all(directory: Path) -> list[tuple[str, int, dict, str]]:
    """(topic, log time, message, schema encoding) of every message of every finished file, in file order."""
    found = []
    for path in sorted(directory.glob("*.mcap")):
        with path.open("rb") as fh:
            for schema, channel, message in make_reader(fh).iter_messages(log_time_order=False):
                found.append((channel.topic, message.log_time, json.loads(message.data), schema.encoding))
    return found


def test_recorded_session_holds_every_act_and_step_with_its_champion(tmp_path, cartpole_model):
    from champion_helpers import variant

    state = tmp_path / "state"
    live_champion(state, "champ-a", cartpole_model)
    with running_server(state, record=check_limits(64, 1024)) as config:
        client = ControlClient(config.control, timeout_s=10.0, identity=b"arm-1")
        rng = np.random.default_rng(0)
        sent = []  # (obs, reward, done, champion the reply named)
        try:
            def one_step(done: bool = False) -> None:
                obs = rng.normal(size=4).astype(np.float32)
                reply = client.act(obs)
                reward = float(rng.normal())
                client.step(reward, done, False, obs + 1)
                sent.append((obs, reward, done, reply.champion, reply.serial))

            for i in range(30):
                one_step(done=i == 29)
            with __import__("srghn.deploy.registry.store", fromlist=["Registry"]).Registry.open(state) as registry:
                register_champion(registry, "champ-b", variant(cartpole_model, "champ-b"))
                gate_and_promote(registry, "champ-b")
            wait_for(lambda: client.act(np.zeros(4, np.float32)).champion == "champ-b", 30, "the server to swap")
            sent.append("probe")  # the probes above are ACTs without a STEP; counted below
            for _ in range(30):
                one_step()
            with pytest.raises(ReplyError, match="NOT_FINITE|NaN"):  # a rejected request is recorded too
                client.act(np.array([np.nan, 0, 0, 0], np.float32))
        finally:
            client.close()
    # the server stopped cleanly: the recorder finished its file
    records = _read_all(state / RECORDINGS)
    assert records and all(enc == "jsonschema" for *_, enc in records)
    acts = [m for t, _, m, _ in records if t == "/robots/arm-1/act"]
    steps = [m for t, _, m, _ in records if t == "/robots/arm-1/step"]
    stepped = [s for s in sent if s != "probe"]
    assert len(steps) == len(stepped) == 60
    ids = [a["request_id"] for a in acts]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # every ACT, in order
    # each STEP carries the champion (and serial) whose action it reports the outcome of, as the robot was told
    for (obs, reward, done, champion, serial), step in zip(stepped, steps, strict=True):
        assert step["champion"] == champion and step["serial"] == serial
        assert step["reward"] == pytest.approx(reward, rel=1e-6) and step["done"] == done
        assert np.allclose(step["next_observation"], obs + 1)
    acted = {a["request_id"]: a for a in acts}
    stepped_acts = [a for a in acts if a["observation"] in [s[0].tolist() for s in stepped]]
    assert [a["champion"] for a in stepped_acts] == [s[3] for s in stepped]
    assert {s[3] for s in stepped} == {"champ-a", "champ-b"}
    assert all(a["server_latency_us"] > 0 and a["source"] == "live" for a in acted.values())
    rejected = [m for t, _, m, _ in records if t == "/robots/arm-1/rejected"]
    assert [r["code"] for r in rejected] == ["NOT_FINITE"]
    # telemetry: the server's start, the swap to champ-b, the episode that ended, the stop
    topics = {t for t, *_ in records if t.startswith("/telemetry/")}
    assert {"/telemetry/server", "/telemetry/serving", "/telemetry/episode"} <= topics
    swaps = [m for t, _, m, _ in records if t == "/telemetry/serving"]
    assert swaps[-1]["champion"] == "champ-b"
    server_events = [m["event"] for t, _, m, _ in records if t == "/telemetry/server"]
    assert server_events[0] == "started" and server_events[-1] == "stopped"
    assert not list((state / RECORDINGS).glob("*.part"))
    assert not list(state.glob("*.sock"))  # a clean stop removes the socket files (the recorder's too)


def test_files_rotate_and_the_oldest_go(tmp_path):
    limits = check_limits(0.1, 0.3)
    writer = RecordingWriter(tmp_path, "cartpole", "test", **limits)
    obs = list(np.random.default_rng(1).normal(size=27))
    for i in range(4000):
        writer.add("act", 1_000_000_000 + i, {"client": "r", "request_id": i, "observation": obs},
                   {"action": obs[:8], "source": "live", "clamped": False, "fallback": False, "serial": 1,
                    "champion": "c"})
    writer.close()
    files = list_recordings(tmp_path)
    assert len(files) >= 2 and all(f.complete for f in files)
    assert sum(f.bytes for f in files) <= limits["max_total_bytes"]
    assert all(f.bytes < limits["max_file_bytes"] * 1.5 for f in files)
    kept = [m["request_id"] for _, _, m in read_messages([f.path for f in files])]
    assert kept == list(range(kept[0], 4000))  # the newest kept, none lost in between, in order


def test_limits_are_checked():
    with pytest.raises(ConfigError, match="--record-file-mb"):
        check_limits(0, 10)
    with pytest.raises(ConfigError, match="--record-total-mb"):
        check_limits(10, 5)


def test_record_list_and_export_csv(tmp_path):
    state = tmp_path / "state"
    writer = RecordingWriter(state / RECORDINGS, "cartpole", "test")
    for i in range(5):
        writer.add("act", 2_000_000_000 + i * 1_000_000, {"client": "r", "request_id": i,
                                                         "observation": [i, 0.5, 0.0, 1.0]},
                   {"action": [1.0], "source": "live", "clamped": False, "fallback": False, "serial": 1,
                    "champion": "c"})
    writer.close()
    cmd = [sys.executable, "-m", "srghn.cli", "record", "list", "--json", "--state-dir", str(state)]
    listed = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    files = json.loads(listed.stdout)
    assert len(files) == 1 and files[0]["topics"] == {"/robots/r/act": 5}
    out = tmp_path / "acts.csv"
    cmd = [sys.executable, "-m", "srghn.cli", "record", "export", "--state-dir", str(state), "--kind", "act",
           "--output", str(out), "--start", "2.001", "--end", "2.003"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert lines[0].startswith("time,client,request_id,observation_0")
    assert [row.split(",")[2] for row in lines[1:]] == ["1", "2", "3"]


def test_robot_sim_records_what_the_robot_saw(tmp_path, cartpole_model):
    state = tmp_path / "state"
    live_champion(state, "champ-a", cartpole_model)
    with running_server(state) as config:
        done = subprocess.run([sys.executable, "-m", "srghn.cli", "robot-sim", "--control", config.control,
                               "--steps", "60", "--rate", "0", "--record", "--quiet", "--json",
                               "--state-dir", str(state)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    records = _read_all(state / RECORDINGS)
    acts = [m for t, _, m, _ in records if t == "/robots/sim-robot/act"]
    steps = [m for t, _, m, _ in records if t == "/robots/sim-robot/step"]
    assert len(acts) == len(steps) == summary["steps"] == 60
    assert [a["request_id"] for a in acts] == [s["request_id"] for s in steps] == list(range(1, 61))
    assert {s["champion"] for s in steps} == {"champ-a"} and all(a["round_trip_us"] > 0 for a in acts)
    assert sum(s["done"] for s in steps) == summary["episodes"]


def test_a_file_cut_short_still_reads(tmp_path):
    """A recorder killed mid-file leaves ``.mcap.part``: its finished chunks are listed and exported."""
    writer = RecordingWriter(tmp_path, "cartpole", "test", **check_limits(1, 10))
    for i in range(3000):
        writer.add("step", 3_000_000_000 + i, {"client": "r", "request_id": i},
                   {"reward": 1.0, "terminated": False, "truncated": False, "next_observation": [0.1 * i] * 4})
    writer.fh.flush()  # the process dies here: no footer, no rename
    (part,) = list_recordings(tmp_path)
    assert not part.complete and part.path.name.endswith(".mcap.part")
    got = [m["request_id"] for _, _, m in read_messages([part.path])]
    assert 0 < len(got) <= 3000 and got == list(range(len(got)))
