"""Baseline strategies named by the SR-GHN paper, all evolving the flat policy vector behind ask/tell.

OpenES (:mod:`.openes`), CMA-ES from pycma (:mod:`.cmaes`), a GA with elitism and Gaussian mutation
(:mod:`.ga`), GESMR (:mod:`.gesmr`) and SAMR (:mod:`.samr`). Each takes ``popsize`` = evaluations per
generation, so a comparison gives every method the same number of episodes per generation.
"""

from srghn.controller.baselines.cmaes import CMAES, CMAESConfig
from srghn.controller.baselines.ga import GA, GAConfig
from srghn.controller.baselines.gesmr import GESMR, GESMRConfig
from srghn.controller.baselines.openes import OpenES, OpenESConfig
from srghn.controller.baselines.samr import SAMR, SAMRConfig

BASELINES = {"openes": (OpenES, OpenESConfig), "cmaes": (CMAES, CMAESConfig), "ga": (GA, GAConfig),
             "gesmr": (GESMR, GESMRConfig), "samr": (SAMR, SAMRConfig)}
"""Name -> (strategy class, its config class); every class is built as ``cls(policy_spec, config, seed, init)``
with ``init`` the initial policies ``(n, P)`` or ``None``."""

__all__ = ["BASELINES", "CMAES", "GA", "GESMR", "SAMR", "CMAESConfig", "GAConfig", "GESMRConfig", "OpenES",
           "OpenESConfig", "SAMRConfig"]
