"""Forward-pass analysis: compose the collectors into a ForwardReport (used by ``modscope.summary``).

One recorded pass gives shapes, calls and FLOPs (eval mode, no_grad, unless ``train_mode``). The training
memory estimate needs the tensors autograd saves, so a second, unrecorded pass runs in training mode with
autograd on (in ``train_mode`` the first pass already is one). For a CPU model that second pass runs on a
data-free meta twin, which saves the same tensors without computing them (``_Runner.twin_for_saved``), and
on the model itself where the twin cannot stand in (values decide the control flow, recurrent layers).
On ``device="meta"`` both run on a data-free copy; modules that need real values fall back to small CPU
tensors (see ``modscope.collect.forward.meta``).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import replace
from typing import Any

import torch
import torch.nn as nn
from torch.nn.parameter import is_lazy

from modscope.collect.forward.cpu_choices import CpuChoices
from modscope.collect.forward.flops import missed_ops
from modscope.collect.forward.materialized import materialized_shapes, with_shapes
from modscope.collect.forward.memory import (
    OPTIMIZERS,
    SavedTensors,
    estimate_memory,
    reached_parameters,
    unused_parameters,
)
from modscope.collect.forward.meta import (
    copy_real_weights,
    input_twins,
    materialize,
    meta_copy,
    real_tensor_islands,
    tensor_twins,
)
from modscope.collect.forward.meta_fallback import failure_reason, fallback_for, fallback_max_bytes, inside
from modscope.collect.forward.meta_values import MetaValues
from modscope.collect.forward.run import PassResult, run_pass
from modscope.collect.graph_release import graph_nodes, release
from modscope.collect.hooks import preserved_rng, preserved_state
from modscope.collect.recursion import recursion_note
from modscope.collect.static.audit import device_matches
from modscope.collect.static.hazards import plain_attributes
from modscope.core.walk import deep_copy, move, visits
from modscope.errors import ForwardError, UsageError
from modscope.load.input_errors import input_hint
from modscope.load.inputs import ModelInputs, as_model_inputs
from modscope.render.structure_text import call_str
from modscope.reports import TensorInfo
from modscope.reports.forward import Fallback, ForwardReport

MAX_FALLBACKS = 16
#: "off": measure a CPU model's training activations on the model itself, never on a meta twin; "always": on
#: the twin wherever it can stand in; "auto" (default): on the twin where it costs less (``_twin_pays``)
TWIN_ENV = "MODSCOPE_MEMORY_TWIN"
#: the twin is chosen when the recorded pass did at least this many FLOPs per module call
TWIN_MIN_FLOPS_PER_CALL = 1_000_000
TWIN_NOTE = (
    "training activations measured on a data-free meta copy of the model, which saves the same tensors as a "
    f"CPU pass without computing them (CPU's attention kernel imitated; {TWIN_ENV}=off measures the model itself)"
)


def check_device(device: str | torch.device | None) -> str | None:
    """Validate a --device value: None, cpu, meta, cuda[:N]; a clear error when CUDA is asked for but absent."""
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device {device!r} is not a device (use cpu, cuda, cuda:1 or meta)")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA device is available here (torch.cuda.is_available() is False)")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif parsed.type not in ("cpu", "meta"):
        raise UsageError(f"--device {device}: only cpu, cuda[:N] and meta are supported")
    return str(parsed)


def analyse_forward(
    model: nn.Module,
    inputs: Any,
    *,
    parameters: tuple[TensorInfo, ...],
    buffers: tuple[TensorInfo, ...],
    device: str | None = None,
    train_mode: bool = False,
    flops: bool = True,
    memory: bool = True,
    optimizer: str = "adam",
    materialized: dict | None = None,
) -> ForwardReport:
    """Run one recorded forward pass (and one measuring pass for memory); raise ForwardError with the partial
    ForwardReport when the model raises. ``parameters``/``buffers`` come from the static summary.

    ``materialized``: a dict given name -> (shape, dtype) of each lazy tensor the pass materialised (on the
    copy it runs on; the caller's model stays lazy); the memory estimate counts them."""
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"--optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    device = check_device(device)
    inputs = as_model_inputs(inputs)
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        run_model, run_device = _placed(model, device, stack, notes)
        runner = _Runner(run_model, inputs.to(run_device), on_meta=run_device == "meta", given=inputs)
        runner.lazy_shapes = {} if materialized is None else materialized
        if not runner.hookable:
            notes.append("TorchScript modules take no hooks: only the whole model's shapes, FLOPs and memory")
        saved = SavedTensors(runner.model) if memory and train_mode else None
        result = runner.recorded(train_mode, flops, saved, peak=memory)
        fields = dict(
            device=run_device, train_mode=train_mode, grad_enabled=train_mode, fallbacks=runner.fallback_notes()
        )
        if runner.lazy_shapes:
            parameters = with_shapes(parameters, runner.lazy_shapes)
            buffers = with_shapes(buffers, runner.lazy_shapes)
            notes.append(
                f"the pass materialised {len(runner.lazy_shapes)} lazy tensor(s): the counts and the memory "
                "estimate use their shapes; the model itself is left uninitialized"
            )
        if result.error is not None:
            raise ForwardError(_failure_message(result, runner.refused), partial=_report(result, notes=notes, **fields))
        estimate, unused = None, None
        if memory:
            measurer = runner
            if saved is not None:
                measured, output, note = saved, result.output, None
            else:
                twin = runner.twin_for_saved() if run_device == "cpu" and _twin_pays(result) else None
                measured, output, note = (twin or runner).measure_saved(training_only=twin is not None)
                if twin is not None and measured is None:  # the twin could not stand in: measure for real
                    measured, output, note = runner.measure_saved()
                elif twin is not None:
                    measurer, note = twin, TWIN_NOTE
            nodes = graph_nodes(output) if output is not None else []
            if output is not None:
                unused = measurer.unused_parameters(nodes)
            del output
            estimate = estimate_memory(
                parameters,
                buffers,
                saved=None if measured is None else dict(measured.by_dtype),
                inference_activations=result.peak_call_bytes,
                inference_by_dtype=result.peak_call_by_dtype,
                optimizer=optimizer,
                notes=() if note is None else (note,),
            )
            result.output = None
            release(nodes)  # after the last reference to the output: a long graph is freed node by node
        result.output = None
        return _report(result, memory=estimate, unused=unused, notes=notes, **fields)


class _Runner:
    """Runs passes over one (possibly meta) model, keeping the modules that had to fall back to real tensors."""

    def __init__(self, model: nn.Module, inputs: ModelInputs, *, on_meta: bool, given: ModelInputs | None = None):
        self.on_meta = on_meta
        self.inputs = inputs
        self.original = model
        self.given = given  # the inputs as the caller gave them (on meta: their values become twins)
        self.fallbacks: list[tuple[str, nn.Module, Fallback]] = []
        self.values: MetaValues | None = None  # real twins of small meta tensors, once a meta pass has failed
        self.values_for: Fallback | None = None  # the failure that called for them
        self.refused: str | None = None  # why the last failure was not retried on real tensors
        # On meta the pass runs on a data-free copy, which fallbacks may change; a model that already is all
        # meta is used as it is (copying 80 layers costs more than the pass) until a fallback needs a copy.
        self.owned = on_meta and not _all_meta(model)
        self.model = _meta_copy(model) if self.owned else model
        self.hookable = not isinstance(model, torch.jit.ScriptModule)  # TorchScript takes no module hooks
        self.lazy_shapes: dict | None = None  # filled by the recorded pass when the model has lazy tensors
        self.choices: CpuChoices | None = None  # a CPU model's meta twin imitates CPU's choices of kernel

    def fallback_notes(self) -> tuple[Fallback, ...]:
        notes = tuple(f for _, _, f in self.fallbacks)
        if self.values is None or not self.values.answered:
            return notes
        action = (
            f"answered {self.values.answered} value read(s) on meta from real copies of the small tensors involved "
            "(the inputs as given, small buffers, tensors made from no data); the module stayed on meta"
        )
        return (replace(self.values_for, action=action), *notes)

    def _extra(self, saved: SavedTensors | None, *, shapes: dict | None = None):
        islands = [(name, module) for name, module, _ in self.fallbacks]
        if not islands and saved is None and shapes is None and self.values is None:
            return None

        def enter(counter):
            stack = contextlib.ExitStack()
            if shapes is not None:  # read before preserved_state makes the lazy tensors lazy again
                stack.enter_context(materialized_shapes(self.model, shapes))
            if saved is not None:
                stack.enter_context(saved.hooks())
            if islands:
                stack.enter_context(real_tensor_islands(self.model, islands, counter, self.values))
            if self.values is not None:
                stack.enter_context(self.values)
            return stack

        return enter

    def recorded(self, train_mode: bool, flops: bool, saved: SavedTensors | None, *, peak: bool) -> PassResult:
        """The shapes/FLOPs pass; on meta, retried with twins for small tensors, then with real-tensor fallbacks
        for modules that need values. ``peak``: also measure the largest module call (for the memory estimate).

        Any failure on meta is retried, whatever its message: it was a meta limitation when the failing module
        then gets past it, a real error when it fails again on real tensors (the meta pass's failure is then
        reported, with what the real run said)."""
        trial = None  # (name, previous result): a module just materialized, not yet known to help
        while True:
            result = run_pass(
                self.model, self.inputs, training=train_mode, grad=train_mode, flops=flops,
                record=self.hookable, peak=peak, reuse_meta=self.on_meta,
                extra=self._extra(saved, shapes=self.lazy_shapes if _has_lazy(self.model) else None),
            )
            if trial is not None:
                name, previous = trial
                trial = None
                if result.error is not None and inside(result.failure.module, name):
                    self.fallbacks.pop()  # it fails on real tensors too: not a meta limitation
                    said = "" if input_hint(result.error) else (
                        f": {result.failure.error}: {_first_line(result.failure.message)}"
                    )
                    self.refused = f"on real CPU tensors it failed too{said}"
                    return previous
            if result.error is None or not self.on_meta:
                return result
            if self.values is None:
                self.values = self._twins()
                self.values_for = Fallback(result.failure.module, result.failure.type, failure_reason(result.failure), "")
                continue
            if any(inside(result.failure.module, n) for n, _, _ in self.fallbacks):
                return result  # already on real tensors there
            if len(self.fallbacks) >= MAX_FALLBACKS:
                self.refused = f"modscope did not retry it on real tensors: {MAX_FALLBACKS} modules already fell back"
                return result
            fallback, self.refused = fallback_for(result, fallback_max_bytes())
            if fallback is None:
                return result
            module = result.failing_module
            if not self.owned:
                self.model, self.owned = _meta_copy(self.model), True
                module = self.model.get_submodule(result.failure.module) if result.failure.module else self.model
                if saved is not None:
                    saved.model = self.model
            with preserved_rng():  # random weights come from a fork of the global generators
                materialize(module)
            if self._real_weights_into(result.failure.module, module):
                fallback = replace(fallback, action=fallback.action.replace("random weights", "the model's own weights"))
            self.fallbacks.append((result.failure.module, module, fallback))
            trial = (result.failure.module, result)

    def _real_weights_into(self, name: str, module: nn.Module) -> bool:
        """The fallback runs with the weights of the model as given, when it has real ones: then its results
        (how many boxes survive NMS, which experts are picked) are those of a real pass, not of random weights."""
        if self.original is self.model:
            return False
        try:
            source = self.original.get_submodule(name) if name else self.original
        except AttributeError:
            return False
        return copy_real_weights(source, module)

    def _twins(self) -> MetaValues:
        """The known values of this run: the inputs as given, and the original model's small buffers."""
        values = MetaValues()
        pairs = []
        if self.given is not None:
            given, moved = (self.given.args, self.given.kwargs), (self.inputs.args, self.inputs.kwargs)
            cap = fallback_max_bytes()
            pairs += [(m, r) for m, r in input_twins(given, moved) if r.numel() * r.element_size() <= cap]
        if self.owned and self.model is not self.original:
            pairs += tensor_twins(self.original, self.model, values.max_bytes)
        with torch.no_grad():
            for meta, real in pairs:  # copies: what the pass does to a twin never reaches the caller's tensors
                values.add(meta, real.detach().clone())
        return values

    def twin_for_saved(self) -> "_Runner | None":
        """A runner over a data-free meta twin of this CPU model, for the training pass that measures saved
        tensors: it computes no values (a resnet50's training forward costs ~2x its recorded pass on CPU, its
        twin ~0.2x) and saves the same tensors, since autograd saves by shape and dtype, with CPU's attention
        kernel imitated (``cpu_choices``). None where a twin cannot be made: TorchScript, lazy modules."""
        if self.on_meta or not self.hookable or self.lazy_shapes or _has_lazy(self.model):
            return None
        if _twin_setting() == "off":
            return None
        if torch.are_deterministic_algorithms_enabled():  # torch's Python picks other kernels off CPU then
            return None  # (F.interpolate's decomposition, whose backward saves other tensors)
        if any(t.dtype in (torch.float16, torch.bfloat16) for t in _tensors(self.model, plain=True)):
            return None  # meta keeps some statistics in float32 where CPU keeps half precision
        try:
            model = meta_copy(self.model)
        except Exception:  # noqa: BLE001 - the user's objects may refuse to be copied; measure for real then
            return None
        twin = _Runner(model, self.inputs.to("meta"), on_meta=True)
        twin.choices = CpuChoices()
        return twin

    def measure_saved(self, *, training_only: bool = False) -> tuple[SavedTensors | None, Any, str | None]:
        """(saved tensors, output, note) of a training-mode autograd pass, in eval mode if training mode fails.

        ``training_only`` (a twin): (None, None, None) unless the training-mode pass ran and every choice of
        kernel it met could be imitated; the caller then measures on the model itself."""
        first_error = None
        for training in (True, False) if not training_only else (True,):
            saved = SavedTensors(self.model)
            with self.choices or contextlib.nullcontext():
                measured = run_pass(
                    self.model, self.inputs, training=training, grad=True, flops=False, record=False,
                    reuse_meta=self.on_meta, extra=self._extra(saved), throwaway=training_only,
                )
            if training_only and (measured.error is not None or self.choices.unsure):
                return None, None, None
            if measured.error is None:
                note = None
                if first_error is not None:
                    note = (
                        "training activations were measured in eval mode: the training-mode pass raised "
                        f"{type(first_error).__name__}: {_first_line(str(first_error))}"
                    )
                return saved, measured.output, note
            first_error = first_error or measured.error
        return None, None, f"training activations not measured: {type(first_error).__name__}: {_first_line(str(first_error))}"

    def unused_parameters(self, nodes: list) -> tuple[str, ...] | None:
        """Trainable parameters outside the output's autograd graph (``nodes``); unknown (None) when a fallback
        module handed back meta tensors, which cuts the autograd graph."""
        if self.fallbacks:
            return None
        return tuple(unused_parameters(self.model, reached_parameters(nodes)))


def _twin_setting() -> str:
    value = os.environ.get(TWIN_ENV, "auto").strip().lower() or "auto"
    value = {"0": "off", "no": "off", "false": "off", "1": "always", "on": "always", "yes": "always"}.get(value, value)
    if value not in ("auto", "off", "always"):
        raise UsageError(f"{TWIN_ENV}={os.environ[TWIN_ENV]!r}: use auto, off or always")
    return value


def _twin_pays(result: PassResult) -> bool:
    """Is the twin the cheaper way to measure training activations? A real CPU training pass costs about its
    arithmetic, the twin about a fixed ~50 us per op (torch's meta kernels are Python): with under a MFLOP
    per module call (a small model, small inputs), computing for real is faster. Decided on the recorded
    pass's FLOPs, so the same model and inputs always take the same way (both give the same numbers)."""
    setting = _twin_setting()
    if setting in ("off", "always"):
        return setting == "always"
    if result.flops_total is None:  # --no-flops: nothing to go by; the twin never computes, so it cannot be slow
        return True
    calls = sum(m.calls for m in result.modules) or 1
    return result.flops_total >= TWIN_MIN_FLOPS_PER_CALL * calls


def _placed(model: nn.Module, device: str | None, stack: contextlib.ExitStack, notes: list[str]):
    """(model to run, device to run on): a meta copy, a lazy model's copy, or ``model`` itself (moved if asked,
    and moved back when the stack closes)."""
    if device == "meta":
        notes.append("ran on meta tensors: shapes and FLOPs only, no values were computed")
        return model, "meta"  # _Runner copies it before running anything on it
    if _has_lazy(model):
        notes.append("the model has lazy modules, which the first forward initializes: it ran on a copy")
        model = deep_copy(model)
    current = _model_device(model)
    if device is None or device_matches(current, device):
        return model, current
    if current == "meta":
        raise UsageError(f"the model is on the meta device (it has no data) and cannot run on {device}: use --device meta")
    stack.enter_context(preserved_state(model))
    for v in visits(model):
        for p in v.module._parameters.values():
            if p is not None:
                p.grad = None  # preserved_state puts the original .grad objects back, untouched by the move
    move(model, device)
    notes.append(f"ran on {device}; the model was moved there for the pass and moved back after")
    return model, device


def _meta_copy(model: nn.Module) -> nn.Module:
    try:
        return meta_copy(model)
    except Exception as exc:  # deepcopy of the user's objects (locks, open files, TorchScript...)
        raise UsageError(
            f"cannot make a meta copy of this model ({type(exc).__name__}: {_first_line(str(exc))}); build it on "
            "meta instead: pass its class or factory as TARGET, or construct it under torch.device('meta')"
        ) from exc


def _report(result: PassResult, *, memory=None, unused=None, notes=(), **fields) -> ForwardReport:
    return ForwardReport(
        inputs=result.inputs,
        modules=tuple(result.modules),
        flops_total=result.flops_total,
        uncounted_ops=result.uncounted_ops,
        flops_missed_ops=missed_ops(result.uncounted_ops),
        never_called=tuple(result.never_called),
        unused_parameters=unused,
        memory=memory,
        failure=result.failure,
        notes=tuple(notes),
        **fields,
    )


def _failure_message(result: PassResult, refused: str | None = None) -> str:
    f = result.failure
    where = f"module {_short_name(f.module)!r} ({f.type})" if f.module else f"the root module ({f.type})"
    called = call_str(f.call.args, f.call.kwargs) or "no arguments"
    note = recursion_note(result.error, result.depth)
    if refused:
        note += f" ({refused})"
    hint = input_hint(result.error) if isinstance(result.error, BaseException) else None
    said = f"{f.error}: {hint or _first_line(f.message)}"
    return f"the forward pass failed in {where}, called with ({called}): {said}{note}"


def _short_name(name: str, limit: int = 100) -> str:
    """A module name for a one-line message: a 2,000-deep name keeps its first and last parts."""
    if len(name) <= limit:
        return name
    return f"{name[: limit // 2 - 10]}…{name[-(limit // 2):]} ({name.count('.') + 1} levels)"


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 300 else line[:299] + "…"


def _tensors(model: nn.Module, *, plain: bool = False):
    """Every parameter and buffer (and with ``plain``, plain tensor attributes) of every module, in pre-order."""
    for v in visits(model):
        if v.first:
            yield from (t for t in (*v.module._parameters.values(), *v.module._buffers.values()) if t is not None)
            if plain:
                yield from (t for _, t in plain_attributes(v.module))


def _all_meta(model: nn.Module) -> bool:
    """Every tensor the model holds is on meta (e.g. it was built under torch.device("meta"))."""
    return all(t.is_meta for t in _tensors(model, plain=True))


def _has_lazy(model: nn.Module) -> bool:
    return any(is_lazy(t) for t in _tensors(model))


def _model_device(model: nn.Module) -> str:
    return next((str(t.device) for t in _tensors(model) if not is_lazy(t)), "cpu")


__all__ = ["analyse_forward", "check_device"]
