"""The training memory estimate of a CPU model is measured on a data-free meta twin: it must equal what the
same training pass measures on the model itself, on every bundled example and every real zoo model, and the
twin must stand aside (the model itself is measured) wherever it cannot imitate CPU."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import modscope
from modscope.api import forward as forward_api
from tests.contract import assert_unchanged, snapshot


def _with_and_without_twin(model, inputs, monkeypatch):
    """(memory estimate and unused parameters with the twin, the same measured on the model, twin used?)"""
    used = []
    make = forward_api._Runner.twin_for_saved

    def spy(self):
        twin = make(self)
        if twin is not None:
            original = twin.measure_saved

            def measure(**kwargs):
                got = original(**kwargs)
                used.append(got[0] is not None)
                return got

            twin.measure_saved = measure
        return twin

    monkeypatch.setattr(forward_api._Runner, "twin_for_saved", spy)
    monkeypatch.setenv(forward_api.TWIN_ENV, "always")  # small test models would otherwise be measured for real
    before = snapshot(model)
    fast = modscope.summary(model, inputs=inputs).forward
    assert_unchanged(model, before)
    monkeypatch.setenv(forward_api.TWIN_ENV, "off")
    real = modscope.summary(model, inputs=inputs).forward
    memory = fast.memory
    if memory is not None:  # the one difference: the twin's estimate says where it was measured
        assert (forward_api.TWIN_NOTE in memory.assumptions) == any(used)
        kept = tuple(a for a in memory.assumptions if a != forward_api.TWIN_NOTE)
        memory = dataclasses.replace(memory, assumptions=kept)
    return (memory, fast.unused_parameters), (real.memory, real.unused_parameters), any(used)


def _example_ids():
    from examples.catalog import EXAMPLES

    return [e.name for e in EXAMPLES]


# Examples whose Python control flow reads values (a while loop on a norm): the twin fails, the model is measured
DATA_DEPENDENT = {"fixed_hidden_mlp", "chimera"}


@pytest.mark.parametrize("name", _example_ids())
def test_every_example_gets_the_same_estimate_from_the_twin(name, monkeypatch):
    from examples.catalog import get
    from modscope.load.inputs import build_inputs

    example = get(name)
    if "needs_torchvision" in example.notes:
        pytest.importorskip("torchvision")
    model = example.build()
    inputs = build_inputs(example.inputs, [f"{k}={v}" for k, v in example.kwargs])
    fast, real, used = _with_and_without_twin(model, inputs, monkeypatch)
    assert fast == real
    assert used == (name not in DATA_DEPENDENT and "data_dependent" not in example.notes), "twin used?"


def _zoo():
    from tests.real_zoo import ZOO

    return ZOO


@pytest.mark.slow
@pytest.mark.parametrize("entry", _zoo(), ids=lambda e: e.name)
def test_every_real_zoo_model_gets_the_same_estimate_from_the_twin(entry, monkeypatch):
    if entry.family == "timm":
        pytest.importorskip("timm")
    if entry.family == "hf":
        pytest.importorskip("transformers")
    model, inputs = entry.build()
    fast, real, _ = _with_and_without_twin(model, inputs, monkeypatch)
    assert fast == real


class Attention(nn.Module):
    def __init__(self, **options):
        super().__init__()
        self.qkv = nn.Linear(32, 96)
        self.options = options

    def forward(self, x, mask=None):
        q, k, v = self.qkv(x).view(x.shape[0], x.shape[1], 3, 4, 8).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **self.options)


ATTENTION = [
    ({}, None),
    ({"is_causal": True}, None),
    ({}, torch.rand(16, 16) > 0.3),  # a boolean mask, which CPU turns into an additive one
    ({}, torch.randn(1, 1, 16, 16)),
    ({"dropout_p": 0.1}, None),
]


@pytest.mark.parametrize("options, mask", ATTENTION, ids=["plain", "causal", "bool_mask", "float_mask", "dropout"])
def test_attention_takes_cpus_kernel_on_the_twin(options, mask, monkeypatch):
    # CPU runs flash attention (saves the output and a log-sum-exp), meta the math path (the attention matrix):
    # without imitating CPU's choice the twin's estimate would be 2-3x the real one
    inputs = (torch.randn(2, 16, 32),) if mask is None else (torch.randn(2, 16, 32), mask)
    fast, real, used = _with_and_without_twin(Attention(**options), inputs, monkeypatch)
    assert used and fast == real


@pytest.mark.parametrize("layer", [nn.LSTM(8, 16, 2), nn.GRU(8, 16), nn.RNN(8, 16)], ids=["lstm", "gru", "rnn"])
def test_recurrent_layers_are_measured_on_the_model_itself(layer, monkeypatch):
    # CPU's oneDNN kernels save a workspace that meta's per-step cells do not: the twin refuses, so both agree
    fast, real, used = _with_and_without_twin(layer, (torch.randn(5, 3, 8),), monkeypatch)
    assert not used and fast == real


def test_the_attention_kernels_are_gone_after_the_pass():
    q = torch.randn(1, 2, 8, 4, device="meta", requires_grad=True)
    modscope.summary(Attention(), inputs=torch.randn(2, 16, 32))
    assert "Flash" not in type(F.scaled_dot_product_attention(q, q, q).grad_fn).__name__  # meta's own math path


def _saved_and_shape(module, *tensors):
    from modscope.collect.forward.memory import SavedTensors

    saved = SavedTensors(module)
    with saved.hooks():
        out = module(*tensors)
    return dict(saved.by_dtype), tuple(out.shape), out.stride()


class _Sdpa(nn.Module):
    def __init__(self, **options):
        super().__init__()
        self.options = options

    def forward(self, q, k, v, mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **self.options)


def test_the_imitated_attention_saves_what_cpu_saves_across_its_options():
    import itertools

    from modscope.collect.forward.cpu_choices import CpuChoices

    compared = 0
    grid = itertools.product(
        [torch.float32, torch.bfloat16], [(2, 4, 16, 8), (1, 4, 7, 64), (4, 16, 32)], [None, 2],
        [None, "bool", "float"],
        [False, True], [0.0, 0.1], [False, True], [False, True],
    )
    for dtype, shape, kv_heads, mask_kind, causal, dropout, gqa, transposed in grid:
        if (kv_heads and len(shape) != 4) or (mask_kind and causal):
            continue
        g = torch.Generator().manual_seed(0)
        q = torch.randn(*shape, dtype=dtype, generator=g)
        if transposed and len(shape) == 4:  # heads and sequence swapped in memory, as after a view + transpose
            q = torch.randn(shape[0], shape[2], shape[1], shape[3], dtype=dtype, generator=g).transpose(1, 2)
        kv_shape = (shape[0], kv_heads, *shape[2:]) if kv_heads else shape
        k, v = torch.randn(*kv_shape, dtype=dtype, generator=g), torch.randn(*kv_shape, dtype=dtype, generator=g)
        length = shape[-2]
        mask = {None: None, "bool": torch.rand(length, length, generator=g) > 0.3,
                "float": torch.randn(length, length, dtype=dtype, generator=g)}[mask_kind]
        tensors = [t.requires_grad_() for t in (q, k, v)] + ([mask] if mask is not None else [])
        module = _Sdpa(is_causal=causal, dropout_p=dropout, enable_gqa=gqa)
        try:
            on_cpu = _saved_and_shape(module, *tensors)
        except RuntimeError as exc:  # a combination torch refuses on CPU
            on_cpu = type(exc)
        metas = [t.detach().to("meta").requires_grad_(t.requires_grad) for t in tensors]
        with CpuChoices() as choices:
            try:
                on_twin = _saved_and_shape(module, *metas)
            except RuntimeError as exc:
                on_twin = type(exc)
        if choices.unsure is None:  # where the twin does not refuse, it saves what CPU saves
            assert on_twin == on_cpu, (dtype, shape, kv_heads, mask_kind, causal, dropout, gqa, transposed)
            compared += 1
    assert compared > 250  # most combinations are imitated (3-d calls are refused)


def test_a_masked_write_refuses_the_twin(monkeypatch):
    class SpecAugmentLike(nn.Module):  # wav2vec2 writes an embedding into the positions of a random mask
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.masked = nn.Parameter(torch.randn(8))

        def forward(self, x):
            h = self.fc(x)
            h[torch.tensor([[True, False, True, False]])] = self.masked
            return h

    fast, real, used = _with_and_without_twin(SpecAugmentLike(), (torch.randn(1, 4, 8),), monkeypatch)
    assert not used and fast == real


def test_the_report_says_where_training_activations_were_measured(monkeypatch):
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    monkeypatch.setenv(forward_api.TWIN_ENV, "always")
    twin = modscope.summary(model, inputs=torch.randn(4, 8)).forward.memory
    assert forward_api.TWIN_NOTE in twin.assumptions
    monkeypatch.setenv(forward_api.TWIN_ENV, "off")
    real = modscope.summary(model, inputs=torch.randn(4, 8)).forward.memory
    assert forward_api.TWIN_NOTE not in real.assumptions and real.activations == twin.activations


def test_deterministic_algorithms_measure_on_the_model_itself(monkeypatch):
    # torch's Python takes another interpolation kernel off CPU under deterministic algorithms (meta is off CPU)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Upsample(scale_factor=2, mode="bilinear"))
    torch.use_deterministic_algorithms(True)
    try:
        fast, real, used = _with_and_without_twin(model, (torch.randn(1, 3, 16, 16),), monkeypatch)
    finally:
        torch.use_deterministic_algorithms(False)
    assert not used and fast == real


def test_the_twin_is_chosen_where_it_costs_less(monkeypatch):
    # by the recorded pass's FLOPs per module call: a tiny MLP is measured for real, a wide one on the twin
    def twin_used(width: int) -> bool:
        model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))
        return forward_api.TWIN_NOTE in modscope.summary(model, inputs=torch.randn(8, width)).forward.memory.assumptions

    assert not twin_used(16) and twin_used(1024)  # 2*8*16*16 FLOPs a Linear call vs 2*8*1024*1024
    monkeypatch.setenv(forward_api.TWIN_ENV, "off")
    assert not twin_used(1024)


def test_an_unknown_twin_setting_is_refused(monkeypatch):
    from modscope.errors import UsageError

    monkeypatch.setenv(forward_api.TWIN_ENV, "sometimes")
    with pytest.raises(UsageError, match="use auto, off or always"):
        modscope.summary(nn.Linear(4, 4), inputs=torch.randn(2, 4))


class AttentionThenData(nn.Module):
    """Attention, then Python control flow on a value: the twin's pass fails after its kernels were in place."""

    def __init__(self):
        super().__init__()
        self.attention = Attention()

    def forward(self, x):
        y = self.attention(x)
        if y.sum() > 0:  # meta tensors hold no value: the twin fails here, the model itself is measured
            return y * 2
        return y


def test_the_attention_kernels_are_gone_after_a_twin_that_failed(monkeypatch):
    fast, real, used = _with_and_without_twin(AttentionThenData(), (torch.randn(2, 16, 32),), monkeypatch)
    assert not used and fast == real
    q = torch.randn(1, 2, 8, 4, device="meta", requires_grad=True)
    assert "Flash" not in type(F.scaled_dot_product_attention(q, q, q).grad_fn).__name__


def test_twins_in_two_threads_measure_what_one_does(monkeypatch):
    import threading

    monkeypatch.setenv(forward_api.TWIN_ENV, "always")
    model, x = Attention(), torch.randn(2, 16, 32)
    alone = modscope.summary(model, inputs=x).forward.memory
    results, errors = [], []

    def run():
        try:
            for _ in range(3):
                results.append(modscope.summary(Attention(), inputs=x).forward.memory.activations)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [alone.activations] * 6
    q = torch.randn(1, 2, 8, 4, device="meta", requires_grad=True)
    assert "Flash" not in type(F.scaled_dot_product_attention(q, q, q).grad_fn).__name__


def test_a_torch_that_refuses_the_kernels_measures_on_the_model(monkeypatch):
    from modscope.collect.forward import cpu_choices

    def refuse():
        raise RuntimeError("no such dispatch key")

    monkeypatch.setattr(cpu_choices, "_register", refuse)
    fast, real, used = _with_and_without_twin(Attention(), (torch.randn(2, 16, 32),), monkeypatch)
    assert not used and fast == real


# Found by a review: each measured another estimate on the twin than on the model, before its fix
class StopGradient(nn.Module):  # a and a.detach() share memory: one storage, counted once (meta keys by storage)
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 64)

    def forward(self, x):
        a = self.fc(x)
        return torch.sin(a) * a.detach()


class Bag(nn.Module):  # meta's embedding_bag sizes its saved offset2bag/bag_size unlike CPU's: refused
    def __init__(self):
        super().__init__()
        self.bag, self.fc = nn.EmbeddingBag(100, 16, mode="mean"), nn.Linear(16, 32)

    def forward(self, x):
        return self.fc(self.bag(x))


class Cell(nn.Module):  # the recurrent cells take other kernels on CPU: refused
    def __init__(self, kind):
        super().__init__()
        self.cell = kind(32, 32)

    def forward(self, x):
        out = self.cell(x)
        return out[0] if isinstance(out, tuple) else out


REVIEW_CASES = {
    "detach": (StopGradient, lambda: torch.randn(8, 64)),
    "embedding_bag": (Bag, lambda: torch.randint(0, 100, (8, 4))),
    "lstm_cell": (lambda: Cell(nn.LSTMCell), lambda: torch.randn(8, 32)),
    "gru_cell": (lambda: Cell(nn.GRUCell), lambda: torch.randn(8, 32)),
    "bfloat16": (lambda: nn.Sequential(nn.Linear(32, 32), nn.LayerNorm(32)).bfloat16(),
                 lambda: torch.randn(8, 32).bfloat16()),
    "bfloat16_conv_bn": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)).bfloat16(),
                         lambda: torch.randn(2, 3, 8, 8).bfloat16()),
}


@pytest.mark.parametrize("case", REVIEW_CASES)
def test_what_a_review_found_measures_the_same(case, monkeypatch):
    make, inputs = REVIEW_CASES[case]
    torch.manual_seed(0)
    fast, real, used = _with_and_without_twin(make(), (inputs(),), monkeypatch)
    assert fast == real
    assert used == (case == "detach")
