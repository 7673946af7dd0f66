"""The pytest plugin: ``modscope_snapshot`` creates, matches, diffs and (with --modscope-update) rewrites
architecture snapshots; the plugin loads through its pytest11 entry point without importing torch."""
from __future__ import annotations

import json

import torch
import torch.nn as nn
import torchvision

from modscope.snapshot import build_snapshot, diff_snapshots, render

pytest_plugins = ["pytester"]

TEST_FILE = """
import torch
import torch.nn as nn

WIDTH = {width}

def make_model():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, WIDTH),
    )

def test_classifier(modscope_snapshot):
    modscope_snapshot.assert_match(make_model(), inputs=torch.randn(2, 3, 16, 16))
"""

SNAPSHOT = "__snapshots__/test_model/test_classifier.json"


def _write(pytester, width: int = 10):
    return pytester.makepyfile(test_model=TEST_FILE.format(width=width))


def test_first_run_writes_the_snapshot_and_passes(pytester):
    _write(pytester)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"modscope: wrote 1 snapshot(s): {SNAPSHOT}"])
    text = (pytester.path / SNAPSHOT).read_text()
    assert text.splitlines()[:3] == ["{", '  "schema": "modscope.snapshot/1",', '  "model": "Sequential",']
    assert '    "5": "Linear(in_features=8, out_features=10, bias=True)"\n' in text
    assert '    "1.running_mean": "buffer (8,) float32",' in text
    assert '    "1.num_batches_tracked": "buffer () int64"' in text
    assert '    "": "2x3x16x16 -> 2x10",' in text  # the forward section: every module's call
    assert '    "0": "2x3x16x16 -> 2x8x16x16",' in text
    assert '    "5": "2x8 -> 2x10"\n' in text


def test_second_run_matches_and_leaves_the_file_alone(pytester):
    _write(pytester)
    pytester.runpytest().assert_outcomes(passed=1)
    before = (pytester.path / SNAPSHOT).read_bytes()
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "modscope:" not in result.stdout.str()
    assert (pytester.path / SNAPSHOT).read_bytes() == before


def test_changed_architecture_fails_with_a_structural_diff(pytester):
    _write(pytester, width=10)
    pytester.runpytest().assert_outcomes(passed=1)
    _write(pytester, width=5)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            f"E*architecture of Sequential differs from snapshot {SNAPSHOT}",
            "E*(if the change is intended, rerun with --modscope-update and commit the snapshot)",
            "E*totals (2 changed):",
            "E*- params: 330",
            "E*+ params: 285",
            "E*- trainable: 330",
            "E*+ trainable: 285",
            "E*modules (1 changed):",
            "E*- 5: Linear(in_features=8, out_features=10, bias=True)",
            "E*+ 5: Linear(in_features=8, out_features=5, bias=True)",
            "E*tensors (2 changed):",
            "E*- 5.weight: parameter (10, 8) float32",
            "E*+ 5.weight: parameter (5, 8) float32",
            "E*- 5.bias: parameter (10,) float32",
            "E*+ 5.bias: parameter (5,) float32",
            "E*forward (2 changed):",
            "E*- (root): 2x3x16x16 -> 2x10",
            "E*+ (root): 2x3x16x16 -> 2x5",
            "E*- 5: 2x8 -> 2x10",
            "E*+ 5: 2x8 -> 2x5",
        ]
    )
    # __tracebackhide__: the user's line is shown, the plugin's internals are not
    result.stdout.fnmatch_lines(["*modscope_snapshot.assert_match(make_model(), inputs=torch.randn(2, 3, 16, 16))"])
    assert "snapshot.py" not in result.stdout.str()


def test_update_flag_rewrites_then_matches(pytester):
    _write(pytester, width=10)
    pytester.runpytest().assert_outcomes(passed=1)
    _write(pytester, width=5)
    result = pytester.runpytest("--modscope-update")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"modscope: updated 1 snapshot(s): {SNAPSHOT}"])
    assert '"5": "2x8 -> 2x5"' in (pytester.path / SNAPSHOT).read_text()
    pytester.runpytest().assert_outcomes(passed=1)
    unchanged = pytester.runpytest("--modscope-update")  # nothing to rewrite: no churn
    unchanged.assert_outcomes(passed=1)
    assert "modscope:" not in unchanged.stdout.str()


def test_several_snapshots_per_test_and_explicit_names(pytester):
    pytester.makepyfile(
        test_zoo="""
        import pytest
        import torch.nn as nn

        class TestZoo:
            @pytest.mark.parametrize("width", [4, 8])
            def test_mlp(self, modscope_snapshot, width):
                modscope_snapshot.assert_match(nn.Linear(3, width))
                modscope_snapshot.assert_match(nn.Linear(width, 1))
                modscope_snapshot.assert_match(nn.ReLU(), name="activation")
        """
    )
    pytester.runpytest().assert_outcomes(passed=2)
    found = sorted(p.name for p in (pytester.path / "__snapshots__" / "test_zoo").iterdir())
    assert found == [
        "TestZoo.test_mlp[4].2.json",
        "TestZoo.test_mlp[4].json",
        "TestZoo.test_mlp[8].2.json",
        "TestZoo.test_mlp[8].json",
        "activation.json",
    ]


def test_unreadable_snapshot_says_how_to_fix_it(pytester):
    _write(pytester)
    pytester.runpytest().assert_outcomes(passed=1)
    (pytester.path / SNAPSHOT).write_text("{ not json")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"E*snapshot {SNAPSHOT} is unreadable (*); rewrite it with --modscope-update"])


def test_option_is_in_its_own_group(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["modscope architecture snapshots:", "*--modscope-update*rewrite modscope*"])


def test_plugin_does_not_import_torch_at_startup(pytester):
    pytester.makepyfile(
        """
        import sys

        def test_no_torch(request):
            assert request.config.pluginmanager.has_plugin("modscope")
            assert "torch" not in sys.modules
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_snapshot_is_independent_of_device_and_values():
    model = torchvision.models.resnet18()
    snap = build_snapshot(model)
    assert render(snap) == render(build_snapshot(torchvision.models.resnet18()))  # other random weights
    assert build_snapshot(model.to("meta")) == snap  # no device, no values, no addresses
    assert "0x" not in render(snap)


def test_snapshot_records_ties_shared_modules_and_frozen_tensors():
    act = nn.ReLU()
    model = nn.Sequential(nn.Embedding(10, 4), act, nn.Linear(4, 10), act)
    model[2].weight = model[0].weight
    model[2].bias.requires_grad_(False)
    snap = build_snapshot(model)
    assert snap["modules"]["3"] == "= 1"
    assert snap["tensors"] == {"0.weight": "parameter (10, 4) float32", "2.weight": "= 0.weight", "2.bias": "parameter (10,) float32 frozen"}
    assert snap["totals"] == {"params": 50, "trainable": 40, "buffers": 0, "modules": 4}


def test_rendered_snapshot_is_json_with_one_entry_per_line():
    snap = build_snapshot(torchvision.models.resnet18(), inputs=torch.randn(1, 3, 32, 32))
    text = render(snap)
    assert json.loads(text) == snap
    entries = sum(len(snap[k]) for k in ("totals", "modules", "tensors", "forward"))
    assert len(text.splitlines()) == 2 + 2 + 4 * 2 + entries  # braces, scalars, section brackets, entries


def test_diff_lists_removed_added_and_changed_per_section():
    old = build_snapshot(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2), nn.Dropout()))
    new = build_snapshot(nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2)))
    new["modules"]["extra"] = "Identity()"
    assert diff_snapshots(old, new) == [
        "totals (1 changed):",
        "  - modules: 5",
        "  + modules: 4",
        "modules (1 added, 1 removed, 1 changed):",
        "  - 1: ReLU()",
        "  + 1: GELU(approximate='none')",
        "  - 3: Dropout(p=0.5, inplace=False)",
        "  + extra: Identity()",
    ]


def test_diff_of_counts_uses_thousands_separators():
    old = build_snapshot(torchvision.models.resnet18())
    new = build_snapshot(torchvision.models.resnet18(num_classes=10))
    assert diff_snapshots(old, new)[:5] == [
        "totals (2 changed):",
        "  - params: 11,689,512",
        "  + params: 11,181,642",
        "  - trainable: 11,689,512",
        "  + trainable: 11,181,642",
    ]
