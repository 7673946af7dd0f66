"""TARGET -> nn.Module.

Forms: ``path/to/file.py:Name``, ``package.module:Name`` (Name may be dotted: ``file.py:Outer.build``), a
TorchScript archive or a whole pickled module (both only with ``trust=True``: loading them runs code).
Name may be an nn.Module subclass, a factory returning a module, or a module instance. Hugging Face folders,
``config.json`` paths and ``hf:ORG/NAME`` are built by load/hub.py, ``timm:NAME`` by load/timm_target.py.
"""
from __future__ import annotations

import ast
import contextlib
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn as nn

from modscope.errors import LoadError, UsageError
from modscope.load.saved_module import load_saved_module
from modscope.load.suggest import close_module, closest_path, name_the_model
from modscope.load.user_errors import describe_exception


def load_model(
    target: str,
    *,
    kwargs: dict[str, Any] | None = None,
    trust: bool = False,
    device: str | torch.device | None = None,
) -> nn.Module:
    """Build or read the model named by ``target``.

    ``kwargs`` go to the class/factory; ``device`` is the default device during construction (e.g. "meta"
    builds a huge model without allocating its weights).

    >>> load_model("examples/lenet.py:LeNet")
    >>> load_model("torchvision.models:resnet18", kwargs={"num_classes": 10})
    >>> load_model("hf:openai-community/gpt2", device="meta")
    """
    kwargs = dict(kwargs or {})
    kind = _hub_kind(target)
    if kind == "timm":
        from modscope.load.timm_target import load_timm

        return load_timm(target, kwargs=kwargs, device=device)
    if kind == "hf":
        from modscope.load.hub import load_hub

        return load_hub(target, kwargs=kwargs, trust=trust, device=device)
    if is_object_spec(target):
        return _instantiate(resolve_object(target), target, kwargs, device)
    path = Path(target.removesuffix(":") if target.endswith(".py:") else target)
    if path.suffix in _SOURCE_SUFFIXES and path.is_file():
        raise LoadError(name_the_model(path))
    if path.is_file() or path.is_dir():
        if kwargs:
            raise UsageError("--arg/--args-json apply to classes and factories, not to saved model files")
        return load_saved_module(path, trust=trust)
    close = closest_path(target)
    if close is not None:
        raise LoadError(f"no such file or folder: {target} (did you mean {close}?)")
    raise LoadError(
        f"cannot understand target {target!r}: expected path/to/file.py:Name, package.module:Name, "
        "or an existing TorchScript/pickled model file"
    )


_SOURCE_SUFFIXES = (".py", ".pyw")


def _hub_kind(target: str) -> str | None:
    from modscope.load.hub import hub_kind

    return hub_kind(target)


def is_object_spec(target: str) -> bool:
    """True for ``file.py:Name`` / ``package.module:Name`` (as opposed to a saved file's path)."""
    file_part, sep, name = target.rpartition(":")
    return bool(sep and name and file_part) and not _looks_like_drive(file_part)


def resolve_object(spec: str):
    """``file.py:Name`` / ``package.module:Outer.attr`` -> the Python object it names (imports as needed)."""
    file_part, _, name = spec.rpartition(":")
    return _resolve(_import_namespace(file_part), name, file_part)


def parse_constructor_args(pairs: Iterable[str] = (), args_json: str | None = None) -> dict[str, Any]:
    """``["depth=3", "act='relu'"]`` and ``'{"width": 64}'`` -> keyword arguments.

    Values are Python literals; anything that is not one is taken as a plain string (``act=relu``).
    """
    out: dict[str, Any] = {}
    if args_json:
        _check_nesting(args_json, "--args-json")
        try:
            parsed = json.loads(args_json)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--args-json is not valid JSON: {exc.msg} at position {exc.pos}")
        except RecursionError:
            raise UsageError(f"--args-json is nested too deeply (at most {MAX_ARG_NESTING} levels)")
        if not isinstance(parsed, dict):
            raise UsageError("--args-json must be a JSON object, e.g. '{\"num_classes\": 10}'")
        out.update(parsed)
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise UsageError(f"--arg {pair!r}: expected key=value with a Python identifier as key")
        _check_nesting(raw, f"--arg {key}")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError, TypeError):
            out[key] = raw
        except (RecursionError, MemoryError):  # e.g. 100,000 unary minus signs
            raise UsageError(f"--arg {key}: the value is nested too deeply to read as a Python literal")
    return out


#: Constructor arguments nest a few levels (a list of dicts); past this the input is refused, not parsed.
MAX_ARG_NESTING = 100


def _check_nesting(text: str, option: str) -> None:
    """Refuse brackets nested past MAX_ARG_NESTING before a recursive parser meets them (one linear scan)."""
    depth, quote, escaped = 0, None, False
    for char in text:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
            if depth > MAX_ARG_NESTING:
                raise UsageError(f"{option} is nested too deeply (at most {MAX_ARG_NESTING} levels)")
        elif char in "]})":
            depth -= 1


# --- importing -------------------------------------------------------------------------------------------


def _looks_like_drive(part: str) -> bool:
    return len(part) == 1 and part.isalpha()  # "C:\\models\\net.py" has no Name part


def _import_namespace(spec: str):
    if spec.endswith(".py") or os.sep in spec or "/" in spec or Path(spec).is_file():
        return _import_file(Path(spec))
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            close = close_module(exc.name)
            hint = f"did you mean {close}?" if close else "is it installed, or run from the folder that holds it?"
            raise LoadError(f"cannot import {spec!r}: no module named {exc.name!r} ({hint})")
        raise LoadError(f"importing {spec!r} failed: {describe_exception(exc, None)}")
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a module may raise anything at import, even SystemExit
        raise LoadError(f"importing {spec!r} failed: {describe_exception(exc, None)}")


def _import_file(path: Path):
    if not path.is_file():
        close = closest_path(str(path))
        raise LoadError(f"file not found: {path}" + (f" (did you mean {close}?)" if close else ""))
    try:
        path.open("rb").close()
    except OSError as exc:
        raise LoadError(f"cannot read {path}: {exc.strerror or exc}")
    resolved = path.resolve()
    digest = hashlib.blake2b(str(resolved).encode(), digest_size=6).hexdigest()
    module_name = f"modscope_user_{resolved.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look classes up here
    with _importing_user_code(str(resolved.parent)):
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:  # noqa: BLE001 - the user's file may raise anything, even SystemExit
            del sys.modules[module_name]
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise LoadError(f"importing {path} failed: {describe_exception(exc, resolved)}")
    return module


@contextlib.contextmanager
def _importing_user_code(folder: str):
    """While the user's file is imported: its siblings are importable, and no bytecode is written.

    ``__pycache__/`` must not appear beside the user's files (theirs or their siblings'). sys.path and
    sys.dont_write_bytecode are restored after, here and nowhere else.
    """
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    no_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        yield
    finally:
        sys.dont_write_bytecode = no_bytecode
        if added and folder in sys.path:
            sys.path.remove(folder)


# --- resolving and building ------------------------------------------------------------------------------


def _resolve(namespace, dotted: str, where: str):
    obj = namespace
    walked = []
    for part in dotted.split("."):
        if not hasattr(obj, part):
            owner = where if not walked else f"{where}:{'.'.join(walked)}"
            raise LoadError(f"{part!r} not found in {owner}{_suggest(obj, part)}")
        obj = getattr(obj, part)
        walked.append(part)
    return obj


def _suggest(obj, name: str) -> str:
    candidates = [k for k, v in vars(obj).items() if not k.startswith("_") and _is_candidate(v)]
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    if close:
        return f"; did you mean {', '.join(close)}?"
    models = sorted(k for k in candidates if inspect.isclass(vars(obj)[k]) or isinstance(vars(obj)[k], nn.Module))
    if models:
        shown = ", ".join(models[:8]) + (" ..." if len(models) > 8 else "")
        return f"; available: {shown}"
    return ""


def _is_candidate(value) -> bool:
    return isinstance(value, nn.Module) or (inspect.isclass(value) and issubclass(value, nn.Module)) or (
        inspect.isfunction(value)
    )


def _instantiate(obj, label: str, kwargs: dict[str, Any], device) -> nn.Module:
    if isinstance(obj, nn.Module):
        if kwargs:
            raise UsageError(f"{label} is already a module instance; --arg/--args-json cannot be applied")
        return obj
    if inspect.isclass(obj) and not issubclass(obj, nn.Module):
        raise LoadError(f"{label} is the class {obj.__name__}, which is not an nn.Module subclass")
    if not callable(obj):
        raise LoadError(f"{label} is a {type(obj).__name__}, not an nn.Module class, factory or instance")
    _check_signature(obj, label, kwargs)
    try:
        with torch.device(device) if device is not None else contextlib.nullcontext():
            built = obj(**kwargs)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - the user's constructor, even sys.exit()
        call = f"{label}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
        said = describe_exception(exc, None)
        raise LoadError(f"{call} {said if not isinstance(exc, Exception) else 'raised ' + said}")
    if not isinstance(built, nn.Module):
        raise LoadError(f"{label} returned a {type(built).__name__}, not an nn.Module")
    return built


def _check_signature(obj, label: str, kwargs: dict[str, Any]) -> None:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return  # builtins without a signature: let the call speak for itself
    params = signature.parameters.values()
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params)
    missing = [
        p.name
        for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in kwargs
    ]
    unknown = [] if accepts_any else [k for k in kwargs if k not in signature.parameters]
    if missing:
        example = " ".join(f"--arg {m}=..." for m in missing)
        raise UsageError(f"{label} needs constructor argument(s) {', '.join(missing)}: pass {example}")
    if unknown:
        known = ", ".join(signature.parameters) or "none"
        raise UsageError(f"{label} takes no argument(s) {', '.join(unknown)} (it takes: {known})")
