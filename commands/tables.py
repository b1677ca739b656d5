"""Tables that never cut an identifier (:class:`Grid`), and the cells several commands share."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

STATUS_STYLE = {"live": "bold green", "passed": "green", "failed": "red", "retired": "dim", "candidate": "yellow"}


class Grid:
    """A table that never cuts an identifier: its ``ids`` columns (champion ids, file names, keys) never wrap, and
    the other columns give way -- they wrap at spaces, then fold; where even that does not fit the terminal, the
    borders go (no box, one space between columns), then the ``optional`` columns, in that order, each named under
    the table (``--json`` always has every field). Rendered for the width of the console it is printed on."""

    def __init__(self, *columns: str, ids: tuple[int, ...] = (0,), optional: tuple[int, ...] = (),
                 whole: tuple[int, ...] = (), markup: bool = False, **kwargs) -> None:
        """``whole``: columns that wrap at spaces only, never inside a word (text that quotes ids); ``markup``:
        string cells hold rich markup (as ``Table.add_row`` reads them), else they are plain text."""
        self.columns, self.ids, self.optional, self.kwargs = list(columns), set(ids), list(optional), kwargs
        self.whole, self.markup = set(whole), markup
        self.rows: list[list[Text]] = []

    def add_row(self, *cells: object) -> None:
        self.rows.append([c if isinstance(c, Text) else Text.from_markup(c) if self.markup and isinstance(c, str)
                          else Text(str(c)) for c in cells])

    def _minimum(self, i: int) -> int:
        cells = [self.columns[i] if self.kwargs.get("show_header", True) else "", *(r[i].plain for r in self.rows)]
        if i in self.ids:
            return max(len(line) for cell in cells for line in (cell.splitlines() or [""]))
        longest = max((len(word) for cell in cells for word in cell.split()), default=1)
        return longest if i in self.whole else min(longest, GRID_FOLD_AT)

    def _natural(self, i: int) -> int:
        cells = [self.columns[i] if self.kwargs.get("show_header", True) else "", *(r[i].plain for r in self.rows)]
        return max(len(line) for cell in cells for line in (cell.splitlines() or [""]))

    def layout(self, width: int) -> tuple[list[int], dict, list[int]]:
        """(kept columns, table options, their widths) for ``width`` columns of terminal."""
        kept = list(range(len(self.columns)))
        optional = [i for i in self.optional if i < len(self.columns)]
        boxed = {}
        plain = {"box": None, "padding": (0, 1), "pad_edge": False, "show_edge": False}
        while True:
            for style, extra in ((boxed, 3 * len(kept) + 1), (plain, 2 * len(kept) - 2)):
                minimum = [self._minimum(i) for i in kept]
                room = width - extra
                if sum(minimum) <= room or (not optional and style is plain):
                    natural = [max(self._natural(i), m) for i, m in zip(kept, minimum, strict=True)]
                    for j, i in enumerate(kept):  # a word longer than the room left folds after all (not an id),
                        if sum(minimum) <= room or i in self.ids or minimum[j] <= GRID_FOLD_AT:  # the others whole
                            continue
                        others = sum(n for k, n in enumerate(natural) if k != j)
                        minimum[j] = max(GRID_FOLD_AT, min(minimum[j], room - others))
                        excess = sum(minimum) - room
                        if excess > 0:
                            minimum[j] -= min(excess, minimum[j] - GRID_FOLD_AT)
                    widths = list(minimum)
                    spare = room - sum(widths)
                    # the columns nearest their natural width first: short labels whole, long text wraps
                    for j in sorted(range(len(widths)), key=lambda j: natural[j] - widths[j]):
                        grant = max(0, min(spare, natural[j] - widths[j]))
                        widths[j] += grant
                        spare -= grant
                    return kept, style, widths
            kept.remove(optional.pop(0))

    def __rich_console__(self, console, options):
        kept, style, widths = self.layout(options.max_width)
        left_out = [self.columns[i] for i in range(len(self.columns)) if i not in kept]
        table = Table(**{**self.kwargs, **style})
        for i, w in zip(kept, widths, strict=True):
            table.add_column(self.columns[i], width=w, no_wrap=i in self.ids, overflow="fold")
        for row in self.rows:
            table.add_row(*(row[i] for i in kept))
        yield table
        if left_out:
            yield Text(f"(left out at {options.max_width} columns: {', '.join(left_out)}; --json has every field)",
                       style="dim")


GRID_FOLD_AT = 12
"""A column that is not an identifier may be folded down to this many characters."""


def grid(*columns: str, ids: tuple[int, ...] = (0,), optional: tuple[int, ...] = (), whole: tuple[int, ...] = (),
           **kwargs) -> Grid:
    """A :class:`Grid`: identifiers stay whole at any terminal width (copy them from it), other columns give way."""
    return Grid(*columns, ids=ids, optional=optional, whole=whole, **kwargs)


def facts(title: str) -> Grid:
    """A two-column table of facts (a summary, a status): labels and values wrap at spaces, never inside a word,
    so the ids they quote stay whole at 80 columns. Cells hold rich markup, as ``Table.add_row`` reads them."""
    return Grid("field", "value", ids=(), whole=(0, 1), markup=True, show_header=False, title=title)


def row(table: Grid, *cells: object) -> None:
    """Add a row of plain text (no rich markup: gate names like ``floor[nominal]`` hold brackets)."""
    table.add_row(*cells)


def status_text(status: str, suffix: str = "") -> Text:
    return Text(status + suffix, style=STATUS_STYLE.get(status, ""))


def gates_cell(report: dict | None) -> str:
    """The verdict of a gate report (as JSON)."""
    if report is None:
        return "-"
    if report["passed"]:
        return "pass"
    return "FAIL hard" if any(g["hard"] and not g["passed"] for g in report["gates"]) else "fail soft"

