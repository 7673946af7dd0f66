"""What the page's script needs beside the reports' own JSON documents: the tree's shape, the runs collapsed as
in the terminal, which graph element stands for which module, and every finding with the module it concerns.

Modules are referred to by their index in the summary document's ``modules`` list (pre-order, root first).
"""
from __future__ import annotations

import json
from typing import Any

from modscope.render.collapse import group_children
from modscope.render.json import jsonable
from modscope.reports.page import ModelPage

SCHEMA = "modscope.page/1"


def page_data(page: ModelPage, graph_nodes: list | None = None, graph_clusters: list | None = None) -> dict:
    """The ``modscope-page`` document; ``graph_*`` list the module index each drawn node/cluster stands for."""
    data: dict[str, Any] = {"schema": SCHEMA, "kind": "diff" if page.diff is not None else "model",
                            "title": page.title}
    if page.summary is None:
        return data
    modules = page.summary.modules
    index = _module_index(page)
    kids = [[index[c] for c in m.children] for m in modules]
    run_size: dict[str, int] = {}
    run_of: dict[str, int] = {}
    run_label: dict[str, str] = {}
    for m, children in zip(modules, kids):
        if len(children) < 2:
            continue
        for row in group_children([modules[c] for c in children]):
            if row.count > 1:
                first = index[row.module.name]
                run_size[str(first)] = row.count
                run_label[str(first)] = row.label
                start = children.index(first)
                for member in children[start + 1 : start + row.count]:
                    run_of[str(member)] = first
    data.update(
        kids=kids, run_size=run_size, run_of=run_of, run_label=run_label,
        graph={"nodes": graph_nodes or [], "clusters": graph_clusters or [], "note": page.graph_note,
               "mode": None if page.graph is None else page.graph.mode.value},
        findings=findings(page, index),
    )
    return data


def _module_index(page: ModelPage) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, m in enumerate(page.summary.modules):
        index.setdefault(m.name, i)
        for alias in m.aliases:
            index.setdefault(alias, i)
    return index


def module_of(name: str, index: dict[str, int], owners: dict[str, str]) -> int:
    """The index of the module ``name`` is (a module name), or belongs to (a parameter/buffer name)."""
    if name in index:
        return index[name]
    name = owners.get(name, name.rpartition(".")[0])
    while name not in index and name:
        name = name.rpartition(".")[0]
    return index.get(name, 0)


def findings(page: ModelPage, index: dict[str, int]) -> list[dict]:
    """Every finding the page lists, each with the index of its module: audit and summary warnings (hazards),
    shared tensors and modules, modules never called, unused parameters, failing gradients."""
    summary = page.summary
    owners = {t.name: t.module for t in (*summary.parameters, *summary.buffers)}
    for t in (*summary.parameters, *summary.buffers):
        for alias in t.shared_with:
            owners.setdefault(alias, t.module)
    out: list[dict] = []
    seen: set[tuple] = set()

    def add(source: str, severity: str, code: str, name: str, message: str) -> None:
        key = (code, name, message)
        if key in seen:
            return
        seen.add(key)
        out.append({"source": source, "severity": severity, "code": code, "name": name, "message": message,
                    "module": module_of(name, index, owners)})

    for f in summary.warnings:
        add("hazard", f.severity.value, f.code, f.name, f.message)
    if page.audit is not None:
        for f in page.audit.findings:
            add("audit", f.severity.value, f.code, f.name, f.message)
    for group in summary.shared:
        add("sharing", "info", group.kind.value, group.names[0], "one object under the names " + ", ".join(group.names))
    forward = summary.forward
    if forward is not None:
        if forward.failure is not None:
            fail = forward.failure
            add("forward", "error", "forward_failed", fail.module, f"{fail.error}: {fail.message}")
        for name in forward.never_called:
            add("forward", "warning", "never_called", name, "has a forward of its own but was never called")
        for name in forward.unused_parameters or ():
            add("forward", "warning", "unused_parameter", name, "trainable, but outside the autograd graph of the output")
    if page.grads is not None:
        for p in page.grads.problems:
            add("grads", "error", f"grad_{p.status.value}", p.name, f"gradient {p.status.value.replace('_', ' ')}")
    return out


def script_json(data: Any) -> str:
    """``data`` as JSON that is safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` appear
    (``</script>`` in a module name cannot end the element) and U+2028/2029 are escaped; parses to the same."""
    data = data.to_dict() if hasattr(data, "to_dict") else data
    try:  # most documents hold no NaN/Inf: skip the walk that turns them into strings ("nan", as --json writes)
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = json.dumps(jsonable(data), separators=(",", ":"), ensure_ascii=False)
    for raw, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text
