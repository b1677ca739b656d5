"""Every error srghn raises on purpose, in one module, all under :class:`SrghnError` (grouped as in Gymnasium's
``error.py``). Imported by every floor, so it imports nothing of the project; the CLI prints these without a
traceback (exit code 2 for a :class:`ConfigError`, 1 otherwise).
"""

from __future__ import annotations


class SrghnError(Exception):
    """Root of every error srghn raises on purpose; the CLI prints these without a traceback."""


# -- bad input -------------------------------------------------------------------------------------------------------


class ConfigError(SrghnError, ValueError):
    """A profile, config file, flag or argument has a bad value; the message names the field."""


class UnknownRegime(ConfigError):
    """A regime name that the environment or profile does not define."""


class InvalidEvidence(SrghnError, ValueError):
    """What a robot reported cannot serve as evidence about its regime; the message says what is wrong. (A
    ``ValueError`` too, as :class:`ConfigError` is: a bad value given to a function.)"""


class InvalidTransitions(InvalidEvidence):
    """Transitions given for regime identification are of the wrong shape, hold NaN or infinite values, or hold
    discrete actions outside the action space."""


class InvalidReturns(InvalidEvidence):
    """Episode returns given to the return drift detector or a regime trial are not finite, or there are none."""


# -- controller: strategies, population files, policies ----------------------------------------------------------------


class StrategyError(SrghnError):
    """A strategy was driven out of order (``tell`` without ``ask``) or given fitness of the wrong shape."""


class CheckpointError(SrghnError):
    """A population or policy file is missing, corrupted or of an incompatible format."""


class PolicyLoadError(CheckpointError):
    """An ONNX policy could not be loaded, or it does not follow the srghn contract."""


class MalformedAncestry(CheckpointError, ValueError):
    """A saved ancestry (``ancestry.json``: individual -> parent, generation born) is not the document
    :meth:`srghn.sim.ancestry.Ancestry.to_json` writes."""


# -- sim: the shadow evaluators ----------------------------------------------------------------------------------------


class EvaluatorError(SrghnError):
    """An evaluator could not do its job at all (workers cannot start, a backend is missing or misconfigured).

    Faults of single episodes are not errors: they fail the individuals concerned and are reported in the
    evaluation."""


class WorkerProtocolError(EvaluatorError):
    """A message between the evaluator and one of its worker processes is malformed."""


# -- deploy: export, registry, promotion -------------------------------------------------------------------------------


class ExportError(SrghnError):
    """A policy could not be exported to ONNX, or the exported model failed its parity check."""


class RegistryError(SrghnError):
    """The champion registry is missing, unreadable, of another schema version, or inconsistent."""


class StateDirMissing(RegistryError, ConfigError):
    """The state directory (or the registry inside it) does not exist; read commands never create it."""


class RegistryUnreadable(RegistryError, ConfigError):
    """The registry database is not a SQLite registry this srghn can read (corrupted, truncated, another file):
    refused like bad input, before any work or process starts."""


class UnknownChampion(RegistryError, ConfigError):
    """No champion with the given id (or no live champion for the robot)."""


class ArtifactCorrupted(RegistryError):
    """A stored artifact is missing or its bytes no longer hash to the sha256 the registry recorded."""


class PromotionRefused(RegistryError):
    """A promotion or rollback was refused: no passing gate report, a failed hard gate, a stale report, ..."""


# -- deploy: the wire, the server, the daemon --------------------------------------------------------------------------


class ProtocolError(SrghnError):
    """A wire message that breaks the protocol (docs/protocol.md); the server answers it with an ``ERROR`` of
    ``code`` (a :class:`srghn.deploy.wire.protocol.ErrorCode`) and the request's id."""

    def __init__(self, code: int, message: str, request_id: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


class MessageError(SrghnError):
    """A message on the internal socket between daemon and server (:mod:`srghn.deploy.wire.messages`) that is not
    JSON, has an unknown op, or lacks or mistypes a field."""


class ServerUnavailable(SrghnError):
    """No answer from the control server within the timeout (not running, wrong endpoint, or overloaded)."""


class ReplyError(SrghnError):
    """The server answered with an ``ERROR`` message: ``code`` and ``reason`` (the server's text)."""

    def __init__(self, code: int, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.code = code
        self.reason = reason


class InvalidRequest(ReplyError, ConfigError):
    """The server refused a malformed or meaningless request (bad field, unknown champion, ...)."""


class Forbidden(ReplyError):
    """The authenticated key's role does not allow the request (or the key was revoked)."""


class ServerConflict(SrghnError):
    """A control server already runs on the state directory but serves something else (another robot, other
    endpoints) than the daemon was asked for."""


__all__ = [
    "ArtifactCorrupted", "CheckpointError", "ConfigError", "EvaluatorError", "ExportError", "Forbidden",
    "InvalidEvidence", "InvalidRequest", "InvalidReturns", "InvalidTransitions", "MalformedAncestry", "MessageError",
    "PolicyLoadError", "PromotionRefused", "ProtocolError", "RegistryError", "RegistryUnreadable", "ReplyError",
    "ServerConflict", "ServerUnavailable", "SrghnError", "StateDirMissing", "StrategyError", "UnknownChampion",
    "UnknownRegime", "WorkerProtocolError",
]
