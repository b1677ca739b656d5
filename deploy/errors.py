"""Errors of the release side: export, the champion registry, and promotion.

All derive from :class:`srghn.SrghnError` so the CLI prints them without a traceback. Errors a user causes with
bad input (an unknown id, a flag that does not apply) also derive from :class:`srghn.ConfigError` (exit code 2).
"""

from __future__ import annotations

from srghn import ConfigError, SrghnError


class ExportError(SrghnError):
    """A policy could not be exported to ONNX, or the exported model failed its parity check."""


class RegistryError(SrghnError):
    """The champion registry is missing, unreadable, of another schema version, or inconsistent."""


class StateDirMissing(RegistryError, ConfigError):
    """The state directory (or the registry inside it) does not exist; read commands never create it."""


class UnknownChampion(RegistryError, ConfigError):
    """No champion with the given id (or no live champion for the robot)."""


class ArtifactCorrupted(RegistryError):
    """A stored artifact is missing or its bytes no longer hash to the sha256 the registry recorded."""


class PromotionRefused(RegistryError):
    """A promotion or rollback was refused: no passing gate report, a failed hard gate, a stale report, ..."""


__all__ = ["ArtifactCorrupted", "ExportError", "PromotionRefused", "RegistryError", "StateDirMissing",
           "UnknownChampion"]
