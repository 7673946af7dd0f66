"""Make a meta pass take the kernels a CPU pass would take where torch picks them by device, or say it cannot.

The training memory estimate of a CPU model is measured on a data-free meta twin (no values are computed,
``modscope.api.forward``). Autograd saves what the kernel it runs needs, and for two families torch picks
the kernel by the tensors' device, below anything a meta tensor can imitate:

- ``scaled_dot_product_attention``: on CPU, flash attention (it saves the output and a log-sum-exp) wherever
  ``torch._fused_sdp_choice`` allows it, else the math path (which saves the attention matrix); on meta,
  always the math path. ``CpuChoices`` asks ``_fused_sdp_choice`` with CPU tensors of the same shapes,
  strides and dtypes (allocated, never filled) and calls the kernel CPU would call, converting a boolean
  mask as CPU does.
- the recurrent kernels behind ``nn.LSTM``/``GRU``/``RNN`` (``torch.lstm`` and its siblings): on CPU they
  run through oneDNN, which saves a workspace, on meta through per-step cells. These cannot be imitated, so
  the twin is refused (``unsure``) and the caller measures on CPU instead.

Both are composite ops, decomposed before any dispatch mode sees them, and a ``TorchFunctionMode`` that
would see them costs ~3 us on every tensor call (a third of a resnet50 twin pass). So while a ``CpuChoices``
is active anywhere in the process, these ops have Python kernels at the ``AutogradMeta`` key (registered on
the first entry, removed on the last exit); outside an active ``CpuChoices`` (another thread, the user's own
meta code) those kernels run torch's own composite (``OpOverload.decompose``), exactly what would run
without them.
"""
from __future__ import annotations

import contextvars
import threading

import torch

_aten = torch.ops.aten
_SDPA = _aten.scaled_dot_product_attention.default
_RECURRENT = tuple(
    f"{name}.{overload}" for name in ("lstm", "gru", "rnn_tanh", "rnn_relu") for overload in ("input", "data")
) + ("lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell")
_FLASH_FOR_CPU = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_MATH, _FLASH = 0, 1  # torch's SDPBackend numbering, as _fused_sdp_choice returns it

_ACTIVE: contextvars.ContextVar["CpuChoices | None"] = contextvars.ContextVar("modscope_cpu_choices", default=None)
_LOCK = threading.Lock()
_registered: list = []  # [torch.library.Library, number of active CpuChoices] while any is active


class CpuChoices:
    """Inside, meta tensors take CPU's attention kernel; ``unsure`` names the first call it could not imitate.

    >>> with CpuChoices() as choices:
    ...     twin(meta_inputs)
    >>> choices.unsure  # None: the meta pass took the kernels a CPU pass takes
    """

    def __init__(self) -> None:
        self.unsure: str | None = None
        self._token = None

    def __enter__(self) -> "CpuChoices":
        with _LOCK:
            if not _registered:
                try:
                    _registered[:] = [_register(), 0]
                except Exception as exc:  # noqa: BLE001 - a torch without these keys: the twin stands aside
                    self.refuse(f"cannot register the imitating kernels ({type(exc).__name__})")
                    return self
            _registered[1] += 1
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc) -> None:
        if self._token is None:  # registration failed on entry: nothing to undo
            return
        _ACTIVE.reset(self._token)
        self._token = None
        with _LOCK:
            _registered[1] -= 1
            if _registered[1] == 0:
                _registered.pop(0)._destroy()
                _registered.clear()

    def refuse(self, why: str) -> None:
        self.unsure = self.unsure or why


_BOOLEAN_INDEXED = frozenset(
    op for op in (
        getattr(getattr(_aten, name, None), overload, None)
        for name, overload in (("index", "Tensor"), ("index_put", "default"), ("index_put_", "default"),
                               ("_index_put_impl_", "default"), ("_unsafe_index", "Tensor"),
                               ("_unsafe_index_put", "default"))
    ) if op is not None
)


# embedding_bag: meta's kernel sizes its offset2bag/bag_size outputs (which autograd saves) unlike CPU's
_UNLIKE_CPU = frozenset(
    op for op in (getattr(getattr(_aten, name, None), "default", None)
                  for name in ("_embedding_bag", "_embedding_bag_forward_only")) if op is not None
)
# norms keep their statistics in float32 on meta but in the input's precision on CPU for half inputs
_NORMS = frozenset(
    op for op in (getattr(getattr(_aten, name, None), "default", None)
                  for name in ("native_layer_norm", "native_batch_norm", "native_group_norm", "_native_batch_norm_legit",
                               "_native_batch_norm_legit_functional", "_fused_rms_norm")) if op is not None
)
_HALF = (torch.float16, torch.bfloat16)


def check_op(func, args) -> None:
    """Called by the meta pass's dispatch mode for every op: refuse the active twin where the op's result (or
    what autograd saves for it) depends on values meta does not have. Indexing with a boolean mask is that case:
    CPU turns the mask into the indices of its true elements (saving as many int64s as there are), while
    meta's kernel for an in-place masked write keeps the shape and runs without a word (wav2vec2's SpecAugment
    writes ``hidden[mask] = embedding``; its twin measured another graph)."""
    if func in _UNLIKE_CPU or (func in _NORMS and args and getattr(args[0], "dtype", None) in _HALF):
        choices = _ACTIVE.get()
        if choices is not None:
            choices.refuse(f"{func.__name__} (meta's kernel saves other tensors than CPU's here)")
        return
    if func in _BOOLEAN_INDEXED and len(args) > 1:
        choices = _ACTIVE.get()
        if choices is not None and any(
            isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1] or ()
        ):
            choices.refuse(f"{func.__name__} with a boolean mask (how many elements it selects is a value)")


def active() -> bool:
    """Is a ``CpuChoices`` active in this context (a meta twin's pass is running)?"""
    return _ACTIVE.get() is not None


def _register():
    library = torch.library.Library("aten", "IMPL")
    library.impl("scaled_dot_product_attention", _attention, "AutogradMeta")
    for name in _RECURRENT:
        library.impl(name, _recurrent(name), "AutogradMeta")
    return library


def _recurrent(name: str):
    packet, _, overload = name.partition(".")
    op = getattr(getattr(_aten, packet), overload or "default")

    def kernel(*args, **kwargs):
        choices = _ACTIVE.get()
        if choices is not None:
            choices.refuse(f"torch.{packet} (CPU runs recurrent layers through oneDNN, which meta cannot "
                           "imitate)")
        return op.decompose(*args, **kwargs)

    return kernel


def _attention(*args, **kwargs):
    choices = _ACTIVE.get()
    if choices is None:
        return _SDPA.decompose(*args, **kwargs)
    call = _attention_arguments(*args, **kwargs)
    q, k, v, mask = call["query"], call["key"], call["value"], call["attn_mask"]
    try:
        choice = int(torch._fused_sdp_choice(
            *(_cpu_like(t) for t in (q, k, v)), _cpu_like(mask) if mask is not None else None,
            call["dropout_p"], call["is_causal"], scale=call["scale"], enable_gqa=call["enable_gqa"],
        ))
    except Exception as exc:  # noqa: BLE001 - a combination CPU refuses: meta's math path would not say so
        choices.refuse(f"scaled_dot_product_attention ({type(exc).__name__} on CPU)")
        return _SDPA.decompose(*args, **kwargs)
    if choice == _MATH:
        return _SDPA.decompose(*args, **kwargs)
    if choice != _FLASH or _FLASH_FOR_CPU is None or q.dim() != 4:
        # meta's flash kernel sizes a 3-d call's log-sum-exp unlike CPU's (grouped-query calls go to the kernel
        # unrepeated, as on CPU: its flash kernel takes fewer key/value heads)
        choices.refuse(f"scaled_dot_product_attention (CPU backend {choice}, {q.dim()}-d)")
        return _SDPA.decompose(*args, **kwargs)
    if mask is not None and mask.dtype == torch.bool:  # CPU turns a boolean mask into an additive one first
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=mask.device).masked_fill(mask.logical_not(), float("-inf"))
    out, _ = _FLASH_FOR_CPU(q, k, v, call["dropout_p"], call["is_causal"], attn_mask=mask, scale=call["scale"])
    return out


def _attention_arguments(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                         enable_gqa=False) -> dict:
    return dict(query=query, key=key, value=value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                scale=scale, enable_gqa=enable_gqa)


def _cpu_like(t: torch.Tensor) -> torch.Tensor:
    """An unfilled CPU tensor with ``t``'s shape, strides, dtype and requires_grad (the choice reads no values)."""
    made = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype)
    return made.requires_grad_() if t.requires_grad and t.is_floating_point() else made
