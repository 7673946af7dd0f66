"""Small pure formatting helpers shared by every room (numbers, bytes, shapes, scientific values, times)."""
from __future__ import annotations


def human_count(n: int | None) -> str:
    """12_600_000 -> '12.6M'; None -> '?' (unknown, e.g. lazy parameters)."""
    if n is None:
        return "?"
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def human_bytes(n: int | None) -> str:
    """1536 -> '1.5 KiB'."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def shape_str(shape) -> str:
    """(1, 3, 224, 224) -> '1x3x224x224'; () -> 'scalar'; None -> '?'."""
    if shape is None:
        return "?"
    if len(shape) == 0:
        return "scalar"
    return "x".join(str(d) for d in shape)


def human_flops(n: int | None) -> str:
    """4_100_000_000 -> '4.1G'; None -> '-' (not counted)."""
    if n is None:
        return "-"
    for unit, size in (("P", 10**15), ("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def sci(x: float | None, digits: int = 2) -> str:
    """3.1e-05 -> '3.10e-05'; None -> '-' (no value); NaN/Inf as 'nan'/'inf'."""
    if x is None:
        return "-"
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    return f"{x:.{digits}e}"


def millis(ns: float | None) -> str:
    """1_234_567 ns -> '1.235'; the unit (ms) goes in the column header."""
    if ns is None:
        return "-"
    return f"{ns / 1e6:.3f}"
