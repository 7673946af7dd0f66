"""Rich views of a DCP folder's layout: data files, and how tensors are chunked across them."""
from __future__ import annotations

from rich.console import Group
from rich.text import Text

from modscope.core.text import human_bytes
from modscope.render.fit import FitTable
from modscope.reports.dcp_layout import DcpLayout, TensorLayout

#: data files listed before "... and N more"
MAX_FILES = 16


def layout_view(layout: DcpLayout) -> Group:
    """Files table, chunking summary, non-tensor entries and tensors the chunks do not cover."""
    table = FitTable(title="DCP data files")
    drops = {"tensors": 1, "chunks": 2, "tensor bytes": 3}
    for col in ("file", "size", "tensor bytes", "chunks", "tensors"):
        table.add_column(col, justify="left" if col == "file" else "right", drop=drops.get(col))
    for f in layout.files[:MAX_FILES]:
        table.add_row(f.name, human_bytes(f.size), human_bytes(f.stored_bytes), str(f.chunks), str(f.tensors))
    if len(layout.files) > MAX_FILES:
        rest = layout.files[MAX_FILES:]
        table.add_row(
            f"... {len(rest)} more",
            human_bytes(sum(f.size or 0 for f in rest)),
            human_bytes(sum(f.stored_bytes for f in rest)),
            str(sum(f.chunks for f in rest)),
            "",
        )
    lines = ["chunking: " + "; ".join(f"{n} tensor(s) {what}" for what, n in layout.split_counts().items())]
    if layout.non_tensor:
        shown = ", ".join(layout.non_tensor[:5]) + (" ..." if len(layout.non_tensor) > 5 else "")
        lines.append(f"{len(layout.non_tensor)} non-tensor entr(ies) saved as pickled bytes: {shown}")
    parts = [table, Text("\n".join(lines))]
    if layout.uncovered:
        shown = ", ".join(layout.uncovered[:5]) + (" ..." if len(layout.uncovered) > 5 else "")
        parts.append(
            Text(f"{len(layout.uncovered)} tensor(s) whose chunks do not cover them (part was never saved): {shown}",
                 style="red")
        )
    return Group(*parts)


def chunk_note(tensor: TensorLayout | None) -> str:
    """Tree-leaf annotation: '  [2 chunks: dim 0 x2 in 2 files]'; nothing for a tensor saved whole."""
    if tensor is None or len(tensor.chunks) <= 1:
        return ""
    files = len(tensor.files)
    gap = "" if tensor.covered else ", NOT covered"
    return f"  [{tensor.description} in {files} file{'s' if files != 1 else ''}{gap}]"


def chunk_cells(tensor: TensorLayout | None) -> tuple[str, str, str]:
    """(chunks, split, files) cells of ``summary CKPT --tensors``."""
    if tensor is None:
        return ("", "", "")
    split = ", ".join(f"dim {d}" + (f" x{n}" if n != len(tensor.chunks) else "") for d, n in enumerate(tensor.split) if n > 1)
    gaps = " (gaps)" if not tensor.covered else ""
    return (f"{len(tensor.chunks)}{gaps}", split or "-", str(len(tensor.files)))
