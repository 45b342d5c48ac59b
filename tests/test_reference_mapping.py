"""The reference mapping against its expected outputs and the hand-written baseline; the example XML and
form specs against their expected files."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from lxml import etree

from dockyard.compiler.api import compile_file
from dockyard.runtime.mapping import CompiledMapping

ROOT = Path(__file__).resolve().parents[1]
ORDERS = ROOT / "examples" / "orders"
EXPECTED = ROOT / "examples" / "expected"
SPECS = ROOT / "examples" / "specs"
ORDER_NAMES = sorted(p.stem for p in ORDERS.glob("*.json"))
NOW = datetime(2023, 11, 11, tzinfo=timezone(timedelta(hours=8)))  # --now 2023-11-11T00:00:00+08:00
XML_CTX = {"ownerCode": "OWNER-01", "warehouseCode": "WH-HZ-01"}
FORM_CTX = {"partnerId": "DOCKYARD_TEST", "senderName": "栖木仓", "senderMobile": "13800000000",
            "senderProvince": "浙江省", "senderCity": "杭州市", "senderCounty": "余杭区",
            "senderAddress": "文一西路969号"}
EXAMPLE_SPECS = {"qimen-deliveryorder-xml": XML_CTX, "sf-create-form": FORM_CTX}


def load_order(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ORDERS / f"{name}.json").read_text("utf-8"), parse_float=Decimal)
    return data


def load_module(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@pytest.fixture(scope="module")
def reference() -> CompiledMapping:
    return compile_file(ROOT / "mappings" / "reference" / "deliveryorder.yaml")


@pytest.fixture(scope="module")
def bench() -> tuple[types.ModuleType, types.ModuleType]:
    orders = load_module("dockyard_test_bench_orders", ROOT / "bench" / "orders.py")
    baseline = load_module("dockyard_test_bench_baseline", ROOT / "bench" / "baseline.py")
    return orders, baseline


def test_every_example_order_has_an_expected_output() -> None:
    assert ORDER_NAMES
    assert sorted(p.stem for p in EXPECTED.glob("*.json")) == ORDER_NAMES


@pytest.mark.parametrize("name", ORDER_NAMES)
def test_reference_mapping_gives_the_expected_output(reference: CompiledMapping, name: str) -> None:
    order = load_order(name)
    expected = json.loads((EXPECTED / f"{name}.json").read_text("utf-8"))
    doc = reference.transform(order, validate=True)
    assert doc == expected
    assert json.dumps(doc, ensure_ascii=False) == json.dumps(expected, ensure_ascii=False)  # key order too
    assert json.loads(reference.render(order)) == expected


@pytest.mark.parametrize("name", ORDER_NAMES)
def test_reference_mapping_agrees_with_the_baseline_on_the_examples(
        reference: CompiledMapping, bench: tuple[types.ModuleType, types.ModuleType], name: str) -> None:
    _orders, baseline = bench
    order = load_order(name)
    assert reference.transform(order) == baseline.transform(order)


def test_reference_mapping_agrees_with_the_baseline_on_generated_orders(
        reference: CompiledMapping, bench: tuple[types.ModuleType, types.ModuleType]) -> None:
    orders, baseline = bench
    generated = orders.generate(2000)
    assert len(generated) == 2000
    assert len({o["order_no"] for o in generated}) == 2000
    mismatches = []
    for order in generated:
        doc = reference.transform(order)
        if doc != baseline.transform(order):
            mismatches.append(order["order_no"])
        # The serialized body is the same document (money strings keep their digits).
        if json.loads(reference.render(order)) != doc:
            mismatches.append(f"{order['order_no']} (render)")
    assert mismatches == []


def test_generated_orders_are_valid_inputs(reference: CompiledMapping,
                                           bench: tuple[types.ModuleType, types.ModuleType]) -> None:
    orders, _baseline = bench
    for order in orders.generate(200, seed=7):
        reference.transform(order, validate=True)


# --------------------------------------------------------------------------------------------------
# the example XML and form specs


def expected_files() -> list[tuple[str, str, Path]]:
    found = []
    for path in sorted((SPECS / "expected").iterdir()):
        spec, _, order = path.stem.partition("--")
        found.append((spec, order, path))
    return found


def test_each_example_spec_has_expected_files() -> None:
    specs = {spec for spec, _order, _path in expected_files()}
    assert specs == set(EXAMPLE_SPECS)
    for spec, order, path in expected_files():
        assert (SPECS / f"{spec}.yaml").is_file(), path
        assert (ORDERS / f"{order}.json").is_file(), path
        assert path.suffix == (".xml" if spec.endswith("xml") else ".txt")


@pytest.mark.parametrize(("spec", "order", "path"), expected_files(),
                         ids=lambda v: getattr(v, "name", str(v)))
def test_example_spec_gives_its_expected_file(spec: str, order: str, path: Path) -> None:
    mapping = compile_file(SPECS / f"{spec}.yaml")
    body = mapping.render(load_order(order), EXAMPLE_SPECS[spec], NOW, validate=True)
    # The files hold what `dockyard dry-run` printed: the body and one newline.
    assert body + b"\n" == path.read_bytes()


def _xml(order: str) -> tuple[bytes, etree._Element]:
    data = (SPECS / "expected" / f"qimen-deliveryorder-xml--{order}.xml").read_bytes()
    root = etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False, strip_cdata=False))
    return data, root


def _text(root: etree._Element, path: str) -> str:
    found = root.find(path)
    assert found is not None, path
    return found.text or ""


def test_xml_example_is_a_qimen_delivery_order() -> None:
    data, root = _xml("tmall-basic")
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<request>')
    assert root.tag == "request"
    assert [c.tag for c in root] == ["deliveryOrder", "orderLines"]
    header = root.find("deliveryOrder")
    assert header is not None and header.get("version") == "1.0"
    assert _text(root, "deliveryOrder/deliveryOrderCode") == "TM20231111000123"
    assert _text(root, "deliveryOrder/orderType") == "JYCK"
    assert _text(root, "deliveryOrder/warehouseCode") == "WH-HZ-01"
    assert _text(root, "deliveryOrder/ownerCode") == "OWNER-01"
    assert _text(root, "deliveryOrder/createTime") == "2023-11-11 00:01:23"
    assert _text(root, "deliveryOrder/logisticsCode") == "SF"  # from carriers.csv
    assert _text(root, "deliveryOrder/receiverInfo/area") == "武侯区"
    assert _text(root, "deliveryOrder/extendProps/invoiceTitle") == "成都栖木科技有限公司"
    # The remark is a CDATA section.
    assert b"<remark><![CDATA[\xe4\xb8\x8d\xe8\xa6\x81" in data
    # One <orderLine> per shipped line (the qty-0 line is left out), renumbered from 1.
    lines = root.findall("orderLines/orderLine")
    assert [_text(line, "orderLineNo") for line in lines] == ["1", "2", "3"]
    codes = [_text(line, "itemCode") for line in lines]
    assert codes == ["SKU-100215-STD", "SKU-100208-STD", "SKU-100203-BLK"]
    assert [_text(line, "actualPrice") for line in lines] == ["143.10", "65.80", "458.23"]
    assert {_text(line, "ownerCode") for line in lines} == {"OWNER-01"}


def test_xml_example_keeps_hostile_text() -> None:
    data, root = _xml("hostile-remark")
    order = load_order("hostile-remark")
    assert _text(root, "deliveryOrder/remark") == order["remark"]  # untrimmed, markup kept as text
    assert b"<![CDATA[<b>" in data
    assert _text(root, "deliveryOrder/buyerNick") == order["buyer"]["nick"]
    assert _text(root, "deliveryOrder/logisticsCode") == "OTHER"  # DBL is not in carriers.csv
    assert _text(root, "deliveryOrder/createTime") == "2023-11-10 23:59:59"
    assert root.find("deliveryOrder/sourcePlatformCode") is None  # optional and absent
    assert [_text(line, "itemName") for line in root.findall("orderLines/orderLine")] == [
        item["name"] for item in order["items"]]


def _form(order: str) -> dict[str, str]:
    text = (SPECS / "expected" / f"sf-create-form--{order}.txt").read_text("ascii")
    assert text.endswith("\n") and "\n" not in text[:-1]
    pairs = parse_qsl(text[:-1], keep_blank_values=True, strict_parsing=True)
    assert [k for k, _ in pairs] == ["serviceCode", "partnerID", "requestID", "timestamp", "msgData"]
    return dict(pairs)


@pytest.mark.parametrize("order", ["tmall-basic", "hostile-remark"])
def test_form_example_carries_msgdata_as_json(order: str) -> None:
    form = _form(order)
    source = load_order(order)
    assert form["serviceCode"] == "EXP_RECE_CREATE_ORDER"
    assert form["partnerID"] == "DOCKYARD_TEST"
    assert form["requestID"] == source["order_no"]
    assert form["timestamp"] == "20231111000000"
    msg = json.loads(form["msgData"], parse_float=Decimal)
    assert list(msg) == ["orderId", "language", "contactInfoList", "cargoDetails", "parcelQty", "remark"]
    assert msg["orderId"] == source["order_no"]
    assert msg["language"] == "zh-CN"
    assert msg["parcelQty"] == 1
    assert msg["remark"] == source["remark"]
    sender, receiver = msg["contactInfoList"]
    assert sender == {"contactType": 1, "contact": "栖木仓", "mobile": "13800000000", "province": "浙江省",
                      "city": "杭州市", "county": "余杭区", "address": "文一西路969号"}
    r = source["receiver"]
    assert receiver == {"contactType": 2, "contact": r["name"], "mobile": r["mobile"],
                        "province": r["province"], "city": r["city"], "county": r["district"],
                        "address": r["address"].strip()}
    shipped = [i for i in source["items"] if i["qty"] > 0]
    assert [c["name"] for c in msg["cargoDetails"]] == [i["name"] for i in shipped]
    assert [c["count"] for c in msg["cargoDetails"]] == [i["qty"] for i in shipped]
    for cargo, item in zip(msg["cargoDetails"], shipped, strict=True):
        assert isinstance(cargo["amount"], str)
        assert Decimal(cargo["amount"]) == (Decimal(item["unit_price"]) - Decimal(item["discount"])).quantize(
            Decimal("0.01"))
