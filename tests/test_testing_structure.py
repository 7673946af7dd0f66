"""modscope.testing, static assertions: parameter counts, sharing and tying, devices, dtypes.

Each assertion passes on a real model and fails on a broken one; the failure message must name the
offending tensors/modules and the numbers, and the model must come out untouched either way.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision

from examples.catalog import get
from modscope.testing import (
    assert_devices,
    assert_dtypes,
    assert_no_shared_params,
    assert_param_count,
    assert_tied,
)
from tests.contract import failure, passes
from tests.testing_models import tiny_gpt

pytest_plugins = ["pytester"]


def test_param_count_passes_on_resnet18():
    model = torchvision.models.resnet18()
    passes(assert_param_count, model, 11_689_512)
    passes(assert_param_count, model, 11_700_000, tolerance=0.001)  # within 0.1%
    passes(assert_param_count, model, 11_689_000, tolerance=512)


def test_param_count_failure_names_the_numbers_and_where_they_live():
    message = failure(assert_param_count, torchvision.models.resnet18(), 11_000_000)
    assert message.startswith("ResNet has 11,689,512 parameters, expected 11,000,000: +689,512 (+6.27%)")
    assert "parameters by submodule:" in message
    words = " ".join(message.split())
    assert "layer4 Sequential 8,393,728" in words  # the biggest block, with its count
    assert "fc Linear 513,000" in words


def test_param_count_breakdown_looks_inside_a_single_wrapper():
    message = failure(assert_param_count, get("lenet").build(), 60_000)  # LeNet wraps one nn.Sequential
    assert message.splitlines()[1:] == [  # only modules that hold parameters
        "  parameters by submodule:",
        "    net.0   Conv2d     156",
        "    net.3   Conv2d   2,416",
        "    net.7   Linear  48,120",
        "    net.9   Linear  10,164",
        "    net.11  Linear     850",
    ]


def test_param_count_trainable_and_frozen():
    model = get("resnet18_finetune").build()  # frozen backbone, trainable layer4 + 5-class head
    passes(assert_param_count, model, 8_393_728 + 2_565, trainable=True)
    passes(assert_param_count, model, 11_176_512 - 8_393_728, trainable=False)
    message = failure(assert_param_count, model, 11_179_077, trainable=True)
    assert message.startswith("ResNet has 8,396,293 trainable parameters, expected 11,179,077")
    assert "trainable parameters by submodule:" in message
    words = " ".join(message.split())
    assert "layer4 Sequential 8,393,728" in words and "fc Linear 2,565" in words
    assert "layer1" not in words  # modules without trainable parameters are left out


def test_param_count_counts_tied_weights_once():
    passes(assert_param_count, tiny_gpt(), 168_192)
    passes(assert_param_count, tiny_gpt(tie=False), 168_192 + 64_000)
    assert "TinyGPT has 168,192 parameters, expected 1:" in failure(assert_param_count, tiny_gpt(), 1)


def test_param_count_refuses_uninitialized_lazy_parameters():
    model = nn.Sequential(nn.LazyLinear(8), nn.ReLU())
    with pytest.raises(AssertionError) as info:  # (the contract snapshot cannot clone a lazy parameter)
        assert_param_count(model, 8)
    message = str(info.value)
    assert "cannot count parameters" in message and "0.weight" in message and "run one forward pass" in message


def test_no_shared_params_passes_on_untied_models():
    passes(assert_no_shared_params, torchvision.models.resnet18())
    passes(assert_no_shared_params, tiny_gpt(tie=False))


def test_no_shared_params_failure_lists_each_group():
    message = failure(assert_no_shared_params, tiny_gpt())
    assert message.splitlines() == [
        "TinyGPT shares parameters in 1 place(s):",
        "  tok.weight = head.weight  (one tensor under several names)  (1000, 64) float32, 64,000 elements",
    ]


def test_no_shared_params_sees_storage_aliases():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    model[2].weight.data = model[0].weight.data[:4]  # a view: distinct tensor, same memory
    message = failure(assert_no_shared_params, model)
    assert "0.weight = 2.weight  (distinct tensors, one storage)" in message


def test_no_shared_params_ignores_reused_parameterless_modules():
    act = nn.ReLU()
    passes(assert_no_shared_params, nn.Sequential(nn.Linear(4, 4), act, nn.Linear(4, 4), act))


def test_tied_passes_for_tied_names():
    passes(assert_tied, tiny_gpt(), "tok.weight", "head.weight")
    passes(assert_tied, tiny_gpt(), "head.weight", "tok.weight")


def test_tied_failure_for_a_copy_says_it_will_drift():
    message = failure(assert_tied, tiny_gpt(tie=False), "tok.weight", "head.weight")
    assert message.splitlines() == [
        "TinyGPT: tok.weight, head.weight are not tied (2 separate tensors)",
        "  tok.weight: Parameter (1000, 64) float32",
        "  head.weight: Parameter (1000, 64) float32",
        "  their values are equal now, but they are separate copies and will drift apart in training",
    ]


def test_tied_failure_for_unrelated_tensors_and_views():
    message = failure(assert_tied, torchvision.models.resnet18(), "conv1.weight", "fc.weight")
    assert "conv1.weight: Parameter (64, 3, 7, 7) float32" in message and "fc.weight: Parameter (1000, 512)" in message
    model = tiny_gpt()
    model.head.weight = nn.Parameter(model.tok.weight.data)  # same memory, another Parameter
    assert "distinct tensor objects: gradients and optimizer state are not shared" in failure(
        assert_tied, model, "tok.weight", "head.weight"
    )


def test_tied_unknown_name_suggests_close_matches():
    message = failure(assert_tied, tiny_gpt(), "tok.weights", "head.weight")
    assert message.splitlines()[0] == "TinyGPT has no parameter or buffer named 'tok.weights'"
    assert "did you mean 'tok.weight'" in message


def test_tied_needs_two_names():
    with pytest.raises(TypeError, match="at least two"):
        assert_tied(tiny_gpt(), "tok.weight")


def test_devices_pass_and_fail_with_the_misplaced_tensors():
    model = torchvision.models.resnet18()
    passes(assert_devices, model, "cpu")
    model.fc.to("meta")  # a head left behind on another device
    message = failure(assert_devices, model, "cpu")
    assert message.startswith("ResNet is not entirely on cpu (elements per device: cpu 11,186,132, meta 513,000)")
    assert "2 tensors are on meta, expected cpu: fc.weight, fc.bias" in message


def test_devices_expected_accelerator_on_a_cpu_model():
    message = failure(assert_devices, get("lenet").build(), "cuda")
    assert "10 tensors are on cpu, expected cuda: net.0.weight" in message and "and 5 more" in message


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_devices_on_cuda():
    model = get("lenet").build().cuda()
    passes(assert_devices, model, "cuda")
    passes(assert_devices, model, "cuda:0")
    model.net[0].cpu()
    assert "2 tensors are on cpu, expected cuda: net.0.weight, net.0.bias" in failure(assert_devices, model, "cuda")


def _bf16_resnet(keep_norms_fp32: bool):
    model = torchvision.models.resnet18().to(torch.bfloat16)
    if keep_norms_fp32:
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.float()
    return model


def test_dtypes_pass_with_allowed_fp32_norms():
    passes(assert_dtypes, _bf16_resnet(False), torch.bfloat16)
    passes(assert_dtypes, _bf16_resnet(True), torch.bfloat16, allow={"norm"})
    passes(assert_dtypes, _bf16_resnet(True), "bf16", allow={"bn", "downsample.1"})


def test_dtypes_failure_names_the_fp32_islands():
    message = failure(assert_dtypes, _bf16_resnet(True), torch.bfloat16)
    first = message.splitlines()[0]
    assert first.startswith("ResNet is not entirely bfloat16 (elements per dtype: bfloat16 11,")
    assert "float32 " in first
    assert "80 floating tensors are float32, expected bfloat16: bn1.weight, bn1.bias, layer1.0.bn1.weight" in message
    assert "and 75 more" in message
    message = failure(assert_dtypes, _bf16_resnet(True), torch.bfloat16, allow={"conv"})
    assert "allowing ['conv']" in message


def test_assertion_tracebacks_point_at_the_test_line(pytester):
    pytester.makepyfile(
        """
        import torch.nn as nn
        from modscope.testing import assert_param_count

        def test_count():
            model = nn.Linear(4, 2)
            assert_param_count(model, 11)   # the line users should see
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*assert_param_count(model, 11)   # the line users should see*",
                                 "E*Linear has 10 parameters, expected 11: -1 (-9.09%)"])
    assert "modscope/testing" not in result.stdout.str()
