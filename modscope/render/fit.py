"""A table that fits the width it is drawn at: names stay whole, numbers are never split, columns drop in order.

rich shrinks every column of a table that is too wide, cutting names to ``layer1…`` and splitting
``1x3x224x224`` mid-number. ``FitTable`` decides the layout itself, at render time, for the width it is given
(a terminal, ``--width``, a notebook's recorded 120 columns):

1. every column starts at its natural width (its widest cell, unwrapped);
2. ``wrap`` columns (shapes, lists) break only after a list's ", " (``1x3x224x224`` and ``241.0 KiB`` stay
   on one line); ``words`` columns (a name and its type) break at spaces, never inside a word; ``prose``
   columns (messages) break at spaces and may fold a very long word;
3. if the columns still do not fit, the droppable column with the lowest ``drop`` rank is left out and the
   layout starts again; a dim line under the table names what was left out and the width that shows all;
4. ``fixed`` columns (names, numbers) are never shrunk; when even the columns that cannot be dropped are too
   wide, the cells lose their padding (``name│float32│float16``), and only if that is not enough does the
   widest fixed cell fold (a 60-column terminal and a 70-character name).

>>> table = FitTable(title="Modules")
>>> table.add_column("module")
>>> table.add_column("params", justify="right", drop=1)
>>> table.add_row("layer1.0.conv1", "4.1K")
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from rich import box as boxes
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

FIXED, WRAP, WORDS, PROSE = "fixed", "wrap", "words", "prose"
_ITEM_END = re.compile(r"(?<=,) ")  # where a list may break: after "item," (the space goes)
_PROSE_MIN = 24  # a message column keeps at least this many cells before other columns go


@dataclass
class _Column:
    header: str
    justify: str
    drop: int | None  # lower ranks are left out first; None: never
    kind: str
    name: str  # how the note under the table calls it


@dataclass
class FitTable:
    """A ``rich.table.Table`` look-alike (``show_edge=False``) laid out for the width it is rendered at."""

    title: str | None = None
    caption: str | None = None
    show_header: bool = True
    box: bool = True
    columns: list[_Column] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)

    def add_column(self, header: str = "", *, justify: str = "left", drop: int | None = None, kind: str = FIXED,
                   name: str | None = None) -> None:
        """``drop``: rank in the leaving-out order (1 goes first; None never); ``kind``: fixed, wrap, words, prose."""
        self.columns.append(_Column(header, justify, drop, kind, name or header.strip() or "(unnamed)"))

    def add_row(self, *cells) -> None:
        self.rows.append(tuple("" if c is None else c for c in cells))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.layout(console, options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        sizes = self._sizes(console)
        keep = [i for i, c in enumerate(self.columns) if c.drop is None] or [0]
        least = sum(sizes[i][1] for i in keep) + self._overhead(len(keep))
        most = sum(s[0] for s in sizes) + self._overhead(len(sizes))
        return Measurement(min(least, most), most).clamp(max_width=options.max_width)

    def layout(self, console: Console, width: int):
        """The rich Table (and a note naming the columns left out) for ``width`` cells."""
        sizes = self._sizes(console)
        shown = list(range(len(self.columns)))
        while self._least(shown, sizes) > width:
            droppable = [i for i in shown if self.columns[i].drop is not None]
            if not droppable:
                break
            shown.remove(min(droppable, key=lambda i: (self.columns[i].drop, -i)))
        pad = 0 if self.box and self._least(shown, sizes) > width else 1  # compact: the last resort but folding
        widths = self._widths(shown, sizes, width, pad)
        table = self._table(console, shown, widths, pad, folded={i for i in shown if widths[i] < sizes[i][1]})
        dropped = [self.columns[i].name for i in range(len(self.columns)) if i not in shown]
        if not dropped:
            return table
        full = sum(s[0] for s in sizes) + self._overhead(len(sizes))
        note = Text(f"not shown at {width} columns: {', '.join(dropped)} (--width {full} or --json show all)",
                    style="dim")
        return Group(table, note)

    def _sizes(self, console: Console) -> list[tuple[int, int]]:
        """(natural width, least width) of every column."""
        sizes = []
        for index, column in enumerate(self.columns):
            texts = [_text(console, row[index]) for row in self.rows if index < len(row)]
            if self.show_header:
                texts.append(Text(column.header))
            lines = [line for t in texts for line in t.plain.split("\n")]
            natural = max((Text(line).cell_len for line in lines), default=0)
            if column.kind == FIXED:
                least = natural
            elif column.kind == WRAP:
                least = max((Text(item).cell_len for line in lines for item in _ITEM_END.split(line)), default=0)
            else:
                least = max((Text(word).cell_len for line in lines for word in line.split()), default=0)
                if column.kind == PROSE:
                    least = min(least, _PROSE_MIN)
            sizes.append((natural, least))
        return sizes

    def _overhead(self, n: int, pad: int = 1) -> int:
        """Cells a table of ``n`` columns spends on padding (``pad`` each side) and column separators."""
        return 2 * pad * n + (max(n - 1, 0) if self.box else 0)

    def _least(self, shown: list[int], sizes, pad: int = 1) -> int:
        return sum(sizes[i][1] for i in shown) + self._overhead(len(shown), pad)

    def _widths(self, shown: list[int], sizes, width: int, pad: int) -> dict[int, int]:
        widths = {i: sizes[i][0] for i in shown}
        excess = sum(widths.values()) + self._overhead(len(shown), pad) - width
        while excess > 0:
            slack = [i for i in shown if widths[i] > sizes[i][1]]
            if not slack:  # even the least widths do not fit: the widest column folds (rich's last resort)
                widest = max(shown, key=lambda i: widths[i])
                widths[widest] = max(widths[widest] - excess, 1)
                break
            widest = max(slack, key=lambda i: (widths[i], i))
            widths[widest] -= 1
            excess -= 1
        return widths

    def _table(self, console: Console, shown: list[int], widths: dict[int, int], pad: int, folded: set[int]) -> Table:
        table = Table(
            title=self.title, title_justify="left", caption=self.caption, caption_justify="left",
            show_header=self.show_header, show_edge=False, box=boxes.HEAVY_HEAD if self.box else None,
            padding=(0, pad),
        )
        for i in shown:
            column = self.columns[i]
            table.add_column(column.header, justify=column.justify, width=widths[i], overflow="fold",
                             no_wrap=column.kind in (FIXED, WRAP) and i not in folded)
        items = [i for i in shown if self.columns[i].kind == WRAP]
        for row in self.rows:
            cells = {i: row[i] if i < len(row) else "" for i in shown}
            for i in items:
                cells[i] = _break_items(console, cells[i], widths[i])
            table.add_row(*cells.values())
        return table


def _break_items(console: Console, cell, width: int) -> Text:
    """``cell`` with a line break after each ", " where the next item would pass ``width``; nowhere else."""
    text = _text(console, cell)
    if text.cell_len <= width or "\n" in text.plain:
        return text
    lines, start, end = [], 0, 0
    for match in _ITEM_END.finditer(text.plain):
        if Text(text.plain[start : match.start()]).cell_len > width and end > start:
            lines.append(text[start:end])
            start = end + 1
        end = match.start()
    if Text(text.plain[start:]).cell_len > width and end > start:
        lines.append(text[start:end])
        start = end + 1
    lines.append(text[start:])
    return Text("\n").join(lines)


def _text(console: Console, cell) -> Text:
    if isinstance(cell, Text):
        return cell
    return console.render_str(str(cell))
