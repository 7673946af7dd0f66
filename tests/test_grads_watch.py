"""``modscope.watch_gradients``: per-step history over real training loops, without changing the training."""
from __future__ import annotations

import contextlib
import copy
import json
import math

import pytest
import torch
import torch.nn as nn

import modscope
from modscope.render.json import dumps
from modscope.reports import GradStatus
from tests import training_models as tm


def tensor_hooks(model: nn.Module) -> list:
    """Every tensor-level hook left on the model's parameters."""
    left = []
    for name, p in model.named_parameters():
        for table in ("_backward_hooks", "_post_accumulate_grad_hooks"):
            if getattr(p, table, None):
                left.append((name, table))
    return left


def train(model, *, steps=4, accumulate=1, optimizer="sgd", watch=None, seed=0):
    """A deterministic training loop with gradient accumulation; returns the watch (if any)."""
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    ctx = watch(model, opt) if watch else contextlib.nullcontext()
    with ctx as w:
        for _ in range(steps):
            for _ in range(accumulate):
                x = torch.randn(6, 8, generator=gen)
                y = torch.randint(0, 2, (6,), generator=gen)
                nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    return w


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("step_on", ["backward", "optimizer"])
def test_watched_training_equals_unwatched(optimizer, step_on):
    torch.manual_seed(0)
    watched = tm.InplaceReLU()
    plain = copy.deepcopy(watched)

    def watch(model, opt):
        return modscope.watch_gradients(model, optimizer=opt if step_on == "optimizer" else None)

    w = train(watched, steps=5, accumulate=3, optimizer=optimizer, watch=watch)
    train(plain, steps=5, accumulate=3, optimizer=optimizer)
    for (name, a), b in zip(watched.named_parameters(), plain.parameters()):
        assert torch.equal(a, b), name
    assert w.steps == (15 if step_on == "backward" else 5)
    assert not tensor_hooks(watched)


def test_grads_seen_by_user_are_untouched():
    torch.manual_seed(0)
    model = tm.InplaceReLU()
    twin = copy.deepcopy(model)
    x = torch.randn(4, 8)
    with modscope.watch_gradients(model):
        model(x).sum().backward()
        model(x).pow(2).sum().backward()  # accumulates
    twin(x).sum().backward()
    twin(x).pow(2).sum().backward()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a.grad, b.grad)


def test_history_and_running_stats():
    torch.manual_seed(0)
    model = nn.Linear(3, 1, bias=False)
    norms = []
    with modscope.watch_gradients(model) as watch:
        for scale in (1.0, 2.0, 4.0):
            model.zero_grad()
            (model(torch.ones(1, 3)) * scale).sum().backward()
            norms.append(model.weight.grad.norm().item())
    report = watch.report()
    assert [s.step for s in report.steps] == [1, 2, 3]
    assert [s.total_norm for s in report.steps] == pytest.approx(norms)
    assert all(s.max_norm_param == "weight" and s.with_grad == 1 and s.no_grad == 0 for s in report.steps)
    stats = report.param("weight")
    assert stats.steps_with_grad == 3 and stats.no_grad_steps == 0
    assert stats.norm_min == pytest.approx(norms[0])
    assert stats.norm_max == pytest.approx(norms[2])
    assert stats.norm_mean == pytest.approx(sum(norms) / 3)
    assert stats.norm_last == pytest.approx(norms[2])
    assert report.ok


def test_accumulation_records_the_running_sum_per_backward():
    model = nn.Linear(2, 1, bias=False)
    with modscope.watch_gradients(model) as watch:
        for _ in range(3):
            model(torch.ones(1, 2)).sum().backward()  # same gradient each time: .grad grows 1x, 2x, 3x
    one = math.sqrt(2)
    assert [s.total_norm for s in watch.report().steps] == pytest.approx([one, 2 * one, 3 * one])


def test_optimizer_steps_with_accumulation():
    model = nn.Linear(2, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with modscope.watch_gradients(model, optimizer=opt) as watch:
        for _ in range(2):
            for _ in range(4):
                model(torch.ones(1, 2)).sum().backward()
            opt.step()
            opt.zero_grad()
    report = watch.report()
    assert report.step_on == "optimizer"
    assert [s.total_norm for s in report.steps] == pytest.approx([4 * math.sqrt(2)] * 2)
    assert not opt._optimizer_step_pre_hooks


def test_unused_branch_and_frozen_params():
    model = tm.UnusedBranch()
    model.head.bias.requires_grad_(False)
    train(model, steps=3)  # warm: any .grad left over must not confuse the watch
    with modscope.watch_gradients(model) as watch:
        for _ in range(3):
            model(torch.randn(2, 8)).sum().backward()
    report = watch.report()
    assert report.param("unused.weight").status is GradStatus.NO_GRAD
    assert report.param("unused.weight").no_grad_steps == 3
    assert report.param("head.bias").status is GradStatus.FROZEN
    assert report.param("used.weight").status is GradStatus.OK
    assert {p.name for p in report.problems} == {"unused.weight", "unused.bias"}
    assert all(s.no_grad == 2 for s in report.steps)


def test_nonfinite_step_is_counted():
    model = nn.Linear(2, 1)
    with modscope.watch_gradients(model) as watch:
        model(torch.ones(1, 2)).sum().backward()
        model.zero_grad()
        model(torch.tensor([[float("nan"), 1.0]])).sum().backward()
    report = watch.report()
    assert [s.nonfinite for s in report.steps] == [0, 1]
    assert report.param("weight").status is GradStatus.NONFINITE
    assert report.param("weight").nonfinite_steps == 1
    assert report.param("bias").status is GradStatus.OK
    assert not report.ok


def test_report_inside_block_and_many_steps():
    model = nn.Linear(2, 2)
    with modscope.watch_gradients(model) as watch:
        for i in range(150):  # more than one batch of device-side norms
            model(torch.ones(1, 2)).sum().backward()
            model.zero_grad()
            if i == 9:
                assert len(watch.report().steps) == 10
    assert len(watch.report().steps) == 150
    assert watch.report().param("weight").steps_with_grad == 150


def test_no_steps_and_hooks_removed_on_error():
    model = tm.InplaceReLU()
    with pytest.raises(RuntimeError, match="stop"):
        with modscope.watch_gradients(model):
            raise RuntimeError("stop")
    assert not tensor_hooks(model)
    with modscope.watch_gradients(model) as watch:
        pass
    report = watch.report()
    assert report.steps == () and not report.ok  # nothing observed: every trainable parameter is no_grad


def test_autograd_grad_is_not_a_step():
    model = nn.Linear(2, 1)
    with modscope.watch_gradients(model) as watch:
        torch.autograd.grad(model(torch.ones(1, 2)).sum(), list(model.parameters()))
    assert watch.steps == 0


def test_reused_module_one_step_per_backward():
    model = tm.ReusedBlock()
    with modscope.watch_gradients(model) as watch:
        model(torch.randn(2, 8)).sum().backward()
    report = watch.report()
    assert len(report.steps) == 1 and report.ok


def test_json_and_render():
    from io import StringIO

    from rich.console import Console

    model = tm.UnusedBranch()
    with modscope.watch_gradients(model, name="demo") as watch:
        model(torch.randn(2, 8)).sum().backward()
    report = watch.report()
    doc = json.loads(dumps(report))
    assert doc["schema"] == "modscope.grad_watch/1"
    assert doc["model"] == {"type": "UnusedBranch", "target": "demo"}
    assert doc["step_on"] == "backward" and len(doc["steps"]) == 1
    assert doc["counts"] == {"no_grad": 2, "ok": 4}
    out = StringIO()
    Console(file=out, width=120, color_system=None).print(report)
    text = out.getvalue()
    assert "unused.weight" in text and "no_grad" in text and "FAILED" in text


def test_sparse_gradients():
    model = nn.Embedding(10, 3, sparse=True)
    with modscope.watch_gradients(model) as watch:
        model(torch.tensor([1, 1, 4])).sum().backward()
    assert watch.report().param("weight").norm_last == pytest.approx(model.weight.grad.to_dense().norm().item())


def test_a_backward_that_raises_does_not_break_later_steps():
    class Boom(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            raise RuntimeError("backward failed")

    a, b = nn.Linear(2, 2), nn.Linear(2, 1)
    model = nn.Sequential(a, b)
    with modscope.watch_gradients(model) as watch:
        with pytest.raises(RuntimeError, match="backward failed"):
            b(Boom.apply(a(torch.ones(1, 2)))).sum().backward()  # b's gradients accumulate, then it fails
        model.zero_grad()
        model(torch.ones(1, 2)).sum().backward()
    report = watch.report()
    assert [s.with_grad for s in report.steps] == [4]
