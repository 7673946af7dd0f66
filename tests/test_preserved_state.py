"""preserved_state puts back what an analysis disturbs, including a move or cast of the whole model."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

import modscope
from modscope.collect.hooks import StateNotRestoredWarning, preserved_state
from tests import mutating_models as pm
from tests.contract import assert_unchanged, snapshot


def _model_with_grads_and_a_shared_buffer() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    model[2].register_buffer("scale", model[1].running_var)  # one buffer object under two modules
    model[0].weight.grad = torch.ones(3, 3)
    return model


def test_a_cast_inside_comes_back_with_the_same_objects_grads_and_ties():
    # A cast, like a move to another device, puts new buffer objects into the modules and casts .grad too:
    # the CPU stand-in for what `--device cuda` does to a CPU model.
    model = _model_with_grads_and_a_shared_buffer()
    before = snapshot(model)
    with preserved_state(model):
        for p in model.parameters():
            p.grad = None  # as modscope does before a move: its own backward then makes grads of the new dtype
        model.double()
        model(torch.randn(4, 3, dtype=torch.float64)).sum().backward()  # train mode: running stats move
        assert model[1].running_mean.dtype == torch.float64 and model[0].weight.grad.dtype == torch.float64
    assert_unchanged(model, before)
    assert model[2].scale is model[1].running_var


def test_buffers_added_or_removed_inside_are_undone():
    model = _model_with_grads_and_a_shared_buffer()
    before = snapshot(model)
    with preserved_state(model):
        model[0].register_buffer("extra", torch.zeros(1))
        del model[1]._buffers["num_batches_tracked"]
    assert_unchanged(model, before)
    assert "extra" not in model[0]._buffers and "num_batches_tracked" in model[1]._buffers


# --- values and attributes a forward changes (models in tests/mutating_models.py) ---

ANALYSES = {
    "summary": lambda m, x: modscope.summary(m, inputs=x),
    "summary-train": lambda m, x: modscope.summary(m, inputs=x, train_mode=True),
    "grads": lambda m, x: modscope.grads(m, x),
    "nan": lambda m, x: modscope.find_nonfinite(m, x),
    "time": lambda m, x: modscope.time_layers(m, x, backward=True, warmup=0, repeat=1),
    "graph": lambda m, x: modscope.graph(m, x),
}


def _mutating_model(cls, training: bool) -> nn.Module:
    torch.manual_seed(0)
    model = cls().train(training)
    model(torch.randn(3, 4))  # the user's own call: attributes exist and hold the user's values
    return model


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("analysis", ANALYSES)
@pytest.mark.parametrize("cls", pm.MUTATING, ids=lambda c: c.__name__)
def test_analyses_undo_what_the_forward_changed(cls, analysis, training):
    model = _mutating_model(cls, training)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StateNotRestoredWarning)
        ANALYSES[analysis](model, torch.randn(2, 4))
    assert_unchanged(model, before)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("analysis", ANALYSES)
def test_a_forward_that_raises_after_mutating_is_undone(analysis, training):
    model = pm.MutatesThenRaises().train(training)
    before = snapshot(model)
    with pytest.raises(Exception, match="boom after mutating"):
        ANALYSES[analysis](model, torch.randn(2, 4))
    assert_unchanged(model, before)
    assert "cached" not in vars(model)


def test_spectral_norm_keeps_the_users_derived_weight_object():
    model = _mutating_model(pm.SpectralNormed, True)
    weight, u = model.lin.weight, model.lin.weight_u.clone()
    modscope.summary(model, inputs=torch.randn(2, 4))
    assert model.lin.weight is weight and torch.equal(model.lin.weight_u, u)


def test_version_counters_come_back_so_the_users_graph_still_backpropagates():
    model = pm.AddsUnderNoGrad()
    loss = model(torch.randn(2, 4)).sum()  # saves the weight for backward at its current version
    modscope.grads(model, torch.randn(2, 4))  # adds 1 in place again, which is undone
    loss.backward()  # raises "modified by an inplace operation" if the version counter moved


def test_values_the_forward_did_not_change_are_not_written():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    versions = [t._version for t in (*model.parameters(), *model.buffers())]
    modscope.summary(model, inputs=torch.randn(3, 4))
    assert [t._version for t in (*model.parameters(), *model.buffers())] == versions


def test_changes_made_under_inference_mode_and_functional_call_are_undone():
    model = pm.ScalesThroughData()
    before = snapshot(model)
    with torch.inference_mode(), preserved_state(model):
        model(torch.randn(2, 4))
    with preserved_state(model):
        torch.func.functional_call(model, dict(model.named_parameters()), (torch.randn(2, 4),))
    assert_unchanged(model, before)


def test_a_meta_pass_leaves_the_model_alone_and_warns_about_nothing():
    model = _mutating_model(pm.Caches, False)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StateNotRestoredWarning)
        modscope.summary(model, inputs=torch.randn(2, 4), device="meta")
    assert_unchanged(model, before)


def test_a_change_that_cannot_be_undone_is_reported():
    class SparseMask(nn.Module):
        def __init__(self):
            super().__init__()
            self.mask = torch.eye(4).to_sparse()  # no copy is kept of sparse tensors

        def forward(self, x):
            self.mask.mul_(2)
            return x

    with pytest.warns(StateNotRestoredWarning, match=r"SparseMask\.mask"):
        with preserved_state(SparseMask()) as model:
            model(torch.randn(2, 4))


def test_a_model_cast_and_changed_inside_gets_its_own_data_back():
    # The CPU stand-in for `--device cuda`: the pass runs on converted copies, which the forward changes.
    model = pm.ScalesThroughData()
    before, address = snapshot(model), model.w.data_ptr()
    with preserved_state(model):
        model.double()
        model(torch.randn(2, 4, dtype=torch.float64))
    assert_unchanged(model, before)
    assert model.w.data_ptr() == address  # the user's own storage, not a copy cast back


def test_python_and_numpy_generators_carry_between_carried_passes_and_are_put_back():
    import random

    import numpy as np

    class Draws(nn.Module):
        def forward(self, x):
            return x + random.random() + float(np.random.rand())

    model, x = Draws(), torch.zeros(1)
    random.seed(5)
    np.random.seed(5)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with preserved_state(model, carry=True):
        with preserved_state(model):
            first = model(x)
        with preserved_state(model):
            second = model(x)
    assert not torch.equal(first, second)  # the inner passes leave the generators advanced for each other
    assert random.getstate() == python_state
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]


# --- copy on write: big weights are copied only when an op writes them (collect/write_guard.py) ---


class BigWrites(nn.Module):
    """Weights written in place in the ways a forward can reach them."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.fc = nn.Linear(128, 256)
        self.untouched = nn.Linear(256, 128)
        self.emb = nn.Embedding(512, 64, max_norm=0.5)
        self.table = torch.randn(256, 128)  # a plain tensor attribute: copied on entry

    def forward(self, x):
        w = self.fc.weight
        if self.how == "through_data":
            w.data.mul_(2)
        elif self.how == "view":
            with torch.no_grad():
                w[0].add_(1)
        elif self.how == "out":
            torch.add(w.detach(), 1, out=w.data)
        elif self.how == "init":
            nn.init.normal_(w)
        elif self.how == "set":
            w.data.set_(torch.zeros(256, 128).untyped_storage())
        elif self.how == "attribute":
            self.table.zero_()
        elif self.how == "renorm":  # Embedding(max_norm=...) renormalises the rows it looks up, in place
            x = x + self.emb(torch.arange(8)).sum()
        return self.untouched(self.fc(x))


BIG_WRITES = ("through_data", "view", "out", "init", "set", "attribute", "renorm")


@pytest.mark.parametrize("how", BIG_WRITES)
def test_copy_on_write_puts_back_big_weights_written_in_place(how):
    model = BigWrites(how)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StateNotRestoredWarning)
        with preserved_state(model, copy_on_write=True):
            model(torch.randn(2, 128))
        modscope.summary(model, inputs=torch.randn(2, 128))
    assert_unchanged(model, before)  # parameters, buffers and tensor attributes, by value


def test_copy_on_write_copies_no_weight_a_pass_only_reads(monkeypatch):
    from modscope.collect import hooks

    copied = []
    real_copy = hooks._copy
    monkeypatch.setattr(hooks, "_copy", lambda data: copied.append(tuple(data.shape)) or real_copy(data))
    model = BigWrites("none")
    with preserved_state(model, copy_on_write=True):
        model(torch.randn(2, 128))
    # the tensor attribute and the small biases: big parameters are copied when written
    assert sorted(copied) == [(128,), (256,), (256, 128)]
    copied.clear()
    model.how = "through_data"
    with preserved_state(model, copy_on_write=True):
        model(torch.randn(2, 128))
    assert sorted(copied) == [(128,), (256,), (256, 128), (256, 128)]  # + the written weight, not the others
    copied.clear()
    with preserved_state(model):  # without copy_on_write every value is copied on entry
        pass
    assert len(copied) == 6  # 2 weights, 2 biases, the embedding and the attribute


def test_copy_on_write_still_copies_buffers_that_batch_norm_updates_without_saying_so():
    # native_batch_norm's schema does not mark its running statistics as written: buffers are copied on entry
    model = nn.Sequential(nn.Linear(8, 20000), nn.BatchNorm1d(20000)).train()
    before = snapshot(model)
    with preserved_state(model, copy_on_write=True):
        model(torch.randn(4, 8))
        assert not torch.equal(model[1].running_mean, torch.zeros(20000))  # the pass did update them
    assert_unchanged(model, before)


@pytest.mark.parametrize("flops", [True, False], ids=["flop_counter_watches", "own_mode"])
def test_the_recorded_pass_guards_writes_with_or_without_the_flop_counter(flops):
    model = BigWrites("through_data")
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StateNotRestoredWarning)
        modscope.summary(model, inputs=torch.randn(2, 128), flops=flops, memory=False)
    assert_unchanged(model, before)


def test_a_write_behind_the_dispatcher_is_reported_not_hidden():
    # a numpy view of a weight writes past every dispatch mode: no copy was made, so it cannot be put back,
    # but the checksum taken on entry sees it and says so (before copy-on-write, a copy restored it)
    class ThroughNumpy(nn.Module):
        def __init__(self):
            super().__init__()
            self.big, self.small = nn.Linear(128, 256), nn.Linear(256, 4)  # 128 KiB: deferred; 4 KiB: copied

        def forward(self, x):
            self.big.weight.detach().numpy()[0, 0] = 123.0
            self.small.weight.detach().numpy()[0, 0] = 123.0
            return self.small(self.big(x))

    model = ThroughNumpy()
    small = model.small.weight.detach().clone()
    with pytest.warns(StateNotRestoredWarning, match=r"Linear\.weight") as caught:
        modscope.summary(model, inputs=torch.randn(2, 128), memory=False)
    assert len(caught) == 1 and str(caught[0].message).count("Linear.weight") == 1  # the big weight alone
    assert torch.equal(model.small.weight, small)  # a small one is copied on entry, so it is put back
