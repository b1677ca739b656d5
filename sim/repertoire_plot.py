"""The repertoire as a picture: every cell's elite's standard return, on one 2-D heat map (matplotlib, Agg).

A grid of ``d`` descriptor dimensions is laid out as nested grids, as Intelligent Trial and Error drew its gait
map: the first half of the dimensions index the outer blocks, the rest the cells inside a block (4 feet: the
outer 5 x 5 blocks are feet 1 and 2, the inner 5 x 5 cells feet 3 and 4). Empty cells are left white.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from srghn.sim.repertoire import Repertoire


def heatmap_grid(repertoire: Repertoire) -> tuple[np.ndarray, list[str], list[str]]:
    """The 2-D array of returns (NaN where empty) and the labels of the dimensions along rows and columns."""
    config = repertoire.config
    d, bins = config.descriptor.size, config.bins
    grid = np.full((bins,) * d, np.nan)
    for row, cell in enumerate(repertoire.cells):
        grid[np.unravel_index(int(cell), grid.shape)] = repertoire.returns[row]
    rows, cols = list(range(0, d, 2)), list(range(1, d, 2))  # alternate: outer (rows, cols), then inner
    image = grid.transpose(rows + cols).reshape(bins ** len(rows), bins ** max(len(cols), 1) if cols else 1)
    labels = config.descriptor.labels
    return image, [labels[i] for i in rows], [labels[i] for i in cols]


def plot_heatmap(repertoire: Repertoire, path: Path) -> None:
    """Write the heat map PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, row_dims, col_dims = heatmap_grid(repertoire)
    config = repertoire.config
    fig, ax = plt.subplots(figsize=(7, 6))
    shown = ax.imshow(np.ma.masked_invalid(image), cmap="viridis", origin="lower", interpolation="nearest")
    fig.colorbar(shown, ax=ax, label="standard return (nominal)")
    bins = config.bins
    for k in range(1, len(row_dims)):  # block borders between the outer cells
        for x in range(0, image.shape[0] + 1, bins ** (len(row_dims) - k)):
            ax.axhline(x - 0.5, color="0.7", linewidth=1.0 if k == 1 else 0.3)
    for k in range(1, len(col_dims)):
        for x in range(0, image.shape[1] + 1, bins ** (len(col_dims) - k)):
            ax.axvline(x - 0.5, color="0.7", linewidth=1.0 if k == 1 else 0.3)
    ax.set_ylabel("rows: " + ", then ".join(row_dims))
    ax.set_xlabel("columns: " + ", then ".join(col_dims))
    steps = repertoire.meta.get("env_steps") or 0
    ax.set_title(f"{repertoire.meta.get('robot', '')} repertoire: {len(repertoire)} of {config.cells} cells, "
                 f"best {repertoire.returns.max():.0f}, {steps / 1e6:.3g} M env steps", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["heatmap_grid", "plot_heatmap"]
