"""The shipped JSON Schemas (modscope/schemas/) hold every command's real ``--json`` output, and docs/json.md
names every key they hold: a key added to a document without its schema and its doc row fails here."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import jsonschema
import pytest

from modscope import schemas
from modscope.reports.static import FINDING_CODES
from tests.conftest import REPO, run_modscope

JSON_MD = REPO / "docs" / "json.md"


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> dict:
    """Every case of tests/json_documents.py: the real CLI's documents (one process, torch imported once)."""
    out = tmp_path_factory.mktemp("json") / "documents.json"
    done = subprocess.run([sys.executable, str(REPO / "tests" / "json_documents.py"), str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def _validator(name: str):
    return jsonschema.Draft202012Validator(schemas.load(name), registry=schemas.registry())


def test_every_schema_is_a_valid_json_schema_with_closed_objects():
    for name in schemas.names():
        schema = schemas.load(name)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["title"] == f"modscope.{name}/1" and schema["$id"] == f"{name}.json"
        for where, node in _objects(schema):
            extra = node.get("additionalProperties")
            assert extra is False or (isinstance(extra, dict) and "properties" not in node), (
                f"{name}.json {where}: an object must close its keys (additionalProperties: false) or be a map")


def test_every_real_document_matches_its_schema(documents):
    seen = set()
    for case, run in documents.items():
        doc = run["doc"]
        assert doc is not None, f"{case}: {run['argv']} printed no document (exit {run['code']})"
        name = schemas.name_of(doc["schema"])
        assert name is not None, f"{case}: no schema shipped for {doc['schema']}"
        errors = sorted(_validator(name).iter_errors(doc), key=lambda e: list(e.absolute_path))
        assert not errors, f"{case} ({' '.join(run['argv'])}): " + "; ".join(
            f"at {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}" for e in errors[:5])
        seen.add(name)
    assert seen == set(schemas.names()), f"no real document checked for {set(schemas.names()) - seen}"


def test_an_undocumented_key_fails_validation(documents):
    doc = json.loads(json.dumps(documents["summary_forward"]["doc"]))
    doc["modules"][1]["surprise"] = 1
    errors = list(_validator("summary").iter_errors(doc))
    assert errors and "surprise" in errors[0].message


def test_the_documents_cover_what_the_schemas_allow(documents):
    """The cases reach the optional parts: forward keys, a failed pass, a DCP layout, both nan phases."""
    docs = {case: run["doc"] for case, run in documents.items()}
    assert docs["summary_failed_forward"]["forward"]["error"]["module"] == "net.7"
    assert docs["summary_forward"]["modules"][1]["calls"] == 1 and docs["summary_forward"]["memory"]["precisions"]
    assert docs["checkpoint_dcp"]["layout"]["tensors"] and docs["checkpoint_tree_dcp"]["layout"]["files"]
    assert docs["nan_forward"]["forward"]["module"] == "log" and docs["nan_backward"]["backward"] is not None
    assert docs["check"]["suggestion"]["strip"] == "module." and docs["check_mismatch"]["shape_mismatches"]
    assert docs["diff"]["value_changed"] and docs["diff"]["dtype_changed"] and docs["diff"]["shape_changed"]
    assert {n["kind"] for n in docs["graph_dataflow"]["nodes"]} == {"module", "op", "input", "output"}
    assert docs["time"]["backward"] is not None and docs["grad_watch"]["steps"][1]["step"] == 2


# --- docs/json.md against the schemas ------------------------------------------------------------------

def _objects(node, where="#"):
    """Every object schema inside ``node`` (with a JSON-pointer-ish location)."""
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield where, node
        for key, value in node.items():
            yield from _objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects(value, f"{where}/{i}")


def _keys(name: str, *, across_files: bool) -> set[str]:
    """Property names reachable from the schema's root; cross-file $refs followed only when asked."""
    found, seen = set(), set()
    stack = [(name, schemas.load(name))]
    while stack:
        file, node = stack.pop()
        if isinstance(node, list):
            stack.extend((file, v) for v in node)
            continue
        if not isinstance(node, dict):
            continue
        ref = node.get("$ref")
        if ref is not None:
            target, _, pointer = ref.partition("#")
            target = target.removesuffix(".json") or file
            if (target == file or across_files) and (target, pointer) not in seen:
                seen.add((target, pointer))
                resolved = schemas.load(target)
                for part in pointer.strip("/").split("/"):
                    resolved = resolved[part]
                stack.append((target, resolved))
            continue
        found.update(node.get("properties", {}))
        stack.extend((file, v) for k, v in node.items() if k not in ("$defs",))
    return found - {"schema"}


def _sections() -> dict[str, str]:
    """json.md's text per schema: from its ``## `modscope.NAME/1` `` heading to the next ``## ``."""
    text = JSON_MD.read_text()
    parts = re.split(r"^## ", text, flags=re.M)
    found = {}
    for part in parts[1:]:
        heading = part.splitlines()[0]
        match = re.match(r"`modscope\.(\w+)/1`", heading)
        if match:
            found[match.group(1)] = part
    return found


def _named(text: str) -> set[str]:
    """Key names written in backticks: `key`, and each name in an object written out, `{key, a_shape}`."""
    found = set()
    for span in re.findall(r"`([^`]+)`", text):
        if re.fullmatch(r"[A-Za-z_]\w*", span):
            found.add(span)
        elif span.startswith("{"):  # an object written out: {key, a_shape}, {"median_ns", "p90_ns"}
            found.update(re.findall(r"[A-Za-z_]\w*", span))
    return found


def _first_column(section: str) -> list[set[str]]:
    """The keys in the first column of each table, one set per table."""
    tables, current = [], None
    for line in section.splitlines():
        if line.startswith("| ---"):
            continue
        if line.startswith("| "):
            cell = line.split("|")[1]
            if cell.strip() == "key":
                current = set()
                tables.append(current)
            elif current is not None:
                current.update(_named(cell))
        else:
            current = None
    return tables


def test_json_md_has_a_section_for_every_schema_and_no_other():
    assert sorted(_sections()) == sorted(schemas.names())


@pytest.mark.parametrize("name", schemas.names())
def test_json_md_documents_every_key_of_the_schema_and_no_other(name):
    section = _sections()[name]
    named = _named(section)
    missing = sorted(_keys(name, across_files=False) - named)
    assert not missing, f"docs/json.md, modscope.{name}/1 never names these keys of schemas/{name}.json: {missing}"
    tables = _first_column(section)
    assert tables, f"docs/json.md, modscope.{name}/1 has no key table"
    top = set(schemas.load(name)["properties"]) - {"schema"}
    rows = set().union(*tables)
    assert top <= rows, f"modscope.{name}/1: top-level keys without a row in json.md: {sorted(top - rows)}"
    assert tables[0] <= top | {"schema"}, f"modscope.{name}/1: json.md's first table lists keys the document lacks: {sorted(tables[0] - top)}"
    unknown = rows - _keys(name, across_files=True) - {"schema"}
    assert not unknown, f"modscope.{name}/1: json.md's tables list keys the schema lacks: {sorted(unknown)}"


def test_json_md_lists_every_finding_code_once_in_the_warning_codes():
    section = _sections()["summary"]
    paragraph = section[section.index("Warning codes:"):].split("\n\n")[0]
    assert set(re.findall(r"`([a-z_]+)`", paragraph)) >= set(FINDING_CODES) - {"device_mismatch", "dtype_mismatch"}
    assert section.count("`uninitialized_parameter`") == 1, "the list of codes is written twice"


# --- the command ---------------------------------------------------------------------------------------

def test_schema_command_prints_the_shipped_file_and_lists_the_names():
    done = run_modscope("schema", "modscope.grads/1")
    assert done.returncode == 0 and json.loads(done.stdout) == schemas.load("grads")
    listing = run_modscope("schema")
    assert listing.returncode == 0
    assert [line.split()[0] for line in listing.stdout.splitlines()] == schemas.names()
    wrong = run_modscope("schema", "sumary")
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert wrong.stderr.count("\n") == 1 and "no schema named 'sumary'" in wrong.stderr and "summary" in wrong.stderr


def test_the_schemas_ship_as_package_data():
    text = (REPO / "pyproject.toml").read_text()
    assert '"modscope.schemas" = ["*.json"]' in text
    assert sorted(p.stem for p in (REPO / "modscope" / "schemas").glob("*.json")) == sorted(schemas.names())
