"""One recorded forward pass: per-module calls, input/output structures and FLOPs (``run``, ``structure``,
``flops``), the inference and training memory estimate (``memory``), and running on the meta device without
data (``meta``, ``meta_cache``). Reads a model and ``ModelInputs``; returns the pieces of ``ForwardReport``
that ``modscope.api.forward`` assembles. The model is left as it was found (``collect.hooks``).
"""
