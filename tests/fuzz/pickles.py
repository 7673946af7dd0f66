"""Pickles written opcode by opcode: torch tensor references with any numbers a file may claim, and
payloads (globals called through REDUCE/INST/OBJ) whose only effect, if ever run, is creating a marker file."""
from __future__ import annotations

import struct

PROTO2 = b"\x80\x02"
STOP = b"."
MARK = b"("
TUPLE = b"t"
REDUCE = b"R"
EMPTY_DICT = b"}"
EMPTY_LIST = b"]"
SETITEMS = b"u"
APPENDS = b"e"
NEWFALSE = b"\x89"
BINPERSID = b"Q"

#: torch storage class names per dtype (what torch.save writes in a persistent id).
STORAGE_CLASS = {
    "float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage", "bfloat16": "BFloat16Storage",
    "int64": "LongStorage", "int32": "IntStorage", "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage",
}  # fmt: skip


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def string(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(data)) + data


def integer(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def encode(value) -> bytes:
    """Opcodes pushing a plain value: bytes are taken as ready-made opcodes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"\x88" if value else NEWFALSE
    if isinstance(value, int):
        return integer(value)
    if isinstance(value, str):
        return string(value)
    if isinstance(value, tuple):
        return MARK + b"".join(encode(v) for v in value) + TUPLE
    if isinstance(value, list):
        return EMPTY_LIST + (MARK + b"".join(encode(v) for v in value) + APPENDS if value else b"")
    if isinstance(value, dict):
        return dict_(value.items())
    if value is None:
        return b"N"
    raise TypeError(f"cannot encode {type(value).__name__}")


def dict_(items) -> bytes:
    body = b"".join(encode(k) + encode(v) for k, v in items)
    return EMPTY_DICT + (MARK + body + SETITEMS if body else b"")


def call(module: str, name: str, *args) -> bytes:
    """``module.name(*args)`` through GLOBAL + REDUCE."""
    return glob(module, name) + encode(tuple(args)) + REDUCE


def whole(expr: bytes) -> bytes:
    return PROTO2 + expr + STOP


def tensor_ref(key: str, dtype: str, numel: int, size, stride=None, offset: int = 0, legacy: bool = False) -> bytes:
    """``torch._utils._rebuild_tensor_v2`` over a persistent storage id, exactly as torch.save writes it."""
    if stride is None:
        stride, step = [], 1
        for dim in reversed(size):
            stride.insert(0, step)
            step *= dim
    pid = ("storage", glob("torch", STORAGE_CLASS[dtype]), key, "cpu", numel) + ((None,) if legacy else ())
    ordered = glob("collections", "OrderedDict") + b")" + REDUCE
    args = MARK + encode(pid) + BINPERSID + encode(offset) + encode(tuple(size)) + encode(tuple(stride))
    return glob("torch._utils", "_rebuild_tensor_v2") + args + NEWFALSE + ordered + TUPLE + REDUCE


# --- payloads: each creates ``marker`` and nothing else ---------------------------------------------------


def payloads(marker: str) -> dict[str, bytes]:
    """Opcodes that, if unpickled by a plain unpickler, create ``marker``: one per way in."""
    touch = f"touch '{marker}'"
    code = f"open({marker!r}, 'w').close()"
    return {
        "os.system": call("os", "system", touch),
        "posix.system": call("posix", "system", touch),
        "builtins.exec": call("builtins", "exec", code),
        "builtins.eval": call("builtins", "eval", f"__import__('builtins').{code}"),
        "builtins.open": call("builtins", "open", marker, "w"),
        "subprocess.call": call("subprocess", "call", ["touch", marker]),
        "subprocess.Popen": call("subprocess", "Popen", ["touch", marker]),
        "inst.os.system": MARK + string(touch) + b"ios\nsystem\n",  # protocol 0 INST
        "obj.builtins.exec": MARK + glob("builtins", "exec") + string(code) + b"o",  # OBJ
        "getattr.os.system": glob("builtins", "getattr") + encode((call("builtins", "__import__", "os"), "system"))
        + REDUCE + encode((touch,)) + REDUCE,
    }


def marker_works(payload: bytes, marker: str) -> bool:
    """Unpickle ``payload`` with the plain unpickler (what --trust does) and say whether it made ``marker``:
    proves a payload is live, so the suite's "no marker" checks can fail."""
    import os
    import pickle
    import time

    if os.path.exists(marker):
        os.remove(marker)
    result = pickle.loads(whole(payload))
    if hasattr(result, "wait"):
        result.wait()
    elif hasattr(result, "close"):
        result.close()
    deadline = time.time() + 5
    while not os.path.exists(marker) and time.time() < deadline:
        time.sleep(0.01)
    return os.path.exists(marker)
