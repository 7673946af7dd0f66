"""Small models with known gradient, NaN and timing behaviour, for the training-time analyses.

Each is also a CLI target, e.g. ``modscope grads tests/training_models.py:UnusedBranch --input 4,8``.
"""
from __future__ import annotations

import time

import torch
from torch import nn


class UnusedBranch(nn.Module):
    """``unused`` never takes part in forward: its parameters get no gradient."""

    def __init__(self):
        super().__init__()
        self.used = nn.Linear(8, 4)
        self.unused = nn.Linear(8, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.used(x)))


class DetachedBranch(nn.Module):
    """``encoder`` is used, but its output is detached: no gradient reaches it."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.encoder(x).detach())


class ZeroGrad(nn.Module):
    """``scale`` multiplies a zero tensor, so its gradient is exactly zero."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)
        self.scale = nn.Parameter(torch.ones(2))

    def forward(self, x):
        return self.fc(x) + self.scale * torch.zeros(2)


class InplaceReLU(nn.Module):
    """In-place activations after every layer (full backward module hooks fail on these)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(8, 16), nn.ReLU(inplace=True), nn.Linear(16, 16), nn.ReLU(inplace=True), nn.Linear(16, 2)
        )

    def forward(self, x):
        return self.net(x)


class Log(nn.Module):
    """log(x): NaN for negative inputs."""

    def forward(self, x):
        return torch.log(x)


class NanInLayer(nn.Module):
    """``log`` receives negative values from ``fc1`` and produces the first NaN; ``fc2`` only passes it on."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.log = Log()
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(self.log(self.fc1(x)))


class NanBetweenModules(nn.Module):
    """The NaN comes from ``torch.log`` in this forward, not from a submodule: ``fc2`` sees it in its input."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(torch.log(self.fc1(x)))


class Sqrt(nn.Module):
    """sqrt(x): its derivative is infinite where x is 0."""

    def forward(self, x):
        return torch.sqrt(x)


class InfInBackward(nn.Module):
    """Finite forward pass; in backward ``sqrt`` turns the gradient infinite where ``relu`` output zeros."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.relu = nn.ReLU()
        self.sqrt = Sqrt()
        self.fc2 = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(self.sqrt(self.relu(self.fc1(x))))


class NanGradBetweenModules(nn.Module):
    """Finite forward; in backward, code in this forward after ``fc`` (sqrt at 0, times 0) makes the gradient
    arriving at ``fc``'s output NaN."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return torch.sqrt(torch.relu(self.fc(x)) * 0)


class ReusedBlock(nn.Module):
    """One ``block`` called three times per forward (shared weights)."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(8, 8), nn.Tanh())
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        for _ in range(3):
            x = self.block(x)
        return self.head(x)


class Raises(nn.Module):
    """Forward raises after its first layer ran."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        self.fc(x)
        raise RuntimeError("boom")


class NanThenRaises(nn.Module):
    """A NaN appears in ``log``, then forward raises (as a shape check on bad values might)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.log = Log()

    def forward(self, x):
        y = self.log(self.fc(x))
        raise ValueError("loss diverged")


class WithBatchNorm(nn.Module):
    """BatchNorm (running statistics change in train mode) and Dropout (draws random numbers)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.bn(self.fc(x)))))


#: When set to ``[0]`` (tests do this), Spin modules advance this virtual nanosecond counter instead of
#: busy-waiting, so a clock reading it measures exactly the modelled costs, whatever the machine's load.
VIRTUAL_NS: list[int] | None = None


def spin(seconds: float) -> None:
    """Take ``seconds``: busy-wait in real time, or advance VIRTUAL_NS."""
    if VIRTUAL_NS is not None:
        VIRTUAL_NS[0] += round(seconds * 1e9)
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class _SpinFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, backward_seconds):
        ctx.backward_seconds = backward_seconds
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        spin(ctx.backward_seconds)
        return grad, None


class Spin(nn.Module):
    """Takes ``forward_ms`` in forward and ``backward_ms`` in backward, whatever the input."""

    def __init__(self, forward_ms: float, backward_ms: float):
        super().__init__()
        self.forward_s, self.backward_s = forward_ms / 1e3, backward_ms / 1e3

    def forward(self, x):
        spin(self.forward_s)
        return _SpinFunction.apply(x, self.backward_s)


class KnownTimes(nn.Module):
    """Layers with known costs: ``slow`` 20 ms forward / 5 ms backward, ``fast`` 4 ms / 25 ms, and ``pair``, a
    container of two 3 ms / 3 ms layers whose own time is only the children's."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.slow = Spin(20, 5)
        self.fast = Spin(4, 25)
        self.pair = nn.Sequential(Spin(3, 3), Spin(3, 3))

    def forward(self, x):
        return self.pair(self.fast(self.slow(self.fc(x))))


class Residual(nn.Module):
    """A residual block: ``branch`` (two layers, 1 ms forward / 10 ms backward each) plus ``shortcut`` (1 ms /
    2 ms). The input's gradient is ready only after both paths, so timing the shortcut up to "its input's
    gradient is ready" would wrongly stretch it over the branch."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.branch = nn.Sequential(Spin(1, 10), Spin(1, 10))
        self.shortcut = Spin(1, 2)

    def forward(self, x):
        x = self.fc(x)
        return self.branch(x) + self.shortcut(x)
