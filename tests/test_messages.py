"""Typed internal messages (daemon <-> server) and the escaping of log lines."""

from __future__ import annotations

import logging

import pytest

from srghn.deploy.process.logs import EscapingFormatter
from srghn.deploy.wire import messages as m

EVERY = [m.Hello(12, "cartpole"), m.Welcome(3, "cartpole", None, 0, {"control": "ipc:///x"}),
         m.Welcome(3, "ant", "ant-1", 4, {}, refused="serves cartpole"), m.Heartbeat(12),
         m.Publish("gate", {"passed": True}), m.Evolution({"generation": 3}), m.Sync(),
         m.Promote(1, "cp-1", "auto"), m.Promoted(1, True, "cp-1"), m.Promoted(2, False, error="refused"),
         m.Command("regime", "operator:alice", "inverted"), m.Transitions("arm", [[0.0]], [[1.0]], [[0.5]]),
         m.Transitions("arm", [[0.0]], [[1.0]], [[0.5]], steps=9), m.Assign("arm", "inverted", "evidence"),
         m.Adopt(3, "cp-1", "nominal", "robots back in nominal"), m.ServeSafe("invert_all", "ant-1", "65 < 98"),
         m.Returns("lander", [-67.5, 12.0], "ll-1"), m.Returns("lander", [3.0]),
         m.Detach("SIGTERM"), m.Stop("SIGINT"), m.Stopped({"requests": {}})]


def test_every_op_has_its_message_and_round_trips() -> None:
    assert {message.op for message in EVERY} == set(m.Op)
    for message in EVERY:
        assert m.decode(m.encode(message)) == message


@pytest.mark.parametrize(("frame", "complaint"), [
    (b"\xff", "not JSON"), (b"[1]", "not a JSON object"), (b'{"op": "reboot"}', "unknown op"),
    (b'{"pid": 1}', "unknown op"), (b'{"op": "hello", "pid": 1}', "'robot' is missing"),
    (b'{"op": "hello", "pid": "1", "robot": "c"}', "'pid' must be int"),
    (b'{"op": "hello", "pid": true, "robot": "c"}', "'pid' must be int"),
    (b'{"op": "promoted", "token": 1, "ok": 1}', "'ok' must be bool"),
    (b'{"op": "sync", "extra": 1}', "unknown field"),
    (b'{"op": "command", "cmd": "pause", "actor": "a", "regime": 3}', "'regime' must be str | None"),
    (b'{"op": "command", "cmd": "reboot", "actor": "a"}', "'cmd' must be one of pause, resume, regime"),
    (b'{"op": "command", "cmd": 1, "actor": "a"}', "'cmd' must be Cmd"),
])
def test_malformed_messages_are_refused_with_the_reason(frame: bytes, complaint: str) -> None:
    with pytest.raises(m.MessageError, match=complaint):
        m.decode(frame)


def test_a_command_is_its_typed_member_and_the_wire_carries_its_name() -> None:
    command = m.decode(b'{"op":"command","cmd":"pause","actor":"a","regime":null}')
    assert command.cmd is m.Cmd.PAUSE and command.cmd.pauses is True
    assert m.Cmd.RESUME.pauses is False and m.Cmd.REGIME.pauses is None
    assert m.encode(m.Command(m.Cmd.REGIME, "a", "inverted")) == \
        b'{"op":"command","cmd":"regime","actor":"a","regime":"inverted"}'
    assert f"{m.Cmd.REGIME}" == "regime"  # log lines name it as the wire does
    with pytest.raises(ValueError, match="'jump' is not a valid Cmd"):
        m.Command("jump", "a")


def test_client_text_is_escaped_in_log_lines_and_tracebacks_are_kept() -> None:
    formatter = EscapingFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("srghn.test", logging.WARNING, __file__, 1, "unknown command %r from %s",
                               ("x\nINFO forged", "robot\x1b[31m\u00e9"), None)
    line = formatter.format(record)
    assert "\n" not in line and "\x1b" not in line and line.startswith("WARNING unknown command")
    assert "\\x1b[31m\\xe9" in line
    try:
        raise ValueError("boom")
    except ValueError as exc:
        record = logging.LogRecord("srghn.test", logging.ERROR, __file__, 1, "failed", (), (type(exc), exc,
                                                                                              exc.__traceback__))
    assert "Traceback (most recent call last):\n" in formatter.format(record)
