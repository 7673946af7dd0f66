"""Load a checkpoint into a model (``--weights CKPT`` on summary and the later commands).

``load_state_dict`` here is torch's ``Module.load_state_dict`` without its recursion: torch loads one
module per Python call level (a 2,000-deep chain overflows the stack) and hands each child a dict
filtered from its parent's by one pass per child (quadratic on a 50,000-wide ``Sequential``). The same
per-module ``_load_from_state_dict`` calls, pre and post hooks, in the same order, with one pass per module.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

import torch
import torch.nn as nn
from torch.nn.modules.module import _IncompatibleKeys

from modscope.core.walk import visits
from modscope.errors import CheckpointError

_MAX_MESSAGE = 300
#: the wrappers that leave a prefix on every key of what they save
_WRAPPERS = {"module.": "DistributedDataParallel/DataParallel", "_orig_mod.": "a torch.compile'd model",
             "_orig_mod.module.": "a compiled DistributedDataParallel model", "model.": "a wrapper such as a LightningModule"}


def load_weights(
    model: nn.Module, weights: str, *, key: str | None = None, trust: bool = False, target: str | None = None
) -> None:
    """``model.load_state_dict(<weights>, strict=True)``, reading tensors through memory maps where possible.

    ``target`` (the TARGET the model was built from) makes the error name the ``modscope check`` command to run.

    >>> load_weights(model, "runs/last.ckpt", key="state_dict")
    """
    from modscope.checkpoint import open_checkpoint

    with open_checkpoint(weights, key=key, trust=trust) as ckpt:
        state = OrderedDict((name, ckpt.read(name)) for name in ckpt.entries())
        metadata = ckpt.metadata()
        if metadata:
            state._metadata = metadata  # per-module versions steer BatchNorm's backward compatibility
        on_meta = any(
            t is not None and t.is_meta
            for v in visits(model) if v.first
            for t in (*v.module._parameters.values(), *v.module._buffers.values())
        )
        try:
            load_state_dict(model, state, strict=True, assign=on_meta)
        except RuntimeError as exc:
            raise CheckpointError(does_not_load(exc, model, weights, ckpt.key, target)) from None


def does_not_load(exc: RuntimeError, model: nn.Module, weights: str, key: str | None, target: str | None) -> str:
    """One line: the prefix to strip (and the ``--key`` that strips it), or what is wrong and where to look."""
    label = type(model).__name__
    check = f"modscope check {target or 'TARGET'} --weights {weights}" + (f" --key {key}" if key else "")
    missing, unexpected = getattr(exc, "missing_keys", None), getattr(exc, "unexpected_keys", None)
    if missing is not None and unexpected is not None:
        strip = _moved_prefix(unexpected, missing)
        if strip and len(strip) <= 80:
            return (
                f"{weights} does not load into {label}: every key carries the prefix {strip!r} "
                f"(saved from {_WRAPPERS.get(strip, 'a wrapper around the model')}); add --key "
                f"{(key + '.' if key else '') + strip[:-1]} to strip it"
            )
        add = _moved_prefix(missing, unexpected)
        if add and len(add) <= 80:
            return (
                f"{weights} does not load into {label}: {label}'s keys start with {add!r} and the checkpoint's do "
                f"not (it was saved from that submodule); {check} lists them"
            )
        if missing or unexpected:
            parts = [f"{len(names)} {what} key(s) such as {_short(names[0])}"
                     for what, names in (("missing", missing), ("unexpected", unexpected)) if names]
            return f"{weights} does not load into {label}: {' and '.join(parts)}; {check} explains it"
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()] or [str(exc)]
    detail = lines[0] if len(lines[0]) <= _MAX_MESSAGE else lines[0][: _MAX_MESSAGE - 1] + "…"
    more = f" (and {len(lines) - 1} more problem(s))" if len(lines) > 1 else ""
    return f"{weights} does not load into {label}: {detail}{more}; {check} explains it"


def _short(name: str, limit: int = 80) -> str:
    """A key for a one-line message: quoted, and cut in the middle past ``limit`` characters."""
    text = name.encode("unicode_escape").decode("ascii") if not name.isprintable() else name
    return repr(text if len(text) <= limit else f"{text[: limit // 2]}…{text[-(limit // 2):]}")


def _moved_prefix(longer: list[str], shorter: list[str]) -> str | None:
    """The one leading prefix (one or two dotted parts, ``module.``, ``_orig_mod.module.``) that every name of
    ``longer`` has and that, taken off, leaves every name of ``shorter``."""
    if not longer or not shorter:
        return None
    wanted = set(shorter)
    for depth in (1, 2):
        heads = {".".join(k.split(".")[:depth]) + "." for k in longer if k.count(".") >= depth}
        if len(heads) != 1 or any(k.count(".") < depth for k in longer):
            continue
        (prefix,) = heads
        if {k[len(prefix):] for k in longer} == wanted:
            return prefix
    return None


def load_state_dict(model: nn.Module, state_dict: Mapping[str, Any], *, strict: bool = True, assign: bool = False):
    """``model.load_state_dict(state_dict, strict=strict, assign=assign)``, iteratively; same result and errors.

    A model whose class overrides ``load_state_dict`` (and a TorchScript module) gets its own method.
    """
    if type(model).load_state_dict is not nn.Module.load_state_dict or isinstance(model, torch.jit.ScriptModule):
        return model.load_state_dict(state_dict, strict=strict, assign=assign)
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
    missing: list[str] = []
    unexpected: list[str] = []
    errors: list[str] = []
    metadata = getattr(state_dict, "_metadata", None)
    state_dict = OrderedDict(state_dict)
    if metadata is not None:
        state_dict._metadata = metadata
    index = _KeyIndex(model, state_dict)
    path: set[int] = set()  # modules being loaded (the current one's ancestors): a cycle is not followed
    # stack items: (module, prefix, its local dict, or None: its keys are in ``index``), or (module, _DONE, None)
    # to run its post hooks once its subtree is loaded
    stack: list[tuple] = [(model, "", None)]
    while stack:
        module, prefix, local = stack.pop()
        if prefix is _DONE:
            path.discard(id(module))
            _post_hooks(module, missing, unexpected)
            continue
        if id(module) in path:
            continue  # a module inside itself (torch would recurse forever): loaded once on this path
        path.add(id(module))
        local_metadata = {} if metadata is None else metadata.get(prefix[:-1], {})
        if assign:
            local_metadata["assign_to_params_buffers"] = assign
        children = [(name, child) for name, child in module._modules.items() if child is not None]
        buckets = None
        if _plain(module):  # it reads only its own keys: give it those (torch's loop over all keys is the cost)
            if local is None:
                own = index.own(prefix)
            else:
                own, buckets = _split(local, prefix, children, prefixed=True)
            module._load_from_state_dict(own, prefix, local_metadata, True, missing, unexpected, errors)
        else:  # hooks and overrides see (and may change) the whole subtree's keys, as in torch
            local = index.subtree(module, prefix) if local is None else local
            module._load_from_state_dict(local, prefix, local_metadata, True, missing, unexpected, errors)
            _, buckets = _split(local, prefix, children, prefixed=False)
        stack.append((module, _DONE, None))
        for name, child in reversed(children):
            stack.append((child, f"{prefix}{name}.", None if buckets is None else buckets[name]))
    if strict:
        if unexpected:
            errors.insert(0, "Unexpected key(s) in state_dict: {}. ".format(", ".join(f'"{k}"' for k in unexpected)))
        if missing:
            errors.insert(0, "Missing key(s) in state_dict: {}. ".format(", ".join(f'"{k}"' for k in missing)))
    if errors:
        error = RuntimeError(
            "Error(s) in loading state_dict for {}:\n\t{}".format(type(model).__name__, "\n\t".join(errors))
        )
        if len(errors) == bool(missing) + bool(unexpected):  # nothing but key problems: say which, by name
            error.missing_keys, error.unexpected_keys = missing, unexpected
        raise error
    return _IncompatibleKeys(missing, unexpected)


_DONE = object()


class _KeyIndex:
    """Each key of a state dict filed under the module path torch's descent would stop at (the module that
    loads it, or flags it as unexpected), so no module's keys are found by scanning its ancestors' keys."""

    def __init__(self, model: nn.Module, state_dict: dict):
        self.state = state_dict
        paths = {v.name for v in visits(model)}
        self.by_path: dict[str, list[tuple[int, Any]]] = {}
        for position, key in enumerate(state_dict):
            owner = key.rpartition(".")[0] if isinstance(key, str) else ""
            while owner not in paths:
                owner = owner.rpartition(".")[0]
            self.by_path.setdefault(owner, []).append((position, key))

    def own(self, prefix: str) -> dict:
        return {key: self.state[key] for _, key in self.by_path.get(prefix[:-1], ())}

    def subtree(self, module: nn.Module, prefix: str) -> dict:
        """Every key under ``prefix``, in the state dict's order (what torch's filtering hands this module)."""
        found = [
            entry
            for v in visits(module)
            for entry in self.by_path.get(f"{prefix}{v.name}" if v.name else prefix[:-1], ())
        ]
        return {key: self.state[key] for _, key in sorted(found, key=lambda entry: entry[0])}


def _post_hooks(module: nn.Module, missing: list[str], unexpected: list[str]) -> None:
    keys = _IncompatibleKeys(missing, unexpected)
    for hook in module._load_state_dict_post_hooks.values():
        if hook(module, keys) is not None:
            raise AssertionError(
                "Hooks registered with ``register_load_state_dict_post_hook`` are not expected to return new "
                "values, if incompatible_keys need to be modified, it should be done inplace."
            )


def _plain(module: nn.Module) -> bool:
    """torch's own ``_load_from_state_dict`` and no pre hooks: only keys of the module itself are read."""
    return type(module)._load_from_state_dict is nn.Module._load_from_state_dict and not module._load_state_dict_pre_hooks


def _split(local: dict, prefix: str, children: list, *, prefixed: bool) -> tuple[dict, dict[str, dict]]:
    """(keys for the module itself, keys per child), in one pass over ``local``. ``prefixed``: every key is
    known to start with ``prefix`` (the dict was split from the parent's and no hook has touched it); else
    keys of other prefixes are left out (torch ignores them at this level)."""
    own: dict = {}
    buckets: dict[str, dict] = {name: {} for name, _ in children}
    start = len(prefix)
    for k, v in local.items():
        if not prefixed and not k.startswith(prefix):
            continue
        dot = k.find(".", start)
        bucket = buckets.get(k[start:dot]) if dot >= 0 else None
        if bucket is None:
            own[k] = v
        else:
            bucket[k] = v
    return own, buckets
