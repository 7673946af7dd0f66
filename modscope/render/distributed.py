"""Rich views of the distributed layout: meshes, placements, and what each rank holds."""
from __future__ import annotations

from rich.console import Group
from rich.text import Text

from modscope.core.text import human_bytes, human_count
from modscope.render.fit import WRAP, FitTable
from modscope.reports.distributed import DistributedInfo, RankInfo

#: gathered reports list every rank up to this many; beyond it, the extremes and a one-line digest
MAX_RANK_ROWS = 16


def distributed_view(info: DistributedInfo, *, param_bytes: int, params: int) -> Group:
    """Header line, meshes, bytes per rank. ``param_bytes``/``params``: the model's GLOBAL totals."""
    parts = [_header(info, params), _meshes(info)] if info.meshes else [_header(info, params)]
    parts.append(_bytes(info, param_bytes))
    if info.ranks:
        parts.append(_ranks_table(info.ranks))
    return Group(*parts)


def placement_cell(sharding) -> str:
    """'mesh0 Shard(0)' / 'mesh1 Replicate(), Shard(1)' / '' for plain tensors."""
    if sharding is None:
        return ""
    return f"{sharding.mesh} {', '.join(sharding.placements)}"


def _header(info: DistributedInfo, params: int) -> Text:
    where = (
        f"rank {info.rank} of {info.world_size} ({info.backend})"
        if info.rank is not None
        else "no process group in this process"
    )
    if info.gathered:
        where = f"gathered from {len(info.ranks)} rank(s); " + where
    lines = [
        f"  parameter tensors  {info.sharded_params} sharded, {info.replicated_params} replicated, "
        f"{info.partial_params} partial, {info.plain_params} plain (not DTensors)"
    ]
    if info.fsdp_modules:
        lines.append(f"  fully_shard units  {len(info.fsdp_modules)}")
    return Text.assemble(("Distributed  ", "bold"), where + "\n" + "\n".join(lines))


def _meshes(info: DistributedInfo) -> FitTable:
    table = FitTable(title="Device meshes")
    for col in ("mesh", "layout", "ranks", "param tensors", "elements"):
        table.add_column(col, justify="right" if col in ("param tensors", "elements") else "left",
                         kind=WRAP if col in ("layout", "ranks") else "fixed")
    for m in info.meshes:
        ranks = ", ".join(map(str, m.ranks[:8])) + (f" ... ({len(m.ranks)})" if len(m.ranks) > 8 else "")
        table.add_row(m.id, m.label, ranks, str(m.params), human_count(m.param_numel))
    return table


def _bytes(info: DistributedInfo, param_bytes: int) -> Text:
    mine = info.this_rank
    lines = [
        f"  parameters   {human_bytes(param_bytes)} global (each element once)",
        f"  rank {mine.rank:<7} {human_bytes(mine.param_bytes)} of parameters ({_share(mine.param_bytes, param_bytes)}), "
        f"{human_bytes(mine.buffer_bytes)} of buffers",
    ]
    total = info.total_param_bytes_all_ranks
    if total is not None and len(info.ranks) > 1:
        ratio = f" (x{total / param_bytes:.2f}: replicas count on each rank)" if param_bytes else ""
        lines.append(f"  all {len(info.ranks)} ranks  {human_bytes(total)} of parameters{ratio}")
    return Text("\n".join(lines))


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _ranks_table(ranks: tuple[RankInfo, ...]) -> FitTable:
    """Too narrow a width leaves out local, host and param elements, in that order."""
    table = FitTable(title="Per rank")
    drops = {"local": 1, "host": 2, "param elements": 3}
    for col in ("rank", "host", "local", "devices", "param elements", "param bytes", "buffer bytes"):
        table.add_column(col, justify="right" if col not in ("host", "devices") else "left", drop=drops.get(col),
                         kind=WRAP if col == "devices" else "fixed")
    shown = list(ranks)
    if len(ranks) > MAX_RANK_ROWS:
        by_bytes = sorted(ranks, key=lambda r: r.param_bytes)
        shown = sorted({by_bytes[0].rank: by_bytes[0], by_bytes[-1].rank: by_bytes[-1], ranks[0].rank: ranks[0]}.values(), key=lambda r: r.rank)
    for r in shown:
        table.add_row(
            str(r.rank),
            r.host,
            "-" if r.local_rank is None else str(r.local_rank),
            ", ".join(r.devices),
            human_count(r.param_numel),
            human_bytes(r.param_bytes),
            human_bytes(r.buffer_bytes),
        )
    if len(ranks) > MAX_RANK_ROWS:
        mean = sum(r.param_bytes for r in ranks) / len(ranks)
        table.caption = (
            f"{len(ranks)} ranks (first, smallest and largest shown; --json lists all): parameter bytes per rank "
            f"min {human_bytes(by_bytes[0].param_bytes)}, mean {human_bytes(int(mean))}, "
            f"max {human_bytes(by_bytes[-1].param_bytes)}"
        )
    return table
