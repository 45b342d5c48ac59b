"""The `dockyard` command line: exit codes (0 ok, 1 errors in a spec or an input, 2 usage), documents on
stdout and every diagnostic on stderr."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from dockyard.cli import main
from dockyard.compiler.api import compile_source

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "mappings/reference/deliveryorder.yaml"
XML_SPEC = "examples/specs/qimen-deliveryorder-xml.yaml"
FORM_SPEC = "examples/specs/sf-create-form.yaml"
ORDER_NAMES = sorted(p.stem for p in (ROOT / "examples" / "orders").glob("*.json"))
NOW = "2023-11-11T00:00:00+08:00"
XML_CTX = ["--ctx", "ownerCode=OWNER-01", "--ctx", "warehouseCode=WH-HZ-01"]
FORM_CTX = ["--ctx", "partnerId=DOCKYARD_TEST", "--ctx", "senderName=栖木仓",
            "--ctx", "senderMobile=13800000000", "--ctx", "senderProvince=浙江省",
            "--ctx", "senderCity=杭州市", "--ctx", "senderCounty=余杭区",
            "--ctx", "senderAddress=文一西路969号"]
LOCATION = re.compile(r"^(?P<file>[^\s:][^:]*):(?P<line>\d+):(?P<col>\d+): ", re.MULTILINE)

BAD_SPEC = """\
dockyard: 1
name: bad.spec
version: "1.0.0"
source: {schema: order}
target: {format: json}
output:
  code: order_no
  total: sum(items, $i => $i.qty) + "x"
  nick: byer.nick
"""


@pytest.fixture(autouse=True)
def in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def order_path(name: str) -> str:
    return f"examples/orders/{name}.json"


def expected(name: str) -> Any:
    return json.loads((ROOT / "examples" / "expected" / f"{name}.json").read_text("utf-8"))


def leaves(doc: Any, path: str = "") -> dict[str, Any]:
    if isinstance(doc, dict):
        out: dict[str, Any] = {}
        for k, v in doc.items():
            out |= leaves(v, f"{path}.{k}" if path else k)
        return out
    if isinstance(doc, list):
        out = {}
        for i, v in enumerate(doc):
            out |= leaves(v, f"{path}[{i}]")
        return out
    return {path: doc}


# --------------------------------------------------------------------------------------------------
# check


def test_check_ok() -> None:
    result = run("check", REFERENCE, XML_SPEC, FORM_SPEC)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "3 spec(s) checked: 0 error(s), 0 warning(s)" in result.stderr


def test_check_reports_errors_with_locations_and_carets(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_SPEC, encoding="utf-8")
    result = run("check", str(spec))
    assert result.exit_code == 1
    assert result.stdout == ""
    err = result.stderr
    found = [(m["file"], int(m["line"]), int(m["col"])) for m in LOCATION.finditer(err)]
    assert (str(spec), 8, 10) in found or any(line == 8 for _f, line, _c in found), err
    assert any(line == 9 for _f, line, _c in found), err
    assert all(f == str(spec) for f, _l, _c in found)
    # Each diagnostic shows its source line and a caret under the problem.
    lines = err.splitlines()
    carets = [i for i, text in enumerate(lines) if text.strip().startswith("^")]
    assert len(carets) >= 2, err
    for i in carets:
        assert lines[i - 1].strip(), "a caret line follows the source line"
    assert "byer" in err
    assert "1 spec(s) checked: 2 error(s)" in err


def test_check_caret_is_under_the_problem(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_SPEC, encoding="utf-8")
    err = run("check", str(spec)).stderr.splitlines()
    head = next(i for i, text in enumerate(err) if text.startswith(f"{spec}:9:"))
    col = int(err[head].split(":")[2])
    source, caret = err[head + 1], err[head + 2]
    assert source.strip() == "nick: byer.nick"
    assert BAD_SPEC.splitlines()[8][col - 1 :].startswith("byer")
    assert source[caret.index("^") :].startswith("byer")


# --------------------------------------------------------------------------------------------------
# compile and show-code


def test_compile_writes_a_bundle(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = run("compile", REFERENCE, XML_SPEC, FORM_SPEC, "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert sorted(manifest["mappings"]) == [
        "examples.qimen.deliveryorder-xml", "examples.sf.create-order-form", "reference.deliveryorder"]
    for entry in manifest["mappings"].values():
        assert (out / entry["module"]).is_file()
        assert (out / entry["source_schema"]).is_file()
    assert "wrote" in result.stderr


def test_compile_with_errors_writes_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_SPEC, encoding="utf-8")
    out = tmp_path / "bundle"
    result = run("compile", REFERENCE, str(spec), "-o", str(out))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert LOCATION.search(result.stderr)
    assert "no bundle written" in result.stderr
    assert not (out / "manifest.json").exists()


def test_compile_needs_an_output_directory() -> None:
    result = run("compile", REFERENCE)
    assert result.exit_code == 2
    assert "--output" in result.stderr


def test_show_code_prints_a_module_that_compiles() -> None:
    result = run("show-code", REFERENCE)
    assert result.exit_code == 0, result.stderr
    code = compile(result.stdout, "<show-code>", "exec", dont_inherit=True)
    assert code is not None
    assert result.stdout == compile_source(REFERENCE).source
    assert result.stdout.startswith("# Generated by Dockyard")
    assert "def transform(_src, _ctx, _clock, _trace=None):" in result.stdout


def test_show_code_of_a_bad_spec(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_SPEC, encoding="utf-8")
    result = run("show-code", str(spec))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert LOCATION.search(result.stderr)


# --------------------------------------------------------------------------------------------------
# dry-run


@pytest.mark.parametrize("name", ORDER_NAMES)
def test_dry_run_prints_the_body(name: str) -> None:
    result = run("dry-run", REFERENCE, order_path(name))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.endswith("\n")
    assert json.loads(result.stdout) == expected(name)


def test_dry_run_json_has_the_body_and_metadata() -> None:
    result = run("dry-run", "--json", REFERENCE, order_path("tmall-basic"))
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["mapping"] == "reference.deliveryorder"
    assert payload["version"] == "1.0.0"
    assert payload["format"] == "json"
    assert payload["content_type"].startswith("application/json")
    assert json.loads(payload["body"]) == expected("tmall-basic")
    assert "lineage" not in payload


def test_dry_run_explain_lists_every_field_with_its_spec_line_and_sources() -> None:
    result = run("dry-run", "--explain", REFERENCE, order_path("tmall-basic"))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    doc = expected("tmall-basic")
    order = json.loads((ROOT / order_path("tmall-basic")).read_text("utf-8"))
    for path, value in leaves(doc).items():
        head = f"{path} = {json.dumps(value, ensure_ascii=False)}"
        assert head in lines, f"--explain does not list {path}"
        detail = lines[lines.index(head) + 1]
        assert re.match(rf"^    {re.escape(REFERENCE)}:\d+:\d+  <- ", detail), detail
    # Line fields name their concrete source items, with the values those items hold.
    detail = lines[lines.index('orderLines[2].itemCode = "SKU-100203-BLK"') + 1]
    assert re.search(r"items\[\d+\]\.sku", detail), detail
    index = int(re.search(r"items\[(\d+)\]\.sku", detail)[1])  # type: ignore[index]
    assert order["items"][index]["sku"] == "SKU-100203-BLK", detail
    assert f'items[{index}].sku = "SKU-100203-BLK"' in detail
    # A value built from $position is credited to it (it reads no source path).
    detail = lines[lines.index('orderLines[2].orderLineNo = "3"') + 1]
    assert detail.endswith("  <- $position"), detail


def test_dry_run_explain_json_has_lineage() -> None:
    result = run("dry-run", "--explain", "--json", XML_SPEC, order_path("tmall-basic"), *XML_CTX)
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    lineage = {entry["field"]: entry for entry in payload["lineage"]}
    assert payload["body"].startswith('<?xml version="1.0" encoding="UTF-8"?>')
    entry = lineage["orderLines.orderLine[2].actualPrice"]
    assert entry["value"] == "458.23"
    assert entry["spec"].startswith(f"{XML_SPEC}:")
    assert {s["path"]: s["value"] for s in entry["sources"]} == {"items[3].unit_price": "509.15",
                                                                 "items[3].discount": "50.92"}
    assert lineage["deliveryOrder.warehouseCode"]["context"] == ["warehouseCode"]
    assert lineage["deliveryOrder.logisticsCode"]["tables"] == ["CARRIERS"]


def test_dry_run_malformed_order_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "order_no": "X",\n  "items": [1, 2,,]\n}\n', encoding="utf-8")
    result = run("dry-run", REFERENCE, str(bad))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"{bad}:3:" in result.stderr
    assert re.search(rf"{re.escape(str(bad))}:3:\d+: ", result.stderr)
    assert "not valid JSON" in result.stderr


def test_dry_run_order_that_is_not_an_object(tmp_path: Path) -> None:
    bad = tmp_path / "list.json"
    bad.write_text("[1, 2]", encoding="utf-8")
    result = run("dry-run", REFERENCE, str(bad))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "JSON object" in result.stderr


def test_dry_run_order_failing_the_schema_names_the_field(tmp_path: Path) -> None:
    order = json.loads((ROOT / order_path("tmall-basic")).read_text("utf-8"))
    order["items"][0]["qty"] = "one"
    del order["receiver"]["city"]
    bad = tmp_path / "order.json"
    bad.write_text(json.dumps(order, ensure_ascii=False), encoding="utf-8")
    for extra in ([], ["--explain"], ["--json"]):
        result = run("dry-run", *extra, REFERENCE, str(bad))
        assert result.exit_code == 1, extra
        assert result.stdout == ""
        assert "items[0].qty" in result.stderr
        assert "city" in result.stderr
        assert "TM20231111000123" in result.stderr


def test_dry_run_transform_error_names_the_spec_location(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text('dockyard: 1\nname: s\nversion: "1"\nsource: {schema: order}\ntarget: {format: json}\n'
                    "output:\n  n: decimal(remark)\n", encoding="utf-8")
    result = run("dry-run", str(spec), order_path("tmall-basic"))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"{spec}:7:6:" in result.stderr
    assert "field n" in result.stderr


def test_dry_run_spec_with_errors(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_SPEC, encoding="utf-8")
    result = run("dry-run", str(spec), order_path("tmall-basic"))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert LOCATION.search(result.stderr)


# --------------------------------------------------------------------------------------------------
# context and clock


def test_ctx_and_now_give_the_expected_xml() -> None:
    result = run("dry-run", XML_SPEC, order_path("tmall-basic"), *XML_CTX, "--now", NOW)
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == (ROOT / "examples/specs/expected/qimen-deliveryorder-xml--tmall-basic.xml"
                                   ).read_bytes()


def test_ctx_and_now_give_the_expected_form() -> None:
    result = run("dry-run", FORM_SPEC, order_path("hostile-remark"), *FORM_CTX, "--now", NOW)
    assert result.exit_code == 0, result.stderr
    expected_file = ROOT / "examples/specs/expected/sf-create-form--hostile-remark.txt"
    assert result.stdout_bytes == expected_file.read_bytes()


def test_now_sets_the_clock() -> None:
    first = run("dry-run", FORM_SPEC, order_path("tmall-basic"), *FORM_CTX, "--now", "2024-02-29T23:59:58Z")
    assert first.exit_code == 0, first.stderr
    assert "&timestamp=20240301075958&" in first.stdout
    second = run("dry-run", FORM_SPEC, order_path("tmall-basic"), *FORM_CTX,
                 "--now", "2024-02-29T23:59:58+00:00")
    assert second.stdout == first.stdout


def test_ctx_file(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx.yaml"
    ctx.write_text("ownerCode: FROM-FILE\nwarehouseCode: WH-FILE\n", encoding="utf-8")
    result = run("dry-run", XML_SPEC, order_path("tmall-basic"), "--ctx-file", str(ctx),
                 "--ctx", "ownerCode=CLI")
    assert result.exit_code == 0, result.stderr
    assert "<ownerCode>CLI</ownerCode>" in result.stdout  # --ctx wins over the file
    assert "<warehouseCode>WH-FILE</warehouseCode>" in result.stdout


def _typed_context_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "typed.yaml"
    spec.write_text('dockyard: 1\nname: typed\nversion: "1"\nsource: {schema: order}\n'
                    "target: {format: json}\ncontext:\n  n: {type: int}\n  flag: {type: bool}\n"
                    "  rate: {type: decimal}\n"
                    "output:\n  n: $ctx.n + 1\n  flag: $ctx.flag\n  rate: format_decimal($ctx.rate, 2)\n",
                    encoding="utf-8")
    return spec


def test_typed_context_from_a_file(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx.yaml"
    ctx.write_text("n: 3\nflag: true\nrate: '0.125'\n", encoding="utf-8")
    result = run("dry-run", str(_typed_context_spec(tmp_path)), order_path("tmall-basic"),
                 "--ctx-file", str(ctx))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout, parse_float=Decimal) == {"n": 4, "flag": True, "rate": "0.13"}


def test_typed_context_from_the_command_line(tmp_path: Path) -> None:
    # --ctx gives text; a context value declared int or bool must be read as one.
    result = run("dry-run", str(_typed_context_spec(tmp_path)), order_path("tmall-basic"),
                 "--ctx", "n=3", "--ctx", "flag=true", "--ctx", "rate=0.125")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"n": 4, "flag": True, "rate": "0.13"}


def test_missing_context_is_an_error() -> None:
    result = run("dry-run", XML_SPEC, order_path("tmall-basic"), "--ctx", "ownerCode=O")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "warehouseCode" in result.stderr


@pytest.mark.parametrize("now", ["2023-11-11T00:00:00", "2023-11-11"], ids=["no-offset", "date-only"])
def test_now_without_an_offset_is_a_usage_error(now: str) -> None:
    result = run("dry-run", FORM_SPEC, order_path("tmall-basic"), *FORM_CTX, "--now", now)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "offset" in result.stderr


def test_now_that_is_not_a_date_is_a_usage_error() -> None:
    result = run("dry-run", FORM_SPEC, order_path("tmall-basic"), *FORM_CTX, "--now", "tomorrow")
    assert result.exit_code == 2
    assert "ISO-8601" in result.stderr


def test_ctx_without_equals_is_a_usage_error() -> None:
    result = run("dry-run", XML_SPEC, order_path("tmall-basic"), "--ctx", "ownerCode")
    assert result.exit_code == 2
    assert "NAME=VALUE" in result.stderr


# --------------------------------------------------------------------------------------------------
# usage errors


@pytest.mark.parametrize("args", [
    ["dry-run", "--bogus", REFERENCE, "examples/orders/tmall-basic.json"],
    ["dry-run", REFERENCE],
    ["no-such-command"],
    ["check"],
    ["compile", REFERENCE, "-o"],
], ids=["unknown-option", "missing-argument", "unknown-command", "check-without-specs",
        "option-without-value"])
def test_bad_usage_exits_2(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr


@pytest.mark.parametrize("args", [
    ["check", "no/such/spec.yaml"],
    ["show-code", "no/such/spec.yaml"],
    ["compile", "no/such/spec.yaml", "-o", "{tmp}/out"],
    ["dry-run", "no/such/spec.yaml", "examples/orders/tmall-basic.json"],
    ["dry-run", REFERENCE, "no/such/order.json"],
    ["dry-run", REFERENCE, "examples/orders/tmall-basic.json", "--ctx-file", "no/such/ctx.yaml"],
], ids=["check", "show-code", "compile", "dry-run-spec", "dry-run-order", "dry-run-ctx-file"])
def test_a_missing_file_is_a_usage_error(args: list[str], tmp_path: Path) -> None:
    result = run(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert result.stdout == ""
    assert "no/such/" in result.stderr
    assert not (tmp_path / "out").exists()


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert "0.1.0" in result.stdout
