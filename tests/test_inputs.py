"""Input specs (``1,3,224,224:float16``, ``1,128:int64[0,32000)``) and Python values -> ModelInputs."""
from __future__ import annotations

import textwrap

import pytest
import torch

from modscope.errors import UsageError
from modscope.load.inputs import ModelInputs, as_model_inputs, build_inputs, parse_tensor_spec


def test_shapes_dtypes_and_ranges():
    assert parse_tensor_spec("1,3,224,224").shape == (1, 3, 224, 224)
    spec = parse_tensor_spec("2, 20 : float16")
    assert spec.shape == (2, 20) and spec.dtype == torch.float16
    tokens = parse_tensor_spec("1,128:int64[0,32000)")
    assert (tokens.dtype, tokens.low, tokens.high) == (torch.int64, 0, 32000)
    assert parse_tensor_spec("4:int32[1,9]").high == 10  # closed bracket is inclusive


def test_values_respect_ranges_and_seed():
    a = build_inputs(["64,64:int64[5,7)"]).args[0]
    assert a.dtype == torch.int64 and int(a.min()) >= 5 and int(a.max()) <= 6
    first = build_inputs(["3,3"]).args[0]
    assert torch.equal(first, build_inputs(["3,3"]).args[0])  # repeatable
    assert build_inputs(["2:bool"]).args[0].dtype == torch.bool


def test_keyword_inputs_and_meta_device():
    inputs = build_inputs(["1,8"], ["mask=1,8:bool"], device="meta")  # small: real values, moved by the pass
    assert not inputs.args[0].is_meta and inputs.kwargs["mask"].dtype == torch.bool
    assert build_inputs(["1,4096,4096"], device="meta").args[0].is_meta
    assert build_inputs() is None


@pytest.mark.parametrize("bad", ["", "a,b", "1,2:notadtype", "1,2:float32[0,1)", "1:int64[3,3)", "1:int64[x)"])
def test_bad_specs(bad):
    with pytest.raises(UsageError):
        parse_tensor_spec(bad)


def test_bad_kwarg_and_mixing_factory():
    with pytest.raises(UsageError, match="name=SHAPE"):
        build_inputs([], ["1,2"])
    with pytest.raises(UsageError, match="replaces"):
        build_inputs(["1,2"], [], "x.py:f")


def test_factory_file(tmp_path):
    path = tmp_path / "make.py"
    path.write_text(textwrap.dedent("""
        import torch
        def make_inputs():
            return {"image": torch.zeros(1, 3, 8, 8), "extra": torch.ones(1, 8)}
        def broken():
            raise ValueError("no data")
    """))
    inputs = build_inputs(factory=f"{path}:make_inputs")
    assert set(inputs.kwargs) == {"image", "extra"} and inputs.args == ()
    with pytest.raises(UsageError, match="raised ValueError: no data"):
        build_inputs(factory=f"{path}:broken")


def test_python_values():
    t = torch.zeros(2)
    assert as_model_inputs(t).args == (t,)
    assert as_model_inputs((t, t)).args == (t, t)
    assert as_model_inputs({"x": t}).kwargs == {"x": t}
    same = ModelInputs((t,), {})
    assert as_model_inputs(same) is same
    assert ModelInputs((t,), {}).call(torch.nn.Identity()) is t


@pytest.mark.parametrize(
    "bad, says",
    [
        ("0,3", "at least 1"),
        ("1,-3", "at least 1"),
        ("99999999999999999999999,3", "more than a tensor can hold"),
        ("1,3:complex32", "cannot generate complex32"),
        ("1,3:qint8", "cannot generate qint8"),
        ("1,3:int4", "cannot generate int4"),
        ("1:int8[0,1000)", "do not fit int8"),
        ("1:uint8[-1,3)", "do not fit uint8"),
        ("1:int64[0,99999999999999999999999)", "64-bit"),
    ],
)
def test_impossible_specs_are_refused(bad, says):
    with pytest.raises(UsageError, match=says):
        parse_tensor_spec(bad)


def test_float8_inputs_are_cast_from_float32():
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("no float8 in this torch")
    x = build_inputs(["2,3:float8_e4m3fn"]).args[0]
    assert x.dtype == torch.float8_e4m3fn and x.shape == (2, 3)


def test_an_input_larger_than_memory_is_refused_on_cpu_only():
    with pytest.raises(UsageError, match="more than this machine's memory"):
        build_inputs(["100000,100000,100000"])
    assert build_inputs(["100000,100000,100000"], device="meta").args[0].is_meta


def test_sys_exit_in_forward_propagates_labelled():
    from modscope.errors import describe_user_exit

    class Exits(torch.nn.Module):
        def forward(self, x):
            raise SystemExit(3)

    with pytest.raises(SystemExit) as caught:  # the library caller sees the user's own exception
        ModelInputs((torch.zeros(1),), {}).call(Exits())
    assert describe_user_exit(caught.value) == "the model's forward called sys.exit(3)"
