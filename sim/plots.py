"""PNG plots of a run: fitness, diversity and mutation rate over generations, regime switches marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from srghn.sim.records import GenerationRecord, regime_switches


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, imported on first use (it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, title: str) -> Path:
    """Title, lay out, write the PNG and free the figure."""
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return Path(path)


def _mark_switches(axes, records: list[GenerationRecord]) -> None:
    """Grid on every panel, a dashed line at every regime switch, the new regime named on the first panel."""
    for ax in axes:
        ax.grid(alpha=0.3)
        for generation, regime in regime_switches(records):
            ax.axvline(generation, color="black", linestyle="--", linewidth=1)
            if ax is axes[0]:
                ax.annotate(f"→ {regime}", (generation, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(3, -12), textcoords="offset points", fontsize=8)


def plot_run(records: list[GenerationRecord], path: Path, title: str = "", target: float | None = None) -> Path:
    """Write a three-panel PNG of ``records`` to ``path``."""
    plt = _pyplot()
    gens = [r.generation for r in records]
    fig, (ax_fit, ax_div, ax_rate) = plt.subplots(3, 1, figsize=(9, 8), sharex=True,
                                                  gridspec_kw={"height_ratios": [2, 1, 1]})
    ax_fit.plot(gens, [r.best for r in records], label="best", color="tab:blue")
    ax_fit.plot(gens, [r.mean for r in records], label="mean", color="tab:orange")
    ax_fit.plot(gens, [r.median for r in records], label="median", color="tab:green", alpha=0.6)
    if target is not None:
        ax_fit.axhline(target, color="grey", linestyle=":", label=f"target {target:g}")
    ax_fit.set_ylabel("fitness")
    ax_fit.legend(loc="lower right", fontsize=8)
    ax_div.plot(gens, [r.diversity for r in records], color="tab:purple")
    ax_div.set_ylabel("diversity\n(mean param std)")
    rated = [r for r in records if r.mutation_rate_mean is not None]
    if rated:
        mean = [r.mutation_rate_mean for r in rated]
        std = [r.mutation_rate_std for r in rated]
        ax_rate.plot([r.generation for r in rated], mean, color="tab:red")
        ax_rate.fill_between([r.generation for r in rated], [m - s for m, s in zip(mean, std, strict=True)],
                             [m + s for m, s in zip(mean, std, strict=True)], color="tab:red", alpha=0.2)
        ax_rate.set_ylim(0, 1)
    ax_rate.set_ylabel("mutation rate")
    ax_rate.set_xlabel("generation")
    _mark_switches((ax_fit, ax_div, ax_rate), records)
    return _save(fig, path, title)


def plot_bench(runs: dict[str, dict[int, list[GenerationRecord]]], path: Path, title: str = "",
               target: float | None = None, returns: bool = False) -> Path:
    """Best fitness, (with ``returns``, for a profile whose fitness is offset from the return) the environment's
    own return of the fittest, diversity and (where a method has one) the mutation rate per method: median over
    seeds with a min-max band, switches marked."""
    plt = _pyplot()

    def rated(by_seed: dict[int, list[GenerationRecord]]) -> bool:
        return all(r.mutation_rate_mean is not None for records in by_seed.values() for r in records)

    fields = ["best", *(["best_return"] if returns else []), "diversity"]
    if any(rated(by_seed) for by_seed in runs.values()):
        fields.append("mutation_rate_mean")
    heights = [2 if f == "best" else 1 for f in fields]
    fig, axes = plt.subplots(len(fields), 1, figsize=(10, 2 + 2 * sum(heights)), sharex=True,
                             gridspec_kw={"height_ratios": heights})
    panels = dict(zip(fields, axes, strict=True))
    colours = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
    for i, (method, by_seed) in enumerate(runs.items()):
        length = min(len(records) for records in by_seed.values())
        gens = [r.generation for r in next(iter(by_seed.values()))[:length]]
        for field, ax in panels.items():
            if field == "mutation_rate_mean" and not rated(by_seed):
                continue
            values = np.array([[getattr(r, field) for r in records[:length]] for records in by_seed.values()])
            ax.plot(gens, np.median(values, axis=0), color=colours(i), label=method)
            if len(runs) <= 6:  # with more methods the bands hide the lines
                ax.fill_between(gens, values.min(axis=0), values.max(axis=0), color=colours(i), alpha=0.12)
    if target is not None:
        panels["best"].axhline(target, color="grey", linestyle=":", label=f"target {target:g}")
    _mark_switches(tuple(axes), next(iter(next(iter(runs.values())).values())))
    panels["best"].set_ylabel("best fitness (median over seeds)" + (", min–max" if len(runs) <= 6 else ""))
    if returns:
        panels["best_return"].set_ylabel("environment return\nof the fittest")
    panels["diversity"].set_ylabel("diversity (log)")
    panels["diversity"].set_yscale("log")
    if "mutation_rate_mean" in panels:
        # SR-GHN's heritable rates lie in [0, 1]; the baselines' step sizes (sigma) have their own scale
        panels["mutation_rate_mean"].set_ylabel("mutation rate / step\nsize (median, log)")
        panels["mutation_rate_mean"].set_yscale("log")
    axes[-1].set_xlabel("generation")
    panels["best"].legend(loc="lower right", fontsize=8, ncol=2)
    return _save(fig, path, title)


def legend_name(champion: str, limit: int = 40) -> str:
    """A champion's name short enough for a legend; both ends kept, since a compensated champion's name is its
    source's followed by the regime it serves."""
    if len(champion) <= limit:
        return champion
    head = (limit - 1) // 2
    return f"{champion[:head]}…{champion[-(limit - 1 - head):]}"


FEW_EPISODES = 30
"""Below this many episodes, ``robot.png`` also draws the robot's reward per step (a CartPole, whose reward is 1 a
step, ends hundreds of episodes a minute; an Ant at its real-time rate a few)."""


def plot_robot(returns: list[float], ended_at: list[int], served_by: list[str], path: Path, title: str = "",
               fault_at: int | None = None, distances: list[float] | None = None,
               rewards: dict | None = None) -> Path:
    """Episode returns of a (simulated) robot over its steps, coloured by the champion that served each episode's
    end, the fault marked: what the robot got out of each promotion. With ``rewards`` (the robot's mean reward per
    step over windows of steps, ``RobotRun.summary()['rewards']``), a first panel draws that as a curve, so that a
    run of few, long episodes (the Ant at 20 steps a second ends about one a minute) shows more than a few dots.
    With ``distances`` (robots that walk), a last panel shows how far forward each episode got."""
    plt = _pyplot()
    windows = rewards if rewards and rewards.get("ended_at") and len(returns) < FEW_EPISODES else None
    panels = ([("reward per step", None)] if windows else []) + [("episode return", returns)] + (
        [("forward distance (m)", distances)] if distances else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)), sharex=True, squeeze=False)
    champions = list(dict.fromkeys([*served_by, *(windows["served_by"] if windows else [])]))
    colour = {c: "grey" if c == "safe" else plt.cm.tab10(i % 10) for i, c in enumerate(champions)}
    for ax, (label, values) in zip(axes[:, 0], panels, strict=True):
        if values is None:  # the reward curve: one line segment per run of windows served by the same champion
            xs, ys, who = windows["ended_at"], windows["mean_reward"], windows["served_by"]
            start = 0
            for end in range(1, len(xs) + 1):
                if end == len(xs) or who[end] != who[start]:
                    ax.plot(xs[max(0, start - 1):end], ys[max(0, start - 1):end], color=colour[who[start]],
                            linewidth=1.2, label=legend_name(who[start]) if who[start] not in who[:start] else None)
                    start = end
            label = f"{label} ({windows['window']}-step mean)"
        else:
            for champion in dict.fromkeys(served_by):
                xs = [x for x, c in zip(ended_at, served_by, strict=True) if c == champion]
                ys = [y for y, c in zip(values, served_by, strict=True) if c == champion]
                ax.scatter(xs, ys, s=12, color=colour[champion],
                           label=legend_name(champion) if not windows else None)
        if fault_at is not None:
            ax.axvline(fault_at, color="red", linestyle="--", linewidth=1)
            ax.annotate("fault", (fault_at, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12),
                        textcoords="offset points", fontsize=8, color="red")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, title="served by", title_fontsize=8, loc="best")
    axes[-1, 0].set_xlabel("robot step" + ("" if windows else " (episode end)"))
    return _save(fig, path, title)


def plot_curves(runs: dict[str, dict[int, list[GenerationRecord]]], path: Path, title: str = "",
                field: str = "best_return", points: int = 40) -> Path:
    """Learning curves against env steps: per method, the interquartile mean over seeds of ``field`` (default: the
    environment's return of the fittest), each seed's curve read at common env-step marks (its last record at or
    before the mark), with a 95 % bootstrap band; marks past a seed's end are left out."""
    from srghn.sim.stats import iqm_interval

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colours = plt.get_cmap("tab10")
    end = min(records[-1].total_env_steps for by_seed in runs.values() for records in by_seed.values())
    marks = np.linspace(end / points, end, points)
    for i, (method, by_seed) in enumerate(runs.items()):
        curves = []
        for records in by_seed.values():
            steps = np.array([r.total_env_steps for r in records])
            values = np.array([getattr(r, field) for r in records], dtype=np.float64)
            curves.append(values[np.searchsorted(steps, marks, side="right") - 1])
        curves = np.array(curves)
        stats = [iqm_interval(curves[:, j], resamples=1000) for j in range(len(marks))]
        ax.plot(marks / 1e6, [s["iqm"] for s in stats], color=colours(i % 10),
                label=f"{method} ({len(by_seed)} seed{'s' if len(by_seed) != 1 else ''})")
        ax.fill_between(marks / 1e6, [s["ci"][0] for s in stats], [s["ci"][1] for s in stats],
                        color=colours(i % 10), alpha=0.15)
    ax.set_xlabel("environment steps (millions)")
    ax.set_ylabel(("environment return of the fittest" if field == "best_return" else field)
                  + "\n(IQM over seeds, 95 % CI)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path, title)
