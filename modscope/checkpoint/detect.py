"""What kind of checkpoint a path is, from its content (magic bytes), not only its name."""
from __future__ import annotations

import os
import pickletools
import zipfile

from modscope.checkpoint.guard import open_regular, read_at, regular_file
from modscope.checkpoint.safetensors import looks_like_safetensors
from modscope.errors import CheckpointError

SAFETENSORS = "safetensors"
TORCH = "torch"
LEGACY = "torch-legacy"
TORCHSCRIPT = "torchscript"
INDEX = "index"
DCP = "dcp"

_INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth", "model.bin")


def detect(path: str) -> tuple[str, str]:
    """(kind, file or folder to open). Folders: DCP, an index, or a single weights file inside."""
    if os.path.isdir(path):
        return _detect_folder(path)
    fd = open_regular(path)  # FIFOs, devices and sockets are refused before anything blocks on them
    try:
        size = os.fstat(fd).st_size
        head = read_at(fd, path, 0, min(size, 64))
    finally:
        os.close(fd)
    if size == 0:
        raise CheckpointError(f"{path} is empty")
    if head.startswith(b"PK\x03\x04"):
        return (TORCHSCRIPT if _is_torchscript(path) else TORCH), path
    if looks_like_safetensors(head):
        return SAFETENSORS, path
    if head.lstrip().startswith(b"{"):
        return INDEX, path
    if head[:1] == b"\x80":
        return LEGACY, path
    if path.endswith(".py"):
        from modscope.load.source_names import buildable

        classes, factories = buildable(path)
        named = f"; a model in it is named as {path}:{(classes or factories)[0]}" if classes or factories else ""
        raise CheckpointError(f"{path} is Python source, not a checkpoint{named}")
    raise CheckpointError(
        f"{path} is not a checkpoint modscope can read (expected a torch.save file, safetensors, a sharded "
        "index .json or a torch.distributed.checkpoint folder)"
    )


def _detect_folder(path: str) -> tuple[str, str]:
    """By the names inside; a known name that is not a regular file is refused by its reader, not skipped."""
    if os.path.lexists(os.path.join(path, ".metadata")):
        return DCP, path
    for name in _INDEX_NAMES:
        if os.path.lexists(os.path.join(path, name)):
            regular_file(os.path.join(path, name))
            return INDEX, os.path.join(path, name)
    for name in _SINGLE_NAMES:
        if os.path.lexists(os.path.join(path, name)):
            return detect(os.path.join(path, name))
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}")
    for suffix in (".index.json", ".safetensors"):
        found = [n for n in names if n.endswith(suffix)]
        if len(found) == 1:
            return detect(os.path.join(path, found[0]))
    raise CheckpointError(
        f"{path} is a folder without a checkpoint modscope recognizes (.metadata of torch.distributed.checkpoint, "
        f"*.index.json, or a single model.safetensors / pytorch_model.bin){_model_in_folder(path, names)}"
    )


def _model_in_folder(path: str, names: list[str]) -> str:
    """'; a model defined in a file there is named as FOLDER/file.py:Name' when one of its .py files defines one."""
    from modscope.load.source_names import buildable

    for name in names[:200]:
        if name.endswith(".py") and not name.startswith(("_", ".")):
            classes, factories = buildable(os.path.join(path, name))
            if classes or factories:
                return f"; a model defined in a file there is named as {os.path.join(path, name)}:{(classes or factories)[0]}"
    return ""


#: what Python's zipfile raises on a damaged or unusual archive (encrypted, unknown compression, bad sizes)
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError)


def _is_torchscript(path: str) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") for n in archive.namelist())
    except _ZIP_ERRORS:
        return False  # truncated or corrupt: the torch reader reports it


def holds_mapping(path: str) -> bool:
    """Whether a torch.save zip archive's top-level object is a dict (a checkpoint), judged from the pickle's
    first opcodes without unpickling anything. A whole pickled model answers False."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1)
            with archive.open(name) as f:
                data = f.read(4096)
    except (*_ZIP_ERRORS, StopIteration):
        return True  # corrupt: let the checkpoint reader say what is wrong
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("PROTO", "FRAME", "MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
                continue
            if op.name in ("EMPTY_DICT", "DICT"):
                return True
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(arg)
                continue
            if op.name == "GLOBAL":
                return arg.replace(" ", ".") in ("collections.OrderedDict", "builtins.dict")
            if op.name == "STACK_GLOBAL":
                return ".".join(strings[-2:]) in ("collections.OrderedDict", "builtins.dict")
            return False
    except (ValueError, EOFError):
        return True  # the window ended mid-opcode: only reached for odd pickles
    return True
