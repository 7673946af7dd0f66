"""The public API's composition: each function here joins loaders, collectors and reports into one call
(``summary``/``audit`` in ``static``, the forward pass in ``forward``, ``graph`` in ``graphs``, the checkpoint
calls in ``compare``, the rank-gathering calls in ``distributed``). ``modscope/__init__.py`` exports them,
together with the collectors that are public as they are (``grads``, ``watch_gradients``,
``detect_nonfinite``, ``find_nonfinite``, ``time_layers`` in ``modscope.collect.training``). The CLI and
``modscope.testing`` call the same functions.
"""
