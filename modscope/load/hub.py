"""Hugging Face architectures as TARGETs: a ``save_pretrained`` folder, a path to its ``config.json``, or
``hf:ORG/NAME[@REVISION]`` from the local cache (load/hf_cache.py). ``timm:NAME`` is load/timm_target.py.

The config is read by modscope (bounded, as JSON) and the model built with ``transformers`` from it: the class
its ``architectures`` names, else ``AutoModel`` for its ``model_type``; ``--arg key=value`` overrides config
attributes. Nothing is downloaded, and a config whose ``auto_map`` points at custom code needs ``--trust``.

>>> load_hub("runs/tiny-gpt2", kwargs={}, trust=False, device="meta")   # GPT2LMHeadModel on meta
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from modscope.errors import LoadError, UnsafeLoadError, UsageError
from modscope.load import hf_cache

CONFIG = "config.json"
TIMM_PREFIX = "timm:"
#: a config.json is a few KB; anything past this is refused before parsing
MAX_CONFIG = 16 * 1024 * 1024
#: the files ``save_pretrained`` writes weights to, in the order transformers looks for them
WEIGHT_NAMES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class HubSource:
    """Where a Hugging Face TARGET lives: its folder, the roots its files must resolve into, its config."""

    target: str
    folder: Path
    roots: tuple[str, ...]
    config: dict

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG

    def weights(self) -> str | None:
        """The folder's weights file (a sharded index, safetensors or pytorch_model.bin), if it has one."""
        from modscope.checkpoint.guard import contained

        for name in WEIGHT_NAMES:
            if os.path.lexists(self.folder / name):
                contained(self.roots, name, str(self.config_path))  # a symlink out of the folder (or blobs/) is refused
                return str(self.folder / name)  # by its own name: a sharded index finds its shards beside it
        return None


def hub_kind(target: str) -> str | None:
    """"hf" for a Hugging Face folder, config.json or ``hf:`` spec, "timm" for ``timm:NAME``, else None."""
    if not isinstance(target, str):
        return None
    if target.startswith(TIMM_PREFIX):
        return "timm"
    if target.startswith(hf_cache.PREFIX):
        return "hf"
    return "hf" if _local_config(target) is not None else None


def is_hub_target(target: str) -> bool:
    return hub_kind(target) is not None


def source(target: str) -> HubSource:
    """The folder, containment roots and parsed config.json of a Hugging Face TARGET."""
    if target.startswith(hf_cache.PREFIX):
        folder = hf_cache.snapshot_folder(target)
        roots = hf_cache.allowed_roots(folder)
        if not os.path.lexists(folder / CONFIG):
            raise LoadError(
                f"{target}: the cached snapshot {folder} holds no {CONFIG} (fetch it: hf download "
                f"{hf_cache.parse(target)[0]} {CONFIG})"
            )
    else:
        config = _local_config(target)
        if config is None:
            raise LoadError(f"{target} is neither a folder holding {CONFIG} nor a path to one")
        folder = config.parent
        roots = (str(folder),)
    return HubSource(target, folder, roots, read_config(folder / CONFIG, roots))


def read_config(path: Path, roots: tuple[str, ...]) -> dict:
    """config.json through modscope's bounded readers: a regular file inside ``roots``, a JSON object."""
    from modscope.checkpoint.guard import contained, load_json, read_bytes

    real = contained(roots, CONFIG, str(path))
    document = load_json(read_bytes(real, limit=MAX_CONFIG, what=CONFIG), f"{path} is not a valid {CONFIG}")
    if not isinstance(document, dict):
        raise LoadError(f"{path} is not a Hugging Face config: expected a JSON object")
    return document


def load_hub(target: str, *, kwargs: dict[str, Any], trust: bool, device=None) -> nn.Module:
    """The architecture a Hugging Face TARGET describes, randomly initialised (on ``device``), in eval mode."""
    src = source(target)
    config = src.config
    auto_map = config.get("auto_map")
    if auto_map and not trust:
        names = ", ".join(map(str, auto_map)) if isinstance(auto_map, (dict, list)) else str(auto_map)
        raise UnsafeLoadError(
            f"{src.config_path} maps its architecture to custom code (auto_map: {names}); building it runs Python "
            "files from the model's folder: pass --trust only if you trust them"
        )
    with offline_transformers(target) as transformers:
        try:
            built = _config(transformers, src, kwargs, bool(auto_map))
            make = _model_factory(transformers, src, built, bool(auto_map))
            with torch.device(device) if device is not None else contextlib.nullcontext():
                model = make(built)
        except (LoadError, UsageError):
            raise
        except Exception as exc:  # transformers' own errors about this config
            raise LoadError(f"building {target} with transformers failed: {type(exc).__name__}: {_first_line(exc)}")
    return model.eval()  # as from_pretrained returns it


@contextlib.contextmanager
def offline_transformers(target: str):
    """``transformers`` imported and used offline and quietly; the environment and its logging restored after.

    HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set before the import (huggingface_hub reads them then), so even
    custom code run with --trust cannot reach the network through the hub client.
    """
    from modscope.load.extras import require

    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({name: "1" for name in names})
    verbosity = None
    try:
        transformers = require("transformers", "hf", f"{target} (a Hugging Face model)")
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield transformers
    finally:
        if verbosity is not None:
            transformers.logging.set_verbosity(verbosity)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _local_config(target: str) -> Path | None:
    """The config.json a local TARGET names: the file itself, or a folder's own when it is a HF config."""
    try:
        path = Path(target)
        if path.name == CONFIG and path.is_file():
            return path
        candidate = path / CONFIG
        if not path.is_dir() or not os.path.lexists(candidate):
            return None
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return None
    return candidate if _looks_like_hf(candidate) else None


def _looks_like_hf(path: Path) -> bool:
    """A folder's config.json is a HF one when it names a model_type or architectures (or cannot be read: then
    loading it says why). Any other config.json leaves the folder to the checkpoint readers."""
    from modscope.errors import CheckpointError

    try:
        document = read_config(path, (str(path.parent),))
    except (CheckpointError, LoadError):
        return True
    return "model_type" in document or "architectures" in document


def _config(transformers, src: HubSource, kwargs: dict[str, Any], custom: bool):
    if custom:
        return transformers.AutoConfig.from_pretrained(
            str(src.folder), trust_remote_code=True, local_files_only=True, **kwargs
        )
    model_type = src.config.get("model_type")
    mapping = transformers.CONFIG_MAPPING
    if not isinstance(model_type, str) or not model_type:
        raise LoadError(f"{src.config_path} names no model_type, so transformers cannot build it")
    if model_type not in mapping:
        raise LoadError(
            f"{src.config_path}: transformers {transformers.__version__} does not know model type {model_type!r} "
            "(a newer transformers may)"
        )
    config, unused = mapping[model_type].from_dict(dict(src.config), return_unused_kwargs=True, **kwargs)
    unknown = [k for k in kwargs if k in unused]
    if unknown:
        raise UsageError(
            f"--arg {', '.join(unknown)}: not an attribute of {type(config).__name__} (for a Hugging Face target, "
            "--arg overrides config.json entries)"
        )
    return config


def _model_factory(transformers, src: HubSource, config, custom: bool):
    """A callable config -> model: the architectures class, its auto_map class (--trust), else AutoModel."""
    architectures = src.config.get("architectures")
    name = architectures[0] if isinstance(architectures, list) and architectures else None
    if custom:
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        auto_map = src.config.get("auto_map") or {}
        refs = list(auto_map.values()) if isinstance(auto_map, dict) else []
        chosen = next((r for r in refs if isinstance(r, str) and r.endswith(f".{name}")), None)
        chosen = chosen or (auto_map.get("AutoModel") if isinstance(auto_map, dict) else None)
        if not isinstance(chosen, str):
            raise LoadError(f"{src.config_path}: auto_map names no model class for {name or 'AutoModel'}")
        cls = get_class_from_dynamic_module(chosen, str(src.folder), local_files_only=True)
    elif name is None:
        return transformers.AutoModel.from_config
    else:
        if not isinstance(name, str) or not name.isidentifier():
            raise LoadError(f"{src.config_path}: architectures[0] is not a class name: {name!r}")
        try:
            cls = getattr(transformers, name)
        except (AttributeError, ImportError, RuntimeError):
            cls = None
        if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
            raise LoadError(
                f"{src.config_path} names the architecture {name!r}, which transformers {transformers.__version__} "
                "does not have"
            )
    return getattr(cls, "_from_config", cls)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
