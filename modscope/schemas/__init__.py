"""JSON Schemas (draft 2020-12) of every ``--json`` document, shipped as package data: ``NAME.json`` here.

The files are the contract: ``tests/test_json_schemas.py`` validates each command's real output against
them (``additionalProperties: false`` at every level, so an undocumented key fails) and checks that
docs/json.md names every key they hold. A few schemas refer to another's ``$defs`` (``tree.json`` uses
``summary.json#/$defs/tree_module``); ``registry()`` resolves those. Reads files only; imports nothing.

>>> from modscope import schemas
>>> schemas.load("summary")["title"]
'modscope.summary/1'
"""
from __future__ import annotations

import json
from importlib import resources

#: schema name -> the command (or API call) whose document it describes
COMMANDS = {
    "summary": "modscope summary TARGET",
    "tree": "modscope tree TARGET",
    "shared": "modscope shared TARGET",
    "audit": "modscope audit TARGET",
    "checkpoint": "modscope summary CKPT",
    "checkpoint_tree": "modscope tree CKPT",
    "diff": "modscope diff A B",
    "check": "modscope check TARGET --weights CKPT",
    "graph": "modscope graph TARGET",
    "grads": "modscope grads TARGET",
    "grad_watch": "modscope.watch_gradients(...).report() (Python only)",
    "nan": "modscope nan TARGET",
    "time": "modscope time TARGET",
    "page": "modscope report TARGET (inside the page: <script id=\"modscope-page\">)",
}


def names() -> list[str]:
    """Every schema name, in the order of docs/json.md."""
    return list(COMMANDS)


def name_of(text: str) -> str | None:
    """``summary``, ``modscope.summary/1`` or ``summary.json`` -> ``summary``; None when there is no such schema."""
    name = text.strip()
    name = name.removeprefix("modscope.").removesuffix(".json").removesuffix("/1")
    return name if name in COMMANDS else None


def text(name: str) -> str:
    """The schema file's text, exactly as shipped."""
    return resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")


def load(name: str) -> dict:
    """The schema named ``name`` as a dict (KeyError for an unknown name)."""
    if name not in COMMANDS:
        raise KeyError(name)
    return json.loads(text(name))


def registry():
    """A ``referencing.Registry`` holding every schema under its ``$id`` (``summary.json``), for jsonschema.

    >>> jsonschema.Draft202012Validator(schemas.load("tree"), registry=schemas.registry()).validate(doc)
    """
    from referencing import Registry, Resource

    return Registry().with_resources((f"{n}.json", Resource.from_contents(load(n))) for n in COMMANDS)
