"""Hugging Face folders, hf:ORG/NAME from a local cache and timm:NAME as TARGETs (docs/hub.md).

Tiny real transformers models (random init, 1 layer, hidden size 16) are written once per module with
``save_pretrained``; the fake cache is laid out as huggingface_hub lays it out. The real CLI runs in a
subprocess for the commands users type; the rest is checked in-process to keep the file fast.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

from conftest import run_modscope  # noqa: E402

from modscope.errors import LoadError, UnsafeLoadError, UsageError  # noqa: E402
from modscope.load import hf_cache  # noqa: E402
from modscope.load.hub_inputs import default_inputs, describe  # noqa: E402
from modscope.load.target import load_model  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SMALL = dict(num_hidden_layers=1, num_attention_heads=2, hidden_size=16, intermediate_size=32)


def _configs():
    T = transformers
    return {
        "gpt2": T.GPT2LMHeadModel(T.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=64, n_positions=32,
                                               bos_token_id=0, eos_token_id=0)),
        "llama": T.LlamaForCausalLM(T.LlamaConfig(**SMALL, num_key_value_heads=1, vocab_size=64,
                                                  max_position_embeddings=32, bos_token_id=0, eos_token_id=0)),
        "bert": T.BertModel(T.BertConfig(**SMALL, vocab_size=64, max_position_embeddings=32)),
        "t5": T.T5ForConditionalGeneration(T.T5Config(d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2,
                                                      vocab_size=64, decoder_start_token_id=0)),
        "vit": T.ViTModel(T.ViTConfig(**SMALL, image_size=32, patch_size=8)),
        "clip": T.CLIPModel(T.CLIPConfig(
            text_config=dict(**SMALL, vocab_size=64, max_position_embeddings=16),
            vision_config=dict(**SMALL, image_size=32, patch_size=8), projection_dim=8)),
        "whisper": T.WhisperForConditionalGeneration(T.WhisperConfig(
            d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=64, num_mel_bins=8, max_source_positions=16,
            max_target_positions=16, decoder_start_token_id=0, pad_token_id=0, bos_token_id=0, eos_token_id=0)),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> folder written by save_pretrained (config.json + model.safetensors)."""
    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(0)
    transformers.logging.set_verbosity_error()
    folders = {}
    for name, model in _configs().items():
        model.save_pretrained(root / name)
        folders[name] = root / name
    bare = root / "bare-gpt2"
    bare.mkdir()
    shutil.copy(folders["gpt2"] / "config.json", bare / "config.json")
    folders["bare"] = bare
    return folders


@pytest.fixture(scope="module")
def cache(saved, tmp_path_factory):
    """A Hugging Face hub cache holding tiny/gpt2 at refs/main (files are symlinks into blobs/)."""
    root = tmp_path_factory.mktemp("hf-cache")
    repo = root / "models--tiny--gpt2"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    snapshot.mkdir(parents=True)
    for index, name in enumerate(("config.json", "model.safetensors")):
        blob = repo / "blobs" / f"{index:064x}"
        shutil.copy(saved["gpt2"] / name, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)
    (repo / "refs" / "main").write_text(COMMIT)
    return root


def _env(cache):
    return {"HF_HUB_CACHE": str(cache), "PYTHONPATH": os.pathsep.join(sys.path)}


# --- building -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert", "t5", "vit", "clip", "whisper"])
def test_folder_builds_the_named_architecture_and_its_default_input_runs(saved, name):
    config = json.loads((saved[name] / "config.json").read_text())
    on_meta = load_model(str(saved[name]), device="meta")
    assert type(on_meta).__name__ == config["architectures"][0]
    assert all(p.is_meta for p in on_meta.parameters())
    model = load_model(str(saved[name] / "config.json"))  # the config.json path form: real values
    inputs = default_inputs(model, batch=2)
    with torch.no_grad():
        out = inputs.call(model)
    assert out is not None and all(t.shape[0] == 2 for t in inputs.kwargs.values())


def test_default_inputs_follow_the_config(saved):
    def shapes(name, **sizes):
        return describe(default_inputs(load_model(str(saved[name]), device="meta"), **sizes))

    assert shapes("gpt2") == "input_ids=1x32:int64"  # capped at n_positions
    assert shapes("gpt2", batch=3, seq_len=8) == "input_ids=3x8:int64"
    assert shapes("t5", seq_len=5) == "input_ids=1x5:int64, decoder_input_ids=1x5:int64"
    assert shapes("vit") == "pixel_values=1x3x32x32:float32"
    assert shapes("clip") == "input_ids=1x16:int64, pixel_values=1x3x32x32:float32"
    assert shapes("whisper") == "input_features=1x8x32:float32, decoder_input_ids=1x16:int64"
    ids = default_inputs(load_model(str(saved["llama"]), device="meta"), seq_len=32).kwargs["input_ids"]
    assert int(ids.min()) >= 0 and int(ids.max()) < 64
    with pytest.raises(UsageError, match="at most 32 positions"):
        default_inputs(load_model(str(saved["gpt2"]), device="meta"), seq_len=33)


def test_tied_weights_are_one_tensor_and_arg_overrides_the_config(saved):
    gpt2 = load_model(str(saved["gpt2"]), kwargs={"n_layer": 2}, device="meta")
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight and len(gpt2.transformer.h) == 2
    t5 = load_model(str(saved["t5"]), device="meta")
    assert t5.lm_head.weight is t5.shared.weight is t5.encoder.embed_tokens.weight
    with pytest.raises(UsageError, match="not an attribute of GPT2Config"):
        load_model(str(saved["gpt2"]), kwargs={"no_such_field": 1}, device="meta")


def test_custom_code_needs_trust(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "custom", "architectures": ["X"], "auto_map": {"AutoModel": "modeling_x.X"}}
    ))
    (tmp_path / "modeling_x.py").write_text("raise SystemExit('custom code ran')\n")
    with pytest.raises(UnsafeLoadError, match="--trust"):
        load_model(str(tmp_path))


def test_hostile_config_is_refused_by_the_bounded_reader(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "x": ' + "[" * 100 + "]" * 100 + "}")
    with pytest.raises(Exception, match="nests 101 levels"):
        load_model(str(tmp_path))


def test_timm_targets(saved):
    model = load_model("timm:test_resnet", kwargs={"num_classes": 7})
    inputs = default_inputs(model, batch=2)
    assert tuple(inputs.args[0].shape) == (2, 3, 160, 160)
    with torch.no_grad():
        assert tuple(inputs.call(model).shape) == (2, 7)
    with pytest.raises(UsageError, match="never downloads"):
        load_model("timm:test_resnet", kwargs={"pretrained": True})
    with pytest.raises(LoadError, match="did you mean resnet18"):
        load_model("timm:resnet1", device="meta")


# --- the cache ------------------------------------------------------------------------------------------


def test_cache_is_found_by_the_huggingface_conventions(cache, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_cache.cache_root() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    snapshot = hf_cache.snapshot_folder("hf:tiny/gpt2")
    assert snapshot == cache / "models--tiny--gpt2" / "snapshots" / COMMIT
    assert hf_cache.snapshot_folder(f"hf:tiny/gpt2@{COMMIT}") == snapshot
    assert type(load_model("hf:tiny/gpt2", device="meta")).__name__ == "GPT2LMHeadModel"
    with pytest.raises(LoadError, match="revision 'v2' is not in the local cache"):
        hf_cache.snapshot_folder("hf:tiny/gpt2@v2")
    with pytest.raises(LoadError, match="expected hf:ORG/NAME"):
        hf_cache.snapshot_folder("hf:../../etc")


def test_cache_files_must_stay_inside_the_repo(cache, monkeypatch, tmp_path):
    repo = tmp_path / "models--evil--gpt2"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    outside = tmp_path / "elsewhere.json"
    shutil.copy(cache / "models--tiny--gpt2" / "snapshots" / COMMIT / "config.json", outside)
    os.symlink(outside, snapshot / "config.json")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(Exception, match="outside its folder"):
        load_model("hf:evil/gpt2", device="meta")


# --- checkpoints under Hugging Face conventions ---------------------------------------------------------


def test_check_knows_tied_keys_and_transformers_renames(saved, tmp_path):
    import modscope
    from safetensors.torch import load_file, save_file

    gpt2 = modscope.check(str(saved["gpt2"]), str(saved["gpt2"] / "model.safetensors"))
    assert gpt2.ok and gpt2.missing == () and any("lm_head.weight -> transformer.wte.weight" in n for n in gpt2.notes)
    vit = modscope.check(str(saved["vit"]), str(saved["vit"] / "model.safetensors"))
    assert vit.ok and vit.matched == 24 and any("renamed" in n for n in vit.notes)
    state = load_file(str(saved["gpt2"] / "model.safetensors"))
    del state["transformer.wte.weight"]  # now the tie has no source: both names are really missing
    save_file(state, str(tmp_path / "broken.safetensors"))
    broken = modscope.check(str(saved["gpt2"]), str(tmp_path / "broken.safetensors"))
    assert set(broken.missing) == {"transformer.wte.weight", "lm_head.weight"}
    ddp = {f"module.{k}": v for k, v in load_file(str(saved["gpt2"] / "model.safetensors")).items()}
    save_file(ddp, str(tmp_path / "ddp.safetensors"))
    prefixed = modscope.check(str(saved["gpt2"]), str(tmp_path / "ddp.safetensors"))
    assert prefixed.suggestion.strip == "module." and prefixed.suggestion.clean


def test_weights_load_as_from_pretrained_would(saved):
    from modscope.cli.common import load_target

    model = load_target(str(saved["gpt2"]), None, None, False)  # values: the folder's own weights
    reference = transformers.GPT2LMHeadModel.from_pretrained(str(saved["gpt2"]))
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert model.lm_head.weight is model.transformer.wte.weight
    vit = load_target(str(saved["vit"]), None, None, False)
    assert torch.equal(vit.state_dict()["layers.0.attention.k_proj.weight"],
                       transformers.ViTModel.from_pretrained(str(saved["vit"])).layers[0].attention.k_proj.weight)
    on_meta = load_target(str(saved["gpt2"]), None, None, False, values=False)
    assert on_meta.lm_head.weight.is_meta


def test_checkpoint_readers_still_read_the_folder(saved):
    import modscope
    from modscope.cli.checkpoint_commands import is_checkpoint_target

    assert modscope.inspect_checkpoint(str(saved["gpt2"])).totals.tensors == 16
    assert not is_checkpoint_target(str(saved["gpt2"]))  # summary/tree show the architecture


# --- the real command line ------------------------------------------------------------------------------


def test_cli_summary_of_a_folder_checks_its_weights(saved, cache):
    done = run_modscope("summary", str(saved["gpt2"]), "--json", env=_env(cache))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["weights"]["schema"] == "modscope.check/1" and document["weights"]["missing"] == []
    assert any(set(g["names"]) == {"transformer.wte.weight", "lm_head.weight"} for g in document["shared"])
    meta = [w for w in document["warnings"] if w["code"] == "meta_tensor"]
    assert [w["severity"] for w in meta] == ["info"], "modscope chose meta itself: not a warning about the model"
    assert "built on meta from the config by modscope" in meta[0]["message"]


def test_cli_check_and_grads_on_cached_and_folder_targets(saved, cache):
    check = run_modscope("check", "hf:tiny/gpt2", env=_env(cache))
    assert check.returncode == 0, check.stderr
    assert "snapshots" in check.stdout and "tied" in check.stdout
    grads = run_modscope("grads", str(saved["t5"]), "--seq-len", "4", "--json", env=_env(cache))
    assert grads.returncode == 0, grads.stderr
    assert json.loads(grads.stdout)["counts"]["ok"] > 0


def test_cli_audit_of_timm(cache):
    audit = run_modscope("audit", "timm:test_resnet", "--arg", "num_classes=7", "--json", env=_env(cache))
    assert audit.returncode == 0, audit.stderr
    document = json.loads(audit.stdout)
    assert document["model"]["type"] == "ResNet" and document["ok"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["summary", "hf:tiny/absent"], "is not in the local Hugging Face cache (looked for "),
        (["audit", "REMOTE"], "pass --trust only if you trust them"),
        (["summary", "GPT2", "--blocked"], "pip install 'modscope[hf]'"),
        (["grads", "timm:test_resnet", "--blocked"], "pip install 'modscope[timm]'"),
    ],
)
def test_cli_refusals_are_one_line(saved, cache, tmp_path, args, expected):
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "x", "auto_map": {"AutoModel": "m.X"}}))
    args = [str(remote) if a == "REMOTE" else str(saved["gpt2"]) if a == "GPT2" else a for a in args]
    if "--blocked" in args:  # the extra is missing: a meta-path finder refuses to import it
        args.remove("--blocked")
        code = (
            "import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('transformers', 'timm'):\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Block())\n"
            f"sys.argv = ['modscope', *{args!r}]\n"
            "from modscope.cli import main\nmain()\n"
        )
        import subprocess

        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, **_env(cache)))
    else:
        done = run_modscope(*args, env=_env(cache))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modscope: error: ") and expected in lines[0], done.stderr
