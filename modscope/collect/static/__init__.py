"""Static inspection, with no forward pass: parameters and buffers listed once with every name they are
reachable under (``tensors``), the submodule tree with counts and signatures (``tree``), hidden plain
tensors and uninitialised lazy ones (``hazards``) and the device/dtype/mode/finiteness audit (``audit``).
Reads the model's attributes only; returns ``report.static`` records.
"""
