"""Collectors: pure functions and context managers that read a model (or a checkpoint's metadata) and return
plain data, mostly the dataclasses of ``modscope.reports``. One folder per concern: ``static`` (no forward
pass), ``forward`` (one recorded pass: shapes, FLOPs, memory, meta device), ``training`` (gradients, NaN/Inf
tracing, timing), ``statedict`` (checkpoints and state dicts compared with each other and with models),
``graphs`` (recorded dataflow for architecture graphs) and ``distributed`` (DTensor/FSDP2 facts of one rank).
``hooks`` is the only place hooks are registered and model state is restored; ``recursion`` and
``graph_release`` are shared by the passes that run a model.
"""
