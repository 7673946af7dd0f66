"""FitTable on its own, without a model: the order columns are left out in, where cells may break, and the
last resorts (no padding, then folding) for names wider than the width."""
from __future__ import annotations

import io

from rich.console import Console

from modscope.render.fit import PROSE, WORDS, WRAP, FitTable


def render(table, width: int) -> list[str]:
    console = Console(width=width, file=io.StringIO(), color_system=None, force_terminal=False)
    console.print(table)
    return console.file.getvalue().splitlines()


def _table() -> FitTable:
    table = FitTable(title="t")
    table.add_column("module")
    table.add_column("a", justify="right", drop=2)
    table.add_column("b", justify="right", drop=1)
    table.add_column("c", justify="right")
    table.add_row("layer1.0.downsample.0", "111111111", "222222222", "333333333")
    return table


def test_columns_go_in_rank_order_and_are_named():
    assert not any("not shown" in line for line in render(_table(), 59))  # 59 columns: everything fits
    lines = render(_table(), 55)  # b (rank 1) goes first
    assert "222222222" not in "\n".join(lines) and "111111111" in lines[3]
    assert lines[-2].startswith("not shown at 55 columns: b (--width 59")
    lines = render(_table(), 40)  # then a; the module and c are never left out
    assert "layer1.0.downsample.0" in lines[3] and "333333333" in lines[3] and "111111111" not in lines[3]
    assert "not shown at 40 columns: a, b" in "\n".join(lines)
    assert all(len(line) <= 40 for line in lines)


def test_lists_break_after_commas_only_and_words_at_spaces():
    table = FitTable()
    table.add_column("name")
    table.add_column("shapes", kind=WRAP)
    table.add_column("what", kind=WORDS)
    table.add_row("encoder.block", "1x3x224x224, 1x64x112x112, 241.0 KiB", "layer4.0.conv1 Conv2d")
    text = "\n".join(render(table, 50))
    for piece in ("1x3x224x224,", "1x64x112x112,", "241.0 KiB", "layer4.0.conv1", "encoder.block"):
        assert piece in text, text
    assert all(len(line) <= 50 for line in text.splitlines())


def test_prose_folds_a_word_longer_than_its_least_width():
    table = FitTable()
    table.add_column("code")
    table.add_column("message", kind=PROSE)
    table.add_row("x", "see /a/very/long/path/that/goes/on/and/on/for/sixty/characters/or/so.py for details")
    lines = render(table, 40)
    assert all(len(line) <= 40 for line in lines) and len(lines) > 3


def test_padding_goes_before_a_name_folds_and_folding_is_the_last_resort():
    table = FitTable()
    table.add_column("key")
    table.add_column("A")
    table.add_column("B")
    key = "encoder.layers.2.attention.in_proj.weight.extra"  # 47 characters
    table.add_row(key, "float32", "float16")
    lines = render(table, 60)  # 47 + 7 + 7 + 6 padding + 2 separators = 69; 63 without padding: still too wide
    assert all(len(line) <= 60 for line in lines)
    lines = render(table, 64)  # fits once the padding goes
    assert f"{key}│float32│float16" in lines
