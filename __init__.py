"""srghn: an adaptive-controller runtime built on Self-Referential Graph HyperNetworks (arXiv 2512.16406).

Import names: ``srghn.controller`` (networks and evolution strategies), ``srghn.sim`` (environments, profiles,
evaluators, the evolution loop), ``srghn.safety``, ``srghn.deploy`` and ``srghn.cli``. Each floor imports only
from the floors below it. This module holds only the version and the most used errors of ``srghn.errors`` (the
one module every error lives in).
"""

from srghn.errors import CheckpointError, ConfigError, SrghnError, UnknownRegime

__version__ = "0.1.0"

__all__ = ["CheckpointError", "ConfigError", "SrghnError", "UnknownRegime", "__version__"]
