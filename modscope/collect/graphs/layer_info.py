"""A module's key hyper-parameters in a few characters: ``Conv2d 3->64 k7 s2``, ``Linear 512->10``.

Used by graph nodes (and any view that wants a one-line description of a layer). Only a module's own
attributes are read; nothing runs. Unknown module types fall back to their class name.

>>> describe(nn.Conv2d(3, 64, 7, stride=2, padding=3))
'Conv2d 3->64 k7 s2 p3'
"""
from __future__ import annotations

import torch.nn as nn
from torch.nn.parameter import is_lazy


def describe(module: nn.Module) -> str:
    """``Type hyper-params`` (or just ``Type`` when nothing short is worth saying)."""
    name = type(module).__name__
    detail = hyperparams(module)
    return f"{name} {detail}" if detail else name


def hyperparams(module: nn.Module) -> str:
    """The hyper-parameter part alone: ``3->64 k7 s2``; ``""`` when none is known."""
    for kind, fn in _DESCRIBERS:
        if isinstance(module, kind):
            try:
                return fn(module)
            except Exception:  # odd subclasses (lazy modules, missing attributes): a description is decoration
                return ""
    return ""


def _tuple_str(value, prefix: str, skip) -> str:
    """(7, 7) -> 'k7'; (3, 5) -> 'k3x5'; '' when equal to ``skip`` (the default value)."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if all(v == skip for v in values):
        return ""
    if len(set(values)) == 1:
        return f"{prefix}{values[0]}"
    return prefix + "x".join(str(v) for v in values)


def _conv(m) -> str:
    in_ch = "?" if is_lazy(m.weight) else m.in_channels
    parts = [f"{in_ch}->{m.out_channels}", _tuple_str(m.kernel_size, "k", None)]
    parts.append(_tuple_str(m.stride, "s", 1))
    if isinstance(m.padding, str):
        parts.append("" if m.padding == "valid" else f"p={m.padding}")
    else:
        parts.append(_tuple_str(m.padding, "p", 0))
    parts.append(_tuple_str(m.dilation, "d", 1))
    if m.groups != 1:
        parts.append("dw" if m.groups == m.in_channels == m.out_channels else f"g{m.groups}")
    return " ".join(p for p in parts if p)


def _linear(m) -> str:
    in_features = "?" if is_lazy(m.weight) else m.in_features
    return f"{in_features}->{m.out_features}"


def _bilinear(m) -> str:
    return f"{m.in1_features},{m.in2_features}->{m.out_features}"


def _norm(m) -> str:
    return str(m.num_features)


def _layer_norm(m) -> str:
    return "x".join(str(d) for d in m.normalized_shape)


def _group_norm(m) -> str:
    return f"{m.num_channels} g{m.num_groups}"


def _embedding(m) -> str:
    return f"{m.num_embeddings}x{m.embedding_dim}"


def _mha(m) -> str:
    return f"d{m.embed_dim} h{m.num_heads}"


def _rnn(m) -> str:
    parts = [f"{m.input_size}->{m.hidden_size}"]
    if m.num_layers != 1:
        parts.append(f"x{m.num_layers}")
    if m.bidirectional:
        parts.append("bi")
    return " ".join(parts)


def _dropout(m) -> str:
    return f"p{m.p:g}"


def _pool(m) -> str:
    parts = [_tuple_str(m.kernel_size, "k", None), _tuple_str(m.stride, "s", m.kernel_size)]
    return " ".join(p for p in parts if p)


def _adaptive_pool(m) -> str:
    size = m.output_size
    return "->" + ("x".join(str(s) for s in size) if isinstance(size, (tuple, list)) else str(size))


def _transformer_layer(m) -> str:
    attn = m.self_attn
    return f"d{attn.embed_dim} h{attn.num_heads} ff{m.linear1.out_features}"


def _upsample(m) -> str:
    size = f"->{m.size}" if m.size is not None else f"x{m.scale_factor}"
    return f"{size} {m.mode}"


def _flatten(m) -> str:
    return f"{m.start_dim}..{m.end_dim}" if (m.start_dim, m.end_dim) != (1, -1) else ""


# First match wins: subclasses before their bases.
_DESCRIBERS: tuple = (
    (nn.modules.conv._ConvNd, _conv),
    (nn.Linear, _linear),
    (nn.Bilinear, _bilinear),
    (nn.modules.batchnorm._NormBase, _norm),
    (nn.LayerNorm, _layer_norm),
    (nn.GroupNorm, _group_norm),
    (nn.Embedding, _embedding),
    (nn.EmbeddingBag, _embedding),
    (nn.MultiheadAttention, _mha),
    (nn.RNNBase, _rnn),
    (nn.modules.dropout._DropoutNd, _dropout),
    (nn.modules.pooling._MaxPoolNd, _pool),
    (nn.modules.pooling._AvgPoolNd, _pool),
    (nn.modules.pooling._AdaptiveAvgPoolNd, _adaptive_pool),
    (nn.modules.pooling._AdaptiveMaxPoolNd, _adaptive_pool),
    (nn.TransformerEncoderLayer, _transformer_layer),
    (nn.TransformerDecoderLayer, _transformer_layer),
    (nn.Upsample, _upsample),
    (nn.Flatten, _flatten),
)
