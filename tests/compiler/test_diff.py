"""`dockyard diff` and the canonical documents it is measured against.

The spec pairs live in tests/compiler/diff/: base.yaml (the reference mapping with a signed request)
and one edited copy per family of changes. Each pair's changes are pinned exactly, in both
directions where the reverse is meaningful (an addition read backwards is a removal). The second
half checks the canonical status-event and outcome schemas with valid and invalid documents, and
that a mapping can target them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
from click.testing import CliRunner, Result

from dockyard.compiler.api import check_file, compile_file
from dockyard.compiler.diff import Change, diff_files, diff_specs
from dockyard.diff_cli import diff
from dockyard.dsl.diagnostics import DiagnosticsError
from dockyard.dsl.spec_parser import load_builtin_schema

ROOT = Path(__file__).resolve().parents[2]
DIFF = Path(__file__).resolve().parent / "diff"
SPECS = sorted(p.name for p in DIFF.glob("*.yaml"))

Row = tuple[bool, str, str, str]  # (breaking, kind, path, detail)


@pytest.fixture(autouse=True)
def in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # Spec paths are shown relative to the working directory.
    monkeypatch.chdir(ROOT)


def spec(name: str) -> str:
    return str((DIFF / name).relative_to(ROOT))


def changes(old: str, new: str) -> list[Row]:
    return [(c.breaking, c.kind, c.path, c.detail) for c in diff_files(spec(old), spec(new)).changes]


# --- no change ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", SPECS)
def test_a_spec_against_itself_has_no_changes(name: str) -> None:
    assert changes(name, name) == []


def test_layout_comments_quoting_order_and_written_out_defaults_are_no_change() -> None:
    # JSON field order, table row order, spacing and quotes in expressions, `into: query.sign`
    # (qimen-md5's own placement), `params: query`, `body: body`, and 720h == 30d.
    assert changes("base.yaml", "cosmetic.yaml") == []


# --- the output tree ---------------------------------------------------------------------------

def test_additions_are_not_breaking() -> None:
    assert changes("base.yaml", "additions.yaml") == [
        (False, "now-required", "deliveryOrder.sellerMessage", "was optional"),
        (False, "added", "deliveryOrder.buyerMessage", "optional"),
        (False, "added", "deliveryOrder.shopCode", "required"),
        (False, "added", "deliveryOrder.senderInfo", "optional"),  # once, not once per field inside
        (False, "added", "orderLines[].barcode", "optional"),
        (False, "added", "table WAREHOUSE_BY_SHOP[PDD-001]", "WH-CD-01"),
        (False, "added", "table ORDER_TYPE", "4 entries"),
        (False, "added", "request.query.partner_id", "required, given to the signer qimen-md5"),
        (False, "added", "request.headers.X-Request-Id", "required"),
        (False, "changed", "request.idempotency.ttl", "30d → 90d"),
    ]
    assert not diff_files(spec("base.yaml"), spec("additions.yaml")).breaking


def test_removals_are_breaking() -> None:
    assert changes("additions.yaml", "base.yaml") == [
        (True, "now-optional", "deliveryOrder.sellerMessage", "was required"),
        (True, "removed", "deliveryOrder.buyerMessage", ""),
        (True, "removed", "deliveryOrder.shopCode", ""),
        (True, "removed", "deliveryOrder.senderInfo", ""),
        (True, "removed", "orderLines[].barcode", ""),
        (True, "removed", "table WAREHOUSE_BY_SHOP[PDD-001]", "was WH-CD-01"),
        (True, "removed", "table ORDER_TYPE", "4 entries"),
        (True, "removed", "request.query.partner_id", ""),
        (True, "removed", "request.headers.X-Request-Id", ""),
        (True, "changed", "request.idempotency.ttl", "90d → 30d"),
    ]


def test_removed_retyped_and_now_optional_fields_are_breaking() -> None:
    assert changes("base.yaml", "fields.yaml") == [
        (True, "now-optional", "deliveryOrder.buyerNick", "was required"),
        (True, "removed", "deliveryOrder.remark", ""),
        (True, "retyped", "deliveryOrder.totalQty", "int → string"),
        (True, "retyped", "deliveryOrder.totalAmount", "string → decimal"),
        (True, "retyped", "deliveryOrder.invoice", "object → list of object"),
        (True, "retyped", "orderLines[].planQty", "int → string"),
        (True, "removed", "orderLines[].isGift", ""),
    ]


def test_retypes_are_breaking_both_ways_and_now_required_is_not() -> None:
    assert changes("fields.yaml", "base.yaml") == [
        (False, "now-required", "deliveryOrder.buyerNick", "was optional"),
        (True, "retyped", "deliveryOrder.totalQty", "string → int"),
        (True, "retyped", "deliveryOrder.totalAmount", "decimal → string"),
        (True, "retyped", "deliveryOrder.invoice", "list of object → object"),
        (False, "added", "deliveryOrder.remark", "required"),
        (True, "retyped", "orderLines[].planQty", "string → int"),
        (False, "added", "orderLines[].isGift", "required"),
    ]


# --- target settings ---------------------------------------------------------------------------

def test_a_format_change_is_breaking() -> None:
    assert changes("base.yaml", "xml.yaml") == [
        (True, "changed", "target.format", "json → xml"),
        (True, "changed", "request.query.format", '"json" → "xml"'),
        (True, "changed", "request.headers.Content-Type",
         '"application/json;charset=utf-8" → "text/xml;charset=utf-8"'),
    ]


def test_xml_root_encoding_namespace_and_element_order_are_breaking() -> None:
    assert changes("xml.yaml", "xml-changed.yaml") == [
        (True, "changed", "target.root", "request → deliveryOrderRequest"),
        (True, "changed", "target.encoding", "UTF-8 → GBK"),
        (True, "changed", 'target.namespaces[""]', "none → http://qimen.taobao.com/"),
        (False, "changed", "target.declaration", "true → false"),
        (False, "changed", "target.pretty", "false → true"),
        (True, "retyped", "deliveryOrder.invoice", "object → JSON text"),
        (True, "reordered", "deliveryOrder", "moved: remark"),
    ]


# --- tables ------------------------------------------------------------------------------------

def test_changed_and_removed_entries_and_defaults_are_breaking() -> None:
    assert changes("base.yaml", "tables.yaml") == [
        (True, "changed", "table WAREHOUSE_BY_SHOP[TM-FLAG-001]", "WH-HZ-01 → WH-HZ-09"),
        (True, "removed", "table WAREHOUSE_BY_SHOP[MP-WX-001]", "was WH-SH-01"),
        (True, "changed", "table WAREHOUSE_BY_SHOP default", "WH-SH-00 → WH-SH-09"),
        (True, "changed", "table CARRIER_CODE default", "OTHER → none"),
    ]
    # A default set where there was none changes what unknown keys give: also breaking.
    assert (True, "changed", "table CARRIER_CODE default", "none → OTHER") in changes("tables.yaml", "base.yaml")


# --- the request -------------------------------------------------------------------------------

def test_request_changes() -> None:
    assert changes("base.yaml", "request.yaml") == [
        (True, "changed", "request.method", "POST → PUT"),
        (True, "changed", "request.url", "https://{host}/router/qimen/service → https://{host}/qimen/service"),
        (True, "changed", "request.query.v", '"2.0" → "3.0"'),
        (True, "changed", "request.query.sign_method", '"md5" → "hmac"'),
        (True, "removed", "request.query.customerId", ""),
        (True, "changed", "request.sign.scheme", "qimen-md5 → qimen-hmac"),
        (True, "changed", "request.sign.secret", "QIMEN_APP_SECRET → QIMEN_HMAC_SECRET"),
        (True, "changed", "request.sign.into", "query.sign → query.signature"),
        (True, "changed", "request.encrypt[deliveryOrder.receiverInfo.mobile].scheme", "sm4-ecb → sm4-cbc"),
        (True, "changed", "request.encrypt[deliveryOrder.receiverInfo.mobile].options.encoding", "base64 → hex"),
        (True, "added", "request.encrypt[deliveryOrder.receiverInfo.name]", "aes-gcm"),
        (True, "changed", "request.idempotency.key", 'order_no + ":" + $ctx.warehouseCode → order_no'),
        (True, "changed", "request.idempotency.rule", "skip → resend"),
        (True, "changed", "request.idempotency.ttl", "30d → 7d"),
    ]


def test_request_changes_backwards() -> None:
    rows = changes("request.yaml", "base.yaml")
    assert (False, "added", "request.query.customerId", "required, given to the signer qimen-md5") in rows
    assert (True, "removed", "request.encrypt[deliveryOrder.receiverInfo.name]", "was aes-gcm") in rows
    assert (False, "changed", "request.idempotency.ttl", "7d → 30d") in rows  # a longer ttl only dedupes more


def test_form_fields() -> None:
    # form-changed.yaml also writes `body: form.msgData`, sf-msgdigest's default: no change.
    assert changes("form.yaml", "form-changed.yaml") == [
        (True, "removed", "request.form.serviceCode", ""),
        (True, "changed", "request.form.timestamp", "string(epoch_millis(now())) → string(epoch_seconds(now()))"),
        (False, "added", "request.form.language", "required, given to the signer sf-msgdigest"),
    ]


def test_a_body_that_becomes_a_form_and_a_dropped_ttl() -> None:
    rows = changes("base.yaml", "form.yaml")
    assert (True, "added", "request.form", "the body is a form") in rows
    assert (True, "changed", "request.sign.params", "query → form") in rows
    assert (True, "changed", "request.sign.body", "body → form.msgData") in rows
    assert (True, "changed", "request.sign.into", "query.sign → form.msgDigest") in rows
    assert (True, "removed", "request.encrypt[deliveryOrder.receiverInfo.mobile]", "was sm4-ecb") in rows
    assert (False, "changed", "request.idempotency.ttl", "30d → forever") in rows
    assert (True, "removed", "request.form", "the body is the document") in changes("form.yaml", "base.yaml")


def test_a_request_section_added_or_removed() -> None:
    reference = "mappings/reference/deliveryorder.yaml"
    old = diff_files(reference, spec("base.yaml")).changes
    assert Change("added", "request", "", True) in old
    assert Change("added", "deliveryOrder.invoice", "optional", False) in old
    assert Change("removed", "request", "", True) in diff_files(spec("base.yaml"), reference).changes


# --- the API and errors ------------------------------------------------------------------------

def test_diff_specs_takes_checked_specs() -> None:
    old, new = check_file(spec("base.yaml")), check_file(spec("fields.yaml"))
    assert old.spec is not None and old.checked is not None and new.spec is not None and new.checked is not None
    got = diff_specs(old.spec, new.spec, old.checked, new.checked)
    assert Change("removed", "deliveryOrder.remark", "", True) in got


BROKEN = """\
dockyard: 1
name: broken
version: "1.0.0"
source: {schema: order}
target: {format: json}
output:
  code: order_no
  nick: byer.nick
"""


def test_a_spec_with_errors_is_not_compared(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text(BROKEN, encoding="utf-8")
    with pytest.raises(DiagnosticsError) as err:
        diff_files(spec("base.yaml"), bad)
    assert [d.span.line for d in err.value.diagnostics if d.is_error] == [8]
    assert "byer" in str(err.value)


# --- the command -------------------------------------------------------------------------------

@click.group()
def cli() -> None:
    """A stand-in for `dockyard`'s group."""


cli.add_command(diff)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["diff", *args], catch_exceptions=False)


def test_cli_identical_specs_exit_0() -> None:
    result = run(spec("base.yaml"), spec("cosmetic.yaml"))
    assert result.exit_code == 0, result.output
    assert result.stdout == "no changes: tests/compiler/diff/base.yaml → tests/compiler/diff/cosmetic.yaml\n"


def test_cli_only_compatible_changes_exit_0() -> None:
    result = run(spec("base.yaml"), spec("additions.yaml"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "ok  added  deliveryOrder.buyerMessage (optional)" in lines
    assert "ok  now-required  deliveryOrder.sellerMessage (was optional)" in lines
    assert lines[-1].startswith("10 change(s), 0 breaking: ")


def test_cli_breaking_changes_exit_1() -> None:
    result = run(spec("base.yaml"), spec("fields.yaml"))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[:2] == ["BREAKING  now-optional  deliveryOrder.buyerNick (was required)",
                         "BREAKING  removed  deliveryOrder.remark"]
    assert "BREAKING  retyped  orderLines[].planQty (int → string)" in lines
    assert lines[-1] == "7 change(s), 7 breaking: tests/compiler/diff/base.yaml → tests/compiler/diff/fields.yaml"
    assert result.stderr == ""


def test_cli_spec_errors_go_to_stderr_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text(BROKEN, encoding="utf-8")
    result = run(spec("base.yaml"), str(bad))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "broken.yaml:8:9: error:" in result.stderr
    assert result.stderr.rstrip().endswith("1 error(s); the specs were not compared")


@pytest.mark.parametrize("args", [(), ("tests/compiler/diff/base.yaml",),
                                  ("tests/compiler/diff/base.yaml", "tests/compiler/diff/no-such.yaml")])
def test_cli_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    assert run(*args).exit_code == 2


# --- the canonical schemas ---------------------------------------------------------------------

def schema(name: str) -> dict[str, Any]:
    return json.loads((ROOT / "dsl" / "schemas" / f"{name}.schema.json").read_text(encoding="utf-8"))


def properties(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property schema anywhere in a schema, with its path."""
    if isinstance(node, dict):
        for key, sub in (node.get("properties") or {}).items():
            if where.endswith(("if", "then", "else")):
                continue  # conditions restate properties; they are described at the top
            yield f"{where}.{key}", sub
        for key, sub in node.items():
            yield from properties(sub, f"{where}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            yield from properties(sub, f"{where}[{i}]")


@pytest.mark.parametrize("name", ["status-event", "outcome"])
def test_canonical_schemas_are_valid_versioned_and_described(name: str) -> None:
    s = schema(name)
    jsonschema.Draft202012Validator.check_schema(s)
    assert s["$id"] == f"https://dockyard.dev/schemas/{name}/v1.json"
    assert s["x-dockyard-version"] == "1"
    assert s["additionalProperties"] is False
    assert load_builtin_schema(name) == s
    undescribed = [path for path, sub in properties(s) if not sub.get("description")]
    assert undescribed == []
    refs = [v for _, v in _walk(s) if isinstance(v, str) and v.startswith("#/")]
    assert all(r.startswith("#/$defs/") for r in refs)


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


SHIPPED: dict[str, Any] = {
    "order_no": "TM20231111000123", "warehouse": "WH-HZ-01", "warehouse_order_id": "WMS-88001",
    "status": "shipped", "partial": False,
    "waybills": [{"carrier_code": "SF", "waybill_no": "SF1400012345678", "package_code": "P1", "weight": "1.25"},
                 {"carrier_code": "SF", "waybill_no": "SF1400012345679", "weight": 0.8}],
    "lines": [{"line_no": "1", "sku": "SKU-TEA-250G", "shipped_qty": 2}, {"sku": "SKU-CUP", "shipped_qty": 0}],
    "event_time": "2023-11-11T10:15:00+08:00", "raw_status": "DELIVERED", "unknown_status": False,
    "event_id": "OB-7781", "source": "qimen.deliveryorder.confirm",
}
MINIMAL_EVENT: dict[str, Any] = {
    "order_no": "JD-1", "warehouse": "SF", "status": "signed", "event_time": "2023-11-12T09:00:00.417Z",
    "raw_status": "80", "unknown_status": False, "source": "sf.route-push",
}
UNKNOWN: dict[str, Any] = {**MINIMAL_EVENT, "status": "exception", "raw_status": "9999", "unknown_status": True,
                           "message": "人工处理"}


@pytest.mark.parametrize("doc", [SHIPPED, MINIMAL_EVENT, UNKNOWN], ids=["shipped", "minimal", "unknown-code"])
def test_valid_status_events(doc: dict[str, Any]) -> None:
    assert list(jsonschema.Draft202012Validator(schema("status-event")).iter_errors(doc)) == []


def without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


@pytest.mark.parametrize("doc", [
    pytest.param(without(MINIMAL_EVENT, "raw_status"), id="no-raw-status"),
    pytest.param(without(MINIMAL_EVENT, "unknown_status"), id="no-unknown-flag"),
    pytest.param({**MINIMAL_EVENT, "status": "delivered"}, id="status-not-canonical"),
    pytest.param({**UNKNOWN, "status": "shipped"}, id="unknown-code-guessed"),
    pytest.param({**MINIMAL_EVENT, "event_time": "2023-11-12 09:00:00"}, id="time-without-offset"),
    pytest.param({**MINIMAL_EVENT, "carrier": "SF"}, id="extra-field"),
    pytest.param({**MINIMAL_EVENT, "warehouse_order_id": None}, id="null"),
    pytest.param({**SHIPPED, "waybills": [{"carrier_code": "SF"}]}, id="waybill-without-number"),
    pytest.param({**SHIPPED, "waybills": [{"carrier_code": "SF", "waybill_no": "1", "weight": "1e3"}]},
                 id="weight-not-a-plain-decimal"),
    pytest.param({**SHIPPED, "lines": [{"sku": "A", "shipped_qty": "2"}]}, id="qty-as-text"),
    pytest.param({**SHIPPED, "lines": [{"sku": "A", "shipped_qty": -1}]}, id="negative-qty"),
])
def test_invalid_status_events(doc: dict[str, Any]) -> None:
    assert list(jsonschema.Draft202012Validator(schema("status-event")).iter_errors(doc)) != []


@pytest.mark.parametrize("doc", [
    {"result": "accepted", "retryable": False, "warehouse_order_id": "WMS-88001", "code": "0",
     "waybills": [{"carrier_code": "SF", "waybill_no": "SF1400012345678"}]},
    {"result": "duplicate", "retryable": False, "code": "8016", "message": "重复下单",
     "original": {"waybill_no": "SF1400012345678", "anything": [1, 2]}},
    {"result": "rejected", "retryable": False, "code": "20", "message": "收件人地址不能为空"},
    {"result": "retryable", "retryable": True, "code": "A1005", "message": "流量受控", "raw": "{\"apiResultCode\""},
], ids=["accepted", "duplicate", "rejected", "retryable"])
def test_valid_outcomes(doc: dict[str, Any]) -> None:
    assert list(jsonschema.Draft202012Validator(schema("outcome")).iter_errors(doc)) == []


@pytest.mark.parametrize("doc", [
    pytest.param({"result": "accepted"}, id="no-retryable"),
    pytest.param({"result": "ok", "retryable": False}, id="unknown-result"),
    pytest.param({"result": "rejected", "retryable": True, "message": "x"}, id="rejected-but-retryable"),
    pytest.param({"result": "retryable", "retryable": False, "message": "x"}, id="retryable-but-not"),
    pytest.param({"result": "accepted", "retryable": False, "waybills": [{"waybill_no": "1"}]},
                 id="waybill-without-carrier"),
    pytest.param({"result": "accepted", "retryable": False, "http_status": 200}, id="extra-field"),
    pytest.param({"result": "duplicate", "retryable": False, "original": "WMS-1"}, id="original-not-an-object"),
])
def test_invalid_outcomes(doc: dict[str, Any]) -> None:
    assert list(jsonschema.Draft202012Validator(schema("outcome")).iter_errors(doc)) != []


CONFIRM_SCHEMA = {
    "type": "object",
    "required": ["orderCode", "status", "time"],
    "properties": {
        "orderCode": {"type": "string"}, "status": {"type": "string"}, "time": {"type": "string"},
        "packages": {"type": "array", "items": {"type": "object", "required": ["no"], "properties": {
            "no": {"type": "string"}, "weight": {"type": "string", "format": "decimal"}}}},
    },
}
CONFIRM_SPEC = """\
dockyard: 1
name: test.confirm
version: "1.0.0"
source: {schema: confirm.schema.json, key: orderCode}
target: {format: json, schema: status-event}
tables:
  STATUS:
    rows: {DELIVERED: shipped, ACCEPT: accepted}
output:
  order_no: orderCode
  warehouse: "WH-1"
  status: lookup(STATUS, status) ?? "exception"
  waybills:
    $each: packages ?? []
    $as: p
    $emit:
      carrier_code: "SF"
      waybill_no: $p.no
      weight?: $p.weight
  event_time: string(parse_datetime(time, "yyyy-MM-dd HH:mm:ss", "Asia/Shanghai"))
  raw_status: status
  unknown_status: not present(lookup(STATUS, status))
  source: "test.confirm"
"""


def test_a_mapping_targets_the_status_event_schema(tmp_path: Path) -> None:
    (tmp_path / "confirm.schema.json").write_text(json.dumps(CONFIRM_SCHEMA), encoding="utf-8")
    path = tmp_path / "confirm.yaml"
    path.write_text(CONFIRM_SPEC, encoding="utf-8")
    report = check_file(path)
    assert report.ok and report.diagnostics == [], report.diagnostics
    mapping = compile_file(path)
    validator = jsonschema.Draft202012Validator(schema("status-event"))
    for status, flagged in (("DELIVERED", False), ("LOST_IN_SPACE", True)):
        doc = mapping.transform({"orderCode": "A-1", "status": status, "time": "2023-11-11 10:15:00",
                                 "packages": [{"no": "SF1", "weight": "1.50"}]})
        assert doc["unknown_status"] is flagged and doc["raw_status"] == status
        assert doc["event_time"] == "2023-11-11T10:15:00+08:00"
        assert doc["waybills"][0]["weight"] == Decimal("1.50")
        # Decimals leave as JSON numbers or text; the schema takes either.
        assert list(validator.iter_errors(json.loads(json.dumps(doc, default=str)))) == []


@pytest.mark.parametrize("written", ["buyerNick:\n      $value: buyer.nick\n      $when: buyer.nick != \"\"",
                                     "buyerNick?: if buyer.nick == \"\" then omit else buyer.nick"])
def test_a_value_that_can_now_be_left_out_is_breaking(tmp_path: Path, written: str) -> None:
    """`$when` beside `$value` or an optional field with `omit` can leave a field out, like `?:`."""
    text = (DIFF / "base.yaml").read_text(encoding="utf-8")
    assert "    buyerNick: buyer.nick\n" in text
    edited = tmp_path / "when.yaml"
    edited.write_text(text.replace("    buyerNick: buyer.nick\n", f"    {written}\n"), encoding="utf-8")
    found = [(c.breaking, c.kind, c.path, c.detail) for c in diff_files(spec("base.yaml"), edited).changes]
    assert found == [(True, "now-optional", "deliveryOrder.buyerNick", "was required")]
