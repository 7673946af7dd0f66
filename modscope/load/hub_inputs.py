"""Inputs derived from what a model says it eats, so Hugging Face and timm models run without ``--input``.

Hugging Face models: their ``main_input_name`` from the config (token ids in ``[0, vocab_size)``, pixels of
the configured image size, Whisper's log-mel features, raw audio samples), plus decoder ids for
encoder-decoders and both towers for CLIP-like models. timm models: pixels of ``pretrained_cfg``'s input size.
``batch`` (default 1) and ``seq_len`` (default 128, capped at the model's positions) change the sizes.

>>> default_inputs(model, batch=2, seq_len=64)   # ModelInputs(kwargs={"input_ids": <2x64 int64>}) for GPT-2
"""
from __future__ import annotations

import inspect

import torch
import torch.nn as nn

from modscope.core.walk import visits
from modscope.errors import UsageError
from modscope.load.inputs import _SEED, ModelInputs, TensorSpec

DEFAULT_BATCH = 1
DEFAULT_SEQ_LEN = 128
#: raw-audio models (input_values) get this many samples by default: one second at 16 kHz
DEFAULT_SAMPLES = 16000


def can_derive(model: nn.Module) -> bool:
    """Whether ``default_inputs`` knows where to look for this model (a transformers or timm model)."""
    from modscope.load.hub_keys import is_transformers_model

    return is_transformers_model(model) or isinstance(getattr(model, "pretrained_cfg", None), dict)


def default_inputs(
    model: nn.Module, *, batch: int | None = None, seq_len: int | None = None, device="cpu"
) -> ModelInputs | None:
    """The input the model's config describes, or None for a model without one (then ``--input`` is needed)."""
    from modscope.load.hub_keys import is_transformers_model

    batch = _positive(batch, "--batch") or DEFAULT_BATCH
    seq_len = _positive(seq_len, "--seq-len")
    generator = torch.Generator().manual_seed(_SEED)
    if is_transformers_model(model):
        specs = _hf_specs(model, batch, seq_len)
        return ModelInputs((), {name: spec.make(device, generator) for name, spec in specs.items()})
    if isinstance(getattr(model, "pretrained_cfg", None), dict):
        return ModelInputs((_timm_spec(model, batch).make(device, generator),), {})
    return None


def describe(inputs: ModelInputs) -> str:
    """'input_ids=1x32:int64, decoder_input_ids=1x16:int64' (for messages and docs)."""
    named = [("", t) for t in inputs.args] + list(inputs.kwargs.items())
    return ", ".join(
        f"{name + '=' if name else ''}{'x'.join(map(str, t.shape))}:{str(t.dtype).removeprefix('torch.')}"
        for name, t in named
    )


def _hf_specs(model, batch: int, seq_len: int | None) -> dict[str, TensorSpec]:
    config = model.config
    accepted = _parameters(model)
    main = getattr(model, "main_input_name", "input_ids")
    float_dtype = _float_dtype(model)
    specs: dict[str, TensorSpec] = {}
    if main == "input_ids" or _two_towers(model, accepted):
        specs["input_ids"] = _token_ids(_text_config(config), batch, seq_len, "input_ids", _position_room(model))
    if main == "pixel_values" or _two_towers(model, accepted):
        specs["pixel_values"] = _pixels(getattr(config, "vision_config", None) or config, batch, float_dtype)
    if main == "input_features":
        bins, positions = getattr(config, "num_mel_bins", None), getattr(config, "max_source_positions", None)
        if not (isinstance(bins, int) and isinstance(positions, int)):
            raise UsageError(_cannot(model, "input_features without num_mel_bins/max_source_positions"))
        specs["input_features"] = TensorSpec((batch, bins, 2 * positions), float_dtype)  # Whisper: 2 frames a position
    if main == "input_values":
        specs["input_values"] = TensorSpec((batch, seq_len or DEFAULT_SAMPLES), float_dtype)
    if not specs:
        raise UsageError(_cannot(model, f"its main input {main!r}"))
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in accepted:
        decoder = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        specs["decoder_input_ids"] = _token_ids(decoder, batch, seq_len, "decoder_input_ids")
    return specs


def _timm_spec(model, batch: int) -> TensorSpec:
    size = model.pretrained_cfg.get("input_size")
    if not (isinstance(size, (tuple, list)) and len(size) == 3 and all(isinstance(s, int) and s > 0 for s in size)):
        raise UsageError(_cannot(model, "no input_size in its pretrained_cfg"))
    built = _patch_grid_size(model)
    if built is not None:  # built for another size than the pretrained one (img_size=...): that size
        size = (size[0], *built)
    return TensorSpec((batch, *size), _float_dtype(model))


def _patch_grid_size(model: nn.Module) -> tuple[int, int] | None:
    """The image size a timm patch embedding was built for (ViT, DeiT, Swin, Mixer take no other unless made
    with ``dynamic_img_size``), or None for models that take any size."""
    for module in (v.module for v in visits(model)):
        size = getattr(module, "img_size", None)
        if type(module).__name__ == "PatchEmbed" and isinstance(size, tuple) and len(size) == 2:
            if all(isinstance(s, int) and s > 0 for s in size) and not getattr(module, "dynamic_img_size", False):
                return size
    return None


def _token_ids(config, batch: int, seq_len: int | None, name: str, room: int | None = None) -> TensorSpec:
    vocab = getattr(config, "vocab_size", None)
    if not isinstance(vocab, int) or vocab < 1:
        raise UsageError(f"cannot make {name}: the config gives no vocab_size (give --input/--kwarg)")
    limits = [v for v in (_max_positions(config), room) if v]
    limit = min(limits) if limits else None
    length = seq_len or (min(DEFAULT_SEQ_LEN, limit) if limit else DEFAULT_SEQ_LEN)
    if limit and length > limit:
        raise UsageError(f"--seq-len {length}: the model takes at most {limit} positions")
    return TensorSpec((batch, length), torch.int64, 0, vocab)


def _pixels(config, batch: int, dtype: torch.dtype) -> TensorSpec:
    size = getattr(config, "image_size", None)
    height, width = (size, size) if isinstance(size, int) else tuple(size or ())[:2] or (None, None)
    channels = getattr(config, "num_channels", 3)
    if not all(isinstance(v, int) and v > 0 for v in (height, width, channels)):
        raise UsageError("cannot make pixel_values: the config gives no image_size (give --input/--kwarg)")
    return TensorSpec((batch, channels, height, width), dtype)


def _text_config(config):
    if hasattr(config, "get_text_config"):
        return config.get_text_config()
    return getattr(config, "text_config", None) or config


def _position_room(model: nn.Module) -> int | None:
    """Positions a text model can really embed when they are counted from past a padding index (RoBERTa and
    its kin number positions from ``padding_idx + 1``: 512 rows hold 510 tokens), else None."""
    for visit in visits(model):
        table, padding = getattr(visit.module, "position_embeddings", None), getattr(visit.module, "padding_idx", None)
        if isinstance(table, nn.Embedding) and isinstance(padding, int) and not isinstance(padding, bool):
            return table.num_embeddings - padding - 1
    return None


def _max_positions(config) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_target_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _two_towers(model, accepted: set[str]) -> bool:
    """CLIP-like: text and image towers, and a forward that takes both."""
    towers = hasattr(model, "get_text_features") and hasattr(model, "get_image_features")
    return towers and {"input_ids", "pixel_values"} <= accepted


def _parameters(model) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _float_dtype(model) -> torch.dtype:
    dtypes = [p.dtype for p in model.parameters() if p.is_floating_point()]
    return dtypes[0] if dtypes else torch.float32


def _positive(value: int | None, option: str) -> int | None:
    if value is not None and value < 1:
        raise UsageError(f"{option} must be at least 1")
    return value


def _cannot(model, why: str) -> str:
    return f"cannot derive a default input for {type(model).__name__} ({why}): give --input, --kwarg or --inputs"
