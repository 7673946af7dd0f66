"""Model-invariant assertions for test suites: each raises AssertionError with a message that names the
offending parameters/modules and the numbers, and leaves the model as it found it.

>>> from modscope.testing import assert_param_count, assert_output_shape
>>> assert_param_count(model, 11_689_512)
>>> assert_output_shape(model, torch.randn(2, 3, 224, 224), (None, 1000))

The ``modscope_snapshot`` fixture (architecture snapshots) comes with the pytest plugin, ``modscope.plugin``.
"""
from modscope.testing.behaviour import assert_deterministic, assert_output_shape, assert_unchanged_by
from modscope.testing.checkpoints import assert_state_dict_compatible, assert_state_dict_roundtrip
from modscope.testing.training import assert_gradients_flow, assert_no_nonfinite
from modscope.testing.structure import (
    assert_devices,
    assert_dtypes,
    assert_no_shared_params,
    assert_param_count,
    assert_tied,
)

__all__ = [
    "assert_deterministic",
    "assert_devices",
    "assert_dtypes",
    "assert_gradients_flow",
    "assert_no_nonfinite",
    "assert_no_shared_params",
    "assert_output_shape",
    "assert_param_count",
    "assert_state_dict_compatible",
    "assert_state_dict_roundtrip",
    "assert_tied",
    "assert_unchanged_by",
]
