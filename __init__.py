"""srghn: an adaptive-controller runtime built on Self-Referential Graph HyperNetworks (arXiv 2512.16406).

Import names: ``srghn.controller`` (networks and evolution strategies), ``srghn.sim`` (environments, profiles,
evaluators, the evolution loop), ``srghn.safety``, ``srghn.deploy`` and ``srghn.cli``. Each floor imports only
from the floors below it. This module holds only the version and the exception root every floor shares.
"""

__version__ = "0.1.0"


class SrghnError(Exception):
    """Root of every error srghn raises on purpose; the CLI prints these without a traceback."""


class ConfigError(SrghnError, ValueError):
    """A profile, config file, flag or argument has a bad value; the message names the field."""


class UnknownRegime(ConfigError):
    """A regime name that the environment or profile does not define."""


class CheckpointError(SrghnError):
    """A population or policy file is missing, corrupted or of an incompatible format."""


__all__ = ["CheckpointError", "ConfigError", "SrghnError", "UnknownRegime", "__version__"]
