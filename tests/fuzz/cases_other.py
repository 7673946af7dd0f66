"""Fuzz cases for safetensors files, sharded indexes, torch.distributed.checkpoint folders, FIFOs and
other paths that are not regular checkpoint files."""
from __future__ import annotations

import json
import os
import random
import shutil

import torch

from tests.fuzz import other_files as of
from tests.fuzz import pickles as pk
from tests.fuzz import torch_files as tf
from tests.fuzz.cases import Builder

WEIGHT = "body.0.weight"
META_ONLY = ("summary", "summary-json", "tree", "tree-json", "keys-only", "diff-ref-keys", "check")


def add_all(b: Builder) -> None:
    _safetensors_cases(b)
    _index_cases(b)
    _dcp_cases(b)
    _special_cases(b)


def _safetensors_cases(b: Builder) -> None:
    d, state = b.folder("safetensors"), tf.net_state()
    ref = of.write_safetensors(d / "valid.safetensors", state)
    b.valid("safetensors/valid", ref, ref)
    b.valid("safetensors/named.pt", shutil.copy(ref, d / "weights.pt"), ref)
    header, data = of.split_safetensors(ref)
    text = json.dumps(header)
    b.valid("safetensors/padded-header", of.raw_safetensors(d / "padded.safetensors", text + " " * 13, data), ref)

    def hdr(name, change, kind="bad", **options):
        path = of.mutated_header(ref, d / f"{name}.safetensors", change)
        getattr(b, kind)(f"safetensors/{name}", path, ref, **options)

    def entry(name, **fields):
        hdr(name, lambda h: {**h, WEIGHT: {**h[WEIGHT], **fields}})

    begin, end = header[WEIGHT]["data_offsets"]
    entry("end-beyond-data", data_offsets=[begin, len(data) + 64])
    entry("begin-after-end", data_offsets=[end, begin])
    entry("negative-offset", data_offsets=[-8, end])
    entry("offset-not-int", data_offsets=["a", end])
    entry("offset-float", data_offsets=[begin + 0.5, end])
    entry("offsets-three", data_offsets=[begin, end, end])
    entry("huge-offset", data_offsets=[2**63, 2**63 + 96])
    entry("unknown-dtype", dtype="F99")
    entry("dtype-size-mismatch", dtype="F64")
    entry("huge-shape", shape=[2**40, 2**40])
    entry("overflow-shape", shape=[2**63])
    entry("negative-shape", shape=[-6, -4])
    entry("shape-not-int", shape=["6", 4])
    entry("shape-not-list", shape=24)
    other = next(n for n in header if n not in ("__metadata__", WEIGHT) and header[n]["dtype"] == "F32")
    hdr("overlapping", lambda h: {**h, other: {**h[other], "data_offsets": h[WEIGHT]["data_offsets"],
                                                "shape": h[WEIGHT]["shape"]}})  # fmt: skip
    hdr("entry-not-object", lambda h: {**h, WEIGHT: 5})
    hdr("entry-missing-dtype", lambda h: {**h, WEIGHT: {k: v for k, v in h[WEIGHT].items() if k != "dtype"}})
    hdr("metadata-wrong-type", lambda h: {**h, "__metadata__": {"format": 5}}, kind="either")
    hdr("metadata-deep", lambda h: {**h, "__metadata__": {"x": json.loads(of.deep_json(500))}}, kind="either")
    raw = [
        ("header-len-huge", {"length": 2**62}),
        ("header-len-past-end", {"length": len(text) + len(data) + 1000}),
        ("header-len-zero", {"length": 0}),
        ("header-len-short", {"length": len(text) // 2}),
    ]
    for name, options in raw:
        b.bad(f"safetensors/{name}", of.raw_safetensors(d / f"{name}.safetensors", text, data, **options), ref)
    texts = {
        "not-json": "{garbage",
        "not-object": "[1, 2, 3]",
        "deep-nesting": '{"__metadata__": ' + of.deep_json(10**5) + "}",
        "deep-entry": '{"w": {"dtype": "F32", "shape": ' + of.deep_json(10**5) + ', "data_offsets": [0, 4]}}',
    }
    for name, body in texts.items():
        b.bad(f"safetensors/{name}", of.raw_safetensors(d / f"{name}.safetensors", body, data), ref)
    duplicate = text[:-1] + ", " + json.dumps(WEIGHT) + ": " + json.dumps(header[WEIGHT]) + "}"
    b.either("safetensors/duplicate-name", of.raw_safetensors(d / "duplicate.safetensors", duplicate, data), ref)
    b.bad("safetensors/bad-utf8", of.raw_safetensors(d / "bad-utf8.safetensors", b'{"\xff\xfe": 1}', data), ref)
    blob = ref.read_bytes()
    for n in (8, 20, len(blob) - len(data) - 1, len(blob) - 10, len(blob) - 1):
        b.bad(f"safetensors/truncated-{n}", tf.truncated(ref, d / f"truncated-{n}.safetensors", n), ref)
    rng = random.Random(3)
    for seed in range(40 if b.full else 6):
        path = tf.flipped(ref, d / f"flip-{seed}.safetensors", list(range(8, 8 + len(text))), seed=rng.randrange(10**6))
        b.either(f"safetensors/flip-header-{seed}", path, ref)
    awkward = {"long-dotted-name": ({".".join(["m"] * 60_000): {"dtype": "F32", "shape": [1],
                                                                 "data_offsets": [0, 4]}}, bytes(4))}  # fmt: skip
    awkward["many-entries"] = of.many_entries(10**6 if b.full else 20_000)
    awkward["many-dots-many-entries"] = of.many_entries(2_000, dotted_parts=60)
    for name, (head, blob) in awkward.items():
        path = of.raw_safetensors(d / f"{name}.safetensors", head, blob)
        b.valid(f"safetensors/{name}", path, ref, same=False, fits=False, refusable=True,
                bounded=path.stat().st_size < 4 << 20)  # fmt: skip


def _index_cases(b: Builder) -> None:
    d, state = b.folder("index"), tf.net_state()
    ref = of.write_sharded(d / "valid", state)
    b.valid("index/valid", ref, ref)
    b.valid("index/folder", ref.parent, ref)
    b.valid("index/bin-shards", of.write_sharded(d / "bin", state, kind="bin"), ref)
    outside = b.outside / "outside.safetensors"
    first = next(iter(json.loads(ref.read_text())["weight_map"].values()))
    shutil.copy(ref.parent / first, outside)

    def doc(name, change, kind="bad", **options):
        index = of.retargeted_index(ref.parent, d / name, change)
        getattr(b, kind)(f"index/{name}", index, ref, **options)

    def shards_at(target):
        """An index change: the first shard's file named ``target`` instead."""
        return lambda doc: {**doc, "weight_map": {k: target if v == first else v for k, v in doc["weight_map"].items()}}

    doc("dotdot", shards_at(os.path.relpath(outside, d / "dotdot")))
    doc("absolute", shards_at(str(outside)))
    doc("missing-shard", shards_at("nowhere.safetensors"))
    doc("shard-is-folder", shards_at("."))
    doc("weight-map-list", lambda doc: {**doc, "weight_map": list(doc["weight_map"])})
    doc("weight-map-null", lambda doc: {**doc, "weight_map": None})
    doc("shard-name-int", lambda doc: {**doc, "weight_map": {k: 5 for k in doc["weight_map"]}})
    doc("top-level-list", lambda doc: [doc])
    doc("deep-nesting", lambda doc: '{"weight_map": ' + of.deep_json(10**5) + "}")
    doc("deep-metadata", lambda doc: '{"metadata": ' + of.deep_json(10**5) + ', "weight_map": '
        + json.dumps(doc["weight_map"]) + "}")  # fmt: skip
    doc("not-json", lambda doc: '{"weight_map": {"a": ')

    index = of.retargeted_index(ref.parent, d / "symlink-out", lambda doc: doc)
    (index.parent / first).unlink()
    os.symlink(outside, index.parent / first)
    b.bad("index/symlink-out", index, ref)
    index = of.retargeted_index(ref.parent, d / "symlink-dir-out", shards_at(f"sub/{os.path.basename(outside)}"))
    os.symlink(b.outside, index.parent / "sub")
    b.bad("index/symlink-dir-out", index, ref)
    index = of.retargeted_index(ref.parent, d / "symlink-inside", shards_at(f"blobs/{first}"))
    (index.parent / "blobs").mkdir()
    os.replace(index.parent / first, index.parent / "blobs" / first)
    os.symlink(f"blobs/{first}", index.parent / first)
    b.valid("index/symlink-inside", index, ref)
    index = of.retargeted_index(ref.parent, d / "shard-fifo", lambda doc: doc)
    (index.parent / first).unlink()
    of.make_fifo(index.parent / first)
    b.bad("index/shard-fifo", index, ref)

    bin_index = d / "bin" / "pytorch_model.bin.index.json"
    bin_first = next(iter(json.loads(bin_index.read_text())["weight_map"].values()))
    for kind in ("os.system", "builtins.exec"):
        name = f"payload/index-shard-{kind}"
        folder = d / f"payload-{kind}"
        shutil.copytree(bin_index.parent, folder)
        evil = {"evil": pk.payloads(b.marker(name))[kind]}
        part = {k: v for k, v in state.items() if bin_first in json.loads(bin_index.read_text())["weight_map"][k]}
        tf.crafted_zip(folder / bin_first, part, extra=evil)
        b.bad(name, folder / bin_index.name, ref, marker=b.marker(name))
    name = "payload/index-torchscript-shard"
    folder = d / "torchscript-shard"
    shutil.copytree(bin_index.parent, folder)
    tf.torchscript_payload(folder / bin_first, b.marker(name))
    b.bad(name, folder / bin_index.name, ref, marker=b.marker(name))


def _dcp_cases(b: Builder) -> None:
    d, state = b.folder("dcp"), tf.net_state()
    ref = of.write_dcp(d / "valid", state)
    b.valid("dcp/valid", ref, ref)
    b.valid("dcp/nested", of.write_dcp(d / "nested", {"model": state, "epoch": 3}), ref)
    data = next(p for p in ref.iterdir() if p.suffix == ".distcp")
    outside = b.outside / data.name
    shutil.copy(data, outside)

    def meta(name, change, kind="bad", **options):
        getattr(b, kind)(f"dcp/{name}", of.mutated_dcp(ref, d / name, change), ref, **options)

    meta("dotdot", of.storage_paths(os.path.relpath(outside, d / "dotdot")))
    meta("absolute", of.storage_paths(str(outside)))
    meta("missing-file", of.storage_paths("nowhere.distcp"))
    meta("huge-offset", of.storage_numbers(offset=10**12))
    meta("huge-length", of.storage_numbers(length=10**15))
    meta("negative-offset", of.storage_numbers(offset=-100))

    def retyped(field_name, value):
        def change(metadata):
            setattr(metadata, field_name, value)
            return metadata

        return change

    meta("storage-data-list", retyped("storage_data", []))
    meta("state-dict-metadata-str", retyped("state_dict_metadata", "x"))
    meta("plain-dict", lambda m: pk.whole(pk.dict_([("state_dict_metadata", {})])))

    def tensor_field(field_name, value):
        def change(metadata):
            item = metadata.state_dict_metadata[WEIGHT]
            setattr(item, field_name, value)
            return metadata

        return change

    meta("size-str", tensor_field("size", "abc"))
    meta("chunks-none", tensor_field("chunks", None))
    meta("huge-size", tensor_field("size", torch.Size([2**40, 2**40])))
    meta("truncated-metadata", lambda m: pk.whole(b"")[:1] + b"\x80")
    meta("empty-metadata", lambda m: b"")
    for kind in ("os.system", "builtins.exec"):
        name = f"payload/dcp-metadata-{kind}"
        evil = pk.whole(pk.payloads(b.marker(name))[kind])
        b.bad(name, of.mutated_dcp(ref, d / f"payload-{kind}", lambda m, e=evil: e), ref, marker=b.marker(name))
    folder = of.mutated_dcp(ref, d / "truncated-data", lambda m: m)
    tf.truncated(data, folder / data.name, data.stat().st_size // 2)
    b.bad("dcp/truncated-data", folder, ref, expect={c: {0, 1, 2} for c in META_ONLY})
    folder = of.mutated_dcp(ref, d / "symlink-out", lambda m: m)
    (folder / data.name).unlink()
    os.symlink(outside, folder / data.name)
    b.bad("dcp/symlink-out", folder, ref)


def _special_cases(b: Builder) -> None:
    d = b.folder("special")
    ref = b.root / "cases" / "torch" / "valid.pt"
    b.bad("special/fifo.safetensors", of.make_fifo(d / "fifo.safetensors"), ref)
    b.bad("special/fifo.pt", of.make_fifo(d / "fifo.pt"), ref)
    folder = d / "fifo-folder"
    folder.mkdir()
    of.make_fifo(folder / "weights.safetensors")
    b.bad("special/fifo-folder", folder, ref)
    folder = d / "fifo-model-folder"
    folder.mkdir()
    of.make_fifo(folder / "model.safetensors")
    b.bad("special/fifo-model-folder", folder, ref)
    (d / "empty.pt").write_bytes(b"")
    b.bad("special/empty-file", d / "empty.pt", ref)
    (d / "empty-folder").mkdir()
    b.bad("special/empty-folder", d / "empty-folder", ref)
    b.bad("special/missing.pt", d / "missing.pt", ref)
    (d / "text.pt").write_text("hello\n")
    b.bad("special/text-file", d / "text.pt", ref)
    for device in ("/dev/null", "/dev/zero"):
        if os.path.exists(device):
            b.bad(f"special{device}", device, ref)
