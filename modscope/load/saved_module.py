"""A TorchScript archive or a module saved whole with ``torch.save(model)`` as a TARGET: code, so only with
``trust``; every archive is checked (a regular file, sound records, its pickle within the cap) before torch
reads it."""
from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from modscope.errors import LoadError, UnsafeLoadError
from modscope.load.user_errors import describe_exception


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a code/ folder and constants.pkl."""
    try:
        if not path.is_file() or not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False  # not a readable archive: torch.load below says what is wrong


def load_saved_module(path: Path, *, trust: bool = False) -> nn.Module:
    """A TorchScript archive or a module saved whole with ``torch.save(model)``; both only with ``trust``
    (loading either runs code from the file)."""
    if is_torchscript(path):
        if not trust:
            from modscope.checkpoint.torchscript import refusal

            raise UnsafeLoadError(refusal(str(path)))
        try:
            with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript deprecated; the file is what it is
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise LoadError(f"cannot load TorchScript archive {path}: {describe_exception(exc, None)}")
    if path.is_dir():
        inner = _torchscript_in(path)
        if inner is not None:
            return load_saved_module(inner, trust=trust)
        raise LoadError(f"{path} is a directory, not a model: give path/to/file.py:Name or a saved model file")
    _check_archive(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust:
            raise UnsafeLoadError(
                f"{path} holds pickled Python objects (such as a whole model saved with torch.save(model)); "
                "loading it would run code from the file. Pass --trust only if you trust its source"
            ) from exc
        obj = _load_trusted(path)
    except Exception as exc:
        raise LoadError(f"cannot read {path}: {describe_exception(exc, None)}")
    if isinstance(obj, nn.Module):
        return obj
    raise LoadError(
        f"{path} holds a {type(obj).__name__} (a checkpoint or state_dict), not a model: "
        "give the model as path/to/file.py:Name"
    )


def _check_archive(path: Path) -> None:
    """Before torch reads a zip archive: a regular file whose records are sound and whose pickle is within
    modscope's cap and inflates to what its header declares (a 1 MB file can inflate a 1 GiB pickle; torch
    would inflate it into memory first)."""
    from modscope.checkpoint.guard import regular_file
    from modscope.checkpoint.torchfile import MAX_PICKLE_BYTES
    from modscope.checkpoint.ziparchive import ZipArchive

    regular_file(str(path))
    if not zipfile.is_zipfile(path):
        return  # the legacy format: torch reads it as a stream
    archive = ZipArchive(str(path))
    archive.read_bytes(archive.root() + "data.pkl", limit=MAX_PICKLE_BYTES, what="pickle")  # inflated and CRC-checked


def _torchscript_in(folder: Path) -> Path | None:
    """The TorchScript archive a checkpoint folder's detection picks (``run/model.pt``), if that is what it picks."""
    from modscope.checkpoint import detect
    from modscope.errors import CheckpointError

    try:
        kind, found = detect.detect(str(folder))
    except CheckpointError:
        return None
    return Path(found) if kind == detect.TORCHSCRIPT else None


def _load_trusted(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        raise LoadError(
            f"cannot unpickle {path}: it names a class in module {exc.name!r}, which is not importable from here: "
            "run modscope from the folder that holds that module (or install it)"
        )
    except Exception as exc:
        raise LoadError(f"cannot unpickle {path}: {describe_exception(exc, None)}")
