"""The settings of the SR-GHN and of its evolution: frozen dataclasses that import no torch, so that robot
profiles (which hold them) load in a fraction of a second in processes that never evolve anything (the simulated
robot, the server's helpers, the CLI). :mod:`srghn.controller.ghn` and :mod:`srghn.controller.evolution` use them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from srghn import ConfigError

RATE_REDUCTIONS = ("max", "mean", "min")
"""How the M rate outputs of a node can become its one rate (:data:`srghn.controller.ghn.REDUCE` implements them)."""
HEADS = ("learned", "random_basis")
MUTATIONS = ("self", "gaussian")
SELECTIONS = ("plus", "comma")


@dataclass(frozen=True)
class GHNConfig:
    """Architecture and variation settings of an SR-GHN. Defaults are the paper's."""

    hidden: int = 32
    """Node state width of the GNN (and of the embeddings)."""
    gnn_steps: int = 1
    """Message-passing steps per graph."""
    trunk: int = 64
    """Width of the stochastic head's trunk (two bias-free ReLU layers)."""
    basis_size: int = 32
    """k: coefficients per node, combined with a frozen orthogonal basis into that node's update."""
    sigma_max: float = 2.0
    """Upper clip of the learned coefficient standard deviation."""
    rate_outputs: int = 5
    """M: sigmoid outputs per node whose reduction is the node's heritable mutation rate."""
    rate_reduce: str = "max"
    """How the M outputs become one rate: ``max`` (paper), ``mean`` or ``min``."""
    rate_head_reduce: str | None = None
    """How the M outputs become the rate of the rate layer's own tensors (``stoch.rate.weight`` and
    ``stoch.rate.bias``): ``None`` = ``rate_reduce`` like every node (paper); ``max``, ``mean`` or ``min``
    otherwise. With ``rate_reduce = "min"`` and this ``"max"`` the rate that scales the rest of the network can
    fall under selection while the rate layer itself keeps mutating, so the rate can rise again after a switch."""
    update_clip: float = 1.0
    """u: elementwise clip of the raw update before it is scaled by the rate (paper: 1, Ant 0.1)."""
    update_clip_decay: float = 1.0
    """Factor on the clip after every generation (1: constant, the paper). The heritable rate does not shrink the
    steps as a gait improves (docs/results.md); a decaying clip does, from outside, as a decaying step does for
    OpenES."""
    update_clip_min: float = 0.0
    """Floor of the decayed clip."""
    noise_std: float = 1e-3
    """Standard deviation of the Gaussian noise floor added to every parameter of a child."""
    param_bound: float = 20.0
    """All parameters are clamped to [-param_bound, param_bound] after every reproduction."""
    head_hidden: int = 32
    """Hidden width of the deterministic (policy-writing) head."""
    head: str = "learned"
    """``learned``: the head's output layer is evolved. ``random_basis``: it outputs ``head_basis_size``
    coefficients of a frozen random basis instead (the paper's open question; far fewer parameters)."""
    head_basis_size: int = 64
    """Coefficients per policy tensor when ``head == "random_basis"``."""
    child_rates: tuple[str, ...] | None = None
    """``None``: every child is mutated with the rate ``rate_reduce`` gives (paper). Otherwise a reduction per
    child: child ``j`` of a parent is mutated at the rates ``child_rates[j % len]`` makes of the M outputs, e.g.
    ``("min", "max")``: with K = 2 one child fine-tunes at the smallest and one explores at the largest."""
    rate_first: bool = False
    """``False``: a child is mutated at its parent's rates (paper). ``True``: the child's rate layer mutates
    first, at the parent's rates, and the rest of the child at the rates of the child's own (mutated) rate layer,
    so a child's own fitness answers for its own rate (mutate the step size first, then use it, as in the
    self-adaptation of evolution strategies)."""
    fixed_rate: float | None = None
    """Ablation: every node mutates at this constant rate instead of its heritable one."""
    mutation: str = "self"
    """``self``: children get the updates their parent's stochastic head draws (the paper). ``gaussian``
    (ablation, no self-reference): children get N(0, gaussian_std^2) noise on every parameter instead."""
    gaussian_std: float = 0.03
    """Noise of the ``gaussian`` ablation (about the size of a self-generated update at initialisation)."""

    def __post_init__(self) -> None:
        positive = ("hidden", "gnn_steps", "trunk", "basis_size", "rate_outputs", "head_hidden", "head_basis_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"ghn.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("sigma_max", "update_clip", "param_bound"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"ghn.{name} must be > 0, got {getattr(self, name)}")
        if not (0 < self.update_clip_decay <= 1 and 0 <= self.update_clip_min <= self.update_clip):
            raise ConfigError("ghn needs 0 < update_clip_decay <= 1 and 0 <= update_clip_min <= update_clip, got "
                              f"{self.update_clip_decay} and {self.update_clip_min}")
        if not self.noise_std >= 0:
            raise ConfigError(f"ghn.noise_std must be >= 0, got {self.noise_std}")
        if self.rate_reduce not in RATE_REDUCTIONS:
            raise ConfigError(f"ghn.rate_reduce must be one of {RATE_REDUCTIONS}, got {self.rate_reduce!r}")
        if self.rate_head_reduce is not None and self.rate_head_reduce not in RATE_REDUCTIONS:
            raise ConfigError(f"ghn.rate_head_reduce must be one of {RATE_REDUCTIONS} or unset, "
                              f"got {self.rate_head_reduce!r}")
        if self.head not in HEADS:
            raise ConfigError(f"ghn.head must be one of {HEADS}, got {self.head!r}")
        if self.mutation not in MUTATIONS:
            raise ConfigError(f"ghn.mutation must be one of {MUTATIONS}, got {self.mutation!r}")
        if self.child_rates is not None:
            if isinstance(self.child_rates, list):
                object.__setattr__(self, "child_rates", tuple(self.child_rates))
            if (not isinstance(self.child_rates, tuple) or not self.child_rates
                    or any(r not in RATE_REDUCTIONS for r in self.child_rates)):
                raise ConfigError(f"ghn.child_rates must be a non-empty list of {RATE_REDUCTIONS} or unset, "
                                  f"got {self.child_rates!r}")
        if self.rate_first and self.child_rates is not None:
            raise ConfigError("ghn.rate_first and ghn.child_rates cannot be combined")
        if self.fixed_rate is not None and not 0 <= self.fixed_rate <= 1:
            raise ConfigError(f"ghn.fixed_rate must be in [0, 1], got {self.fixed_rate}")
        if not self.gaussian_std > 0:
            raise ConfigError(f"ghn.gaussian_std must be > 0, got {self.gaussian_std}")

    def clip_at(self, generation: int) -> float:
        """The update clip of the children made in generation ``generation`` (0-based)."""
        return max(self.update_clip * self.update_clip_decay ** generation, self.update_clip_min)

    def to_dict(self) -> dict:
        """JSON-ready copy; the clip schedule only when it is not constant, so that the identity of runs started
        before it existed stays what it was and they keep resuming."""
        data = asdict(self)
        if self.child_rates is not None:
            data["child_rates"] = list(self.child_rates)
        if self.update_clip_decay == 1.0 and self.update_clip_min == 0.0:
            del data["update_clip_decay"], data["update_clip_min"]
        return data


@dataclass(frozen=True)
class EvolutionConfig:
    """Population settings of the SR-GHN strategy."""

    population: int = 10
    """N: members kept after selection."""
    children: int = 2
    """K: children each member makes per generation."""
    child_factor: float = 0.0
    """Weight of a parent's children's mean fitness in its selection score (0 = parent's own fitness only)."""
    reevaluate: bool = True
    """Evaluate survivors again every generation (robust fitness); if off, only after the world changed."""
    random_selection: bool = False
    """Control experiment: survivors are drawn at random, fitness ignored (does the mutation rate drift alone?)."""
    ties_to_children: bool = False
    """On equal scores prefer children over parents. At a fitness cap (CartPole's 500) parents winning ties
    freezes a converged population, and with it the heritable rate; children winning ties lets the lineages whose
    offspring keep the cap (the low-rate ones) take over."""
    selection: str = "plus"
    """``plus``: (mu + lambda), the best N of parents and children survive (paper). ``comma``: (mu, lambda), the
    best N children survive and parents are not evaluated again. Under ``plus`` a converged population at a
    fitness cap is immortal, so nothing selects its mutation rate any more; under ``comma`` every generation
    selects the children whose parents' rates kept their fitness (the classical setting of self-adaptive
    mutation in evolution strategies)."""

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise ConfigError(f"evolution.selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.population < 1:
            raise ConfigError(f"evolution.population must be >= 1, got {self.population}")
        if self.children < 1:
            raise ConfigError(f"evolution.children must be >= 1, got {self.children}")
        if not 0.0 <= self.child_factor <= 1.0:
            raise ConfigError(f"evolution.child_factor must be in [0, 1], got {self.child_factor}")

    def to_dict(self) -> dict:
        """JSON-ready copy."""
        return asdict(self)
