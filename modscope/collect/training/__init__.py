"""Training-time analyses that run forward and backward: gradient flow in one step (``grads``) and over a real
loop (``grad_watch``), the first NaN/Inf forward or backward (``nonfinite``), per-layer time (``timing`` with
``clocks``), the scalar to differentiate (``loss``) and batched device-to-host reads (``scalars``). Reads a
model and inputs; returns ``GradReport``, ``GradWatchReport``, ``NonfiniteReport`` and ``TimingReport``.
``grads``, ``watch_gradients``, ``detect_nonfinite``, ``find_nonfinite`` and ``time_layers`` are public.
"""
