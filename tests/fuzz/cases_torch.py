"""Fuzz cases for torch.save zip archives, legacy files, nested checkpoints and TorchScript archives."""
from __future__ import annotations

import random
import zipfile

import torch

from tests.fuzz import pickles as pk
from tests.fuzz import torch_files as tf
from tests.fuzz.cases import Builder

WEIGHT = "body.0.weight"  # a (6, 4) float32 tensor of the fuzz model


def add_all(b: Builder) -> None:
    reference = _zip_cases(b)
    _payload_cases(b, reference)
    _nested_cases(b, reference)
    _legacy_cases(b, reference)
    _torchscript_cases(b, reference)


def _zip_cases(b: Builder):
    d, state = b.folder("torch"), tf.net_state()
    ref = d / "valid.pt"
    torch.save(state, ref)
    b.valid("torch/valid", ref, ref)
    b.valid("torch/crafted", tf.crafted_zip(d / "crafted.pt", state), ref)
    b.valid("torch/rewrite-stored", tf.rewritten(ref, d / "stored.pt", zipfile.ZIP_STORED), ref)
    b.valid("torch/rewrite-deflated", tf.rewritten(ref, d / "deflated.pt", zipfile.ZIP_DEFLATED), ref, refusable=True)
    b.valid("torch/big-endian", tf.crafted_zip(d / "big.pt", state, byteorder="big"), ref, refusable=True)
    b.valid("torch/renamed.bin", tf.rewritten(ref, d / "weights.bin", zipfile.ZIP_STORED), ref)

    size = ref.stat().st_size
    points = [1, 4, 30, 100, size // 4, size // 2, 3 * size // 4, size - 22, size - 1]
    if b.full:
        points += sorted(random.Random(1).sample(range(1, size), 40))
    for n in sorted(set(points)):
        b.bad(f"torch/truncated-{n}", tf.truncated(ref, d / f"truncated-{n}.pt", n), ref)

    regions = tf.zip_regions(ref)
    per_region = 12 if b.full else 3
    for region, positions in regions.items():
        for seed in range(per_region):
            path = tf.flipped(ref, d / f"flip-{region}-{seed}.pt", positions, seed=seed)
            b.either(f"torch/flip-{region}-{seed}", path, ref)

    raw = state[WEIGHT].numpy().tobytes()
    lies = {
        "short-record": dict(records={"0": raw[: len(raw) // 2]}),
        "missing-record": dict(records={"0": None}),
        "huge-numel": dict(claims={WEIGHT: {"numel": 10**15, "size": [10**15]}}),
        "overflow-numel": dict(claims={WEIGHT: {"numel": 2**62, "size": [2**31, 2**31]}}),
        "size-beyond-storage": dict(claims={WEIGHT: {"size": [1000]}}),
        "offset-beyond": dict(claims={WEIGHT: {"offset": 10**12}}),
        "negative-size": dict(claims={WEIGHT: {"size": [-1, 4]}}),
        "negative-stride": dict(claims={WEIGHT: {"stride": [-1, 1]}}),
        "dtype-lie": dict(claims={WEIGHT: {"dtype": "float64"}}),
    }
    for name, lie in lies.items():
        b.bad(f"torch/{name}", tf.crafted_zip(d / f"{name}.pt", state, **lie), ref)

    inflated = (1 << 30) if b.full else (256 << 20)
    b.bad("torch/zip-bomb", tf.zip_bomb(d / "bomb.pt", inflated), ref)
    b.bad("torch/zip-bomb-lying", tf.zip_bomb(d / "bomb_lying.pt", inflated, lie=True), ref)
    deep = 10**6 if b.full else 10**5
    nested_dicts = (pk.EMPTY_DICT + pk.string("a")) * deep + pk.EMPTY_DICT + b"s" * deep
    b.bad("torch/deep-dicts", tf.crafted_zip(d / "deep.pt", {}, top=nested_dicts), ref)
    return ref


def _payload_cases(b: Builder, ref) -> None:
    d, state = b.folder("payload"), tf.net_state()
    for kind in pk.payloads("x"):
        name = f"payload/zip-{kind}"
        payload = pk.payloads(b.marker(name))[kind]
        b.bad(name, tf.crafted_zip(d / f"{kind}.pt", state, extra={"evil": payload}), ref, marker=b.marker(name))
    name = "payload/zip-top-level"
    top = pk.payloads(b.marker(name))["os.system"]
    b.bad(name, tf.crafted_zip(d / "top.pt", state, top=top), ref, marker=b.marker(name))
    name = "payload/zip-nested"
    inner = pk.dict_([("model", pk.dict_([("x", pk.payloads(b.marker(name))["subprocess.call"])]))])
    b.bad(name, tf.crafted_zip(d / "nested.pt", state, extra={"config": inner}), ref, marker=b.marker(name))
    name = "payload/zip-shadowing-tensor"  # a second value under a tensor's name
    evil = pk.payloads(b.marker(name))["builtins.exec"]
    b.bad(name, tf.crafted_zip(d / "shadow.pt", state, extra={WEIGHT: evil}), ref, marker=b.marker(name))


def _nested_cases(b: Builder, ref) -> None:
    d, state = b.folder("nested"), tf.net_state()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1, momentum=0.9).state_dict()
    torch.save({"model": state, "optimizer": optimizer, "epoch": 3}, d / "model-optimizer.pt")
    b.valid("nested/model-optimizer", d / "model-optimizer.pt", ref)
    lightning = {"state_dict": state, "optimizer_states": [optimizer], "epoch": 1, "global_step": 5}
    torch.save(lightning, d / "lightning.ckpt")
    b.valid("nested/lightning", d / "lightning.ckpt", ref)
    torch.save({"model": state, "config": {"lr": 0.1, "name": "x", "layers": [1, 2]}}, d / "config.pt")
    b.valid("nested/with-config", d / "config.pt", ref)
    torch.save({"model": state, "ema": tf.net_state(1)}, d / "ambiguous.pt")
    b.bad("nested/ambiguous", d / "ambiguous.pt", ref)  # needs --key: one line naming the candidates
    torch.save({"epoch": 3, "step": 7}, d / "no-tensors.pt")
    b.valid("nested/no-tensors", d / "no-tensors.pt", ref, same=False, fits=False)  # an empty state dict


def _legacy_cases(b: Builder, ref) -> None:
    d, state = b.folder("legacy"), tf.net_state()
    lref = d / "valid.pt"
    torch.save(state, lref, _use_new_zipfile_serialization=False)
    b.valid("legacy/valid", lref, ref)
    b.valid("legacy/crafted", tf.crafted_legacy(d / "crafted.pt", state), ref)
    size = lref.stat().st_size
    points = [1, 10, 40, size // 3, size // 2, size - 8, size - 1]
    if b.full:
        points += sorted(random.Random(2).sample(range(1, size), 20))
    for n in sorted(set(points)):
        b.bad(f"legacy/truncated-{n}", tf.truncated(lref, d / f"truncated-{n}.pt", n), ref)
    b.bad("legacy/huge-data-numel", tf.crafted_legacy(d / "huge-data.pt", state, data_numel={WEIGHT: 10**15}), ref)
    b.bad("legacy/huge-claim", tf.crafted_legacy(
        d / "huge-claim.pt", state, claims={WEIGHT: {"numel": 10**15, "size": [10**15]}}
    ), ref)
    for kind in ("os.system", "builtins.exec", "subprocess.Popen"):
        name = f"payload/legacy-{kind}"
        payload = pk.payloads(b.marker(name))[kind]
        path = tf.crafted_legacy(d / f"payload-{kind}.pt", state, extra={"evil": payload})
        b.bad(name, path, ref, marker=b.marker(name))


def _torchscript_cases(b: Builder, ref) -> None:
    d = b.folder("torchscript")
    name = "torchscript/payload"
    b.either(name, tf.torchscript_payload(d / "payload.pt", b.marker(name)), ref, marker=b.marker(name),
             expect={"audit": {2}, "shared": {2}})  # fmt: skip
    name = "torchscript/payload-folder"
    folder = d / "folder"
    folder.mkdir()
    tf.torchscript_payload(folder / "model.pt", b.marker(name))
    b.either(name, folder, ref, marker=b.marker(name), expect={"audit": {2}, "shared": {2}})
    plain = tf.Net()
    plain.load_state_dict(tf.net_state())
    b.either("torchscript/plain", tf.torchscript_plain(d / "plain.pt", plain.eval()), ref,
             expect={"audit": {2}, "shared": {2}})  # fmt: skip
