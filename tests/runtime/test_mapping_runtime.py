"""CompiledMapping at run time: input and context errors, the clock, explain() and pickling of errors."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dockyard.compiler.api import compile_file
from dockyard.runtime.errors import (
    BundleError,
    ContextError,
    DockyardError,
    InputError,
    SerializationError,
    TransformError,
)
from dockyard.runtime.mapping import CompiledMapping, FieldExplanation

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "mappings" / "reference" / "deliveryorder.yaml"
XML_SPEC = ROOT / "examples" / "specs" / "qimen-deliveryorder-xml.yaml"
FORM_SPEC = ROOT / "examples" / "specs" / "sf-create-form.yaml"
XML_CTX = {"ownerCode": "OWNER-01", "warehouseCode": "WH-HZ-01"}
FORM_CTX = {"partnerId": "P", "senderName": "n", "senderMobile": "1", "senderProvince": "p",
            "senderCity": "c", "senderCounty": "c", "senderAddress": "a"}
CST = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
def reference() -> CompiledMapping:
    return compile_file(REFERENCE)


@pytest.fixture(scope="module")
def xml_mapping() -> CompiledMapping:
    return compile_file(XML_SPEC)


@pytest.fixture(scope="module")
def form_mapping() -> CompiledMapping:
    return compile_file(FORM_SPEC)


def load_order(name: str = "tmall-basic") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "examples" / "orders" / f"{name}.json").read_text("utf-8"),
                                      parse_float=Decimal)
    return data


# --------------------------------------------------------------------------------------------------
# inputs


@pytest.mark.parametrize("value", [None, [], ["order"], "order", 42, Decimal("1"), b"{}"],
                         ids=["none", "empty-list", "list", "str", "int", "decimal", "bytes"])
def test_non_object_input_is_an_input_error(reference: CompiledMapping, value: Any) -> None:
    with pytest.raises(InputError, match="JSON object") as info:
        reference.transform(value)
    assert type(value).__name__ in str(info.value)


def test_validate_reports_every_schema_problem_by_path(reference: CompiledMapping) -> None:
    order = load_order()
    order["items"][0]["qty"] = "1"
    order["items"][2]["unit_price"] = "12.3.4"
    del order["receiver"]["mobile"]
    order["created_at"] = "2023-11-11 00:01:23"  # no offset
    with pytest.raises(InputError) as info:
        reference.transform(order, validate=True)
    err = info.value
    assert err.key == "TM20231111000123"
    paths = {path for path, _message in err.problems}
    assert {"items[0].qty", "items[2].unit_price", "receiver", "created_at"} <= paths, err.problems
    messages = dict(err.problems)
    assert "'1'" in messages["items[0].qty"] and "integer" in messages["items[0].qty"]
    assert "mobile" in messages["receiver"]
    text = str(err)
    assert "items[0].qty" in text and "order TM20231111000123" in text


def test_without_validate_a_broken_input_still_fails_cleanly(reference: CompiledMapping) -> None:
    order = load_order()
    del order["receiver"]["name"]
    with pytest.raises(TransformError) as info:
        reference.transform(order)
    err = info.value
    assert err.field == "deliveryOrder.receiverInfo.name"
    assert err.location is not None and err.location.endswith(":50:13")
    assert err.key == "TM20231111000123"
    # The schema problems of the input come with the error, to say why.
    assert any(path == "receiver" and "name" in message for path, message in err.problems)


def test_a_valid_order_passes_validation(reference: CompiledMapping) -> None:
    for path in sorted((ROOT / "examples" / "orders").glob("*.json")):
        order = json.loads(path.read_text("utf-8"), parse_float=Decimal)
        reference.transform(order, validate=True)


# --------------------------------------------------------------------------------------------------
# context


def test_missing_required_context_is_a_context_error(xml_mapping: CompiledMapping) -> None:
    with pytest.raises(ContextError, match="ownerCode"):
        xml_mapping.transform(load_order(), {"warehouseCode": "WH"})
    with pytest.raises(ContextError, match="ownerCode"):
        xml_mapping.transform(load_order(), None)
    with pytest.raises(ContextError, match="warehouseCode"):
        xml_mapping.transform(load_order(), {"ownerCode": "O", "warehouseCode": None})


def test_context_of_the_wrong_type_is_a_context_error(xml_mapping: CompiledMapping) -> None:
    with pytest.raises(ContextError, match="must be string"):
        xml_mapping.transform(load_order(), {"ownerCode": 7, "warehouseCode": "WH"})


def test_context_is_not_changed_by_the_mapping(xml_mapping: CompiledMapping) -> None:
    ctx = dict(XML_CTX)
    xml_mapping.transform(load_order(), ctx)
    assert ctx == XML_CTX


# --------------------------------------------------------------------------------------------------
# the clock


def test_a_fixed_clock_makes_now_reproducible(form_mapping: CompiledMapping) -> None:
    fixed = datetime(2023, 11, 11, 0, 0, 0, tzinfo=CST)
    first = form_mapping.transform(load_order(), FORM_CTX, fixed)
    second = form_mapping.transform(load_order(), FORM_CTX, fixed)
    assert first == second
    assert first["timestamp"] == "20231111000000"
    # The same instant given in UTC is written in Shanghai time all the same.
    in_utc = form_mapping.transform(load_order(), FORM_CTX, fixed.astimezone(UTC))
    assert in_utc["timestamp"] == "20231111000000"


def test_a_clock_callable_is_called(form_mapping: CompiledMapping) -> None:
    calls: list[int] = []

    def clock() -> datetime:
        calls.append(1)
        return datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)

    doc = form_mapping.transform(load_order(), FORM_CTX, clock)
    assert doc["timestamp"] == "20240301075959"
    assert calls


def test_the_system_clock_is_used_by_default(form_mapping: CompiledMapping) -> None:
    before = datetime.now(CST).replace(microsecond=0)
    stamp = form_mapping.transform(load_order(), FORM_CTX)["timestamp"]
    after = datetime.now(CST)
    moment = datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=CST)
    assert before - timedelta(seconds=1) <= moment <= after


def test_a_naive_clock_is_a_context_error(form_mapping: CompiledMapping) -> None:
    with pytest.raises(ContextError, match="UTC offset"):
        form_mapping.transform(load_order(), FORM_CTX, datetime(2023, 11, 11))


# --------------------------------------------------------------------------------------------------
# explain()


def order_with_zero_line_second() -> dict[str, Any]:
    """tmall-basic with the qty-0 line moved to index 1: items 0, 2, 3 are shipped."""
    order = load_order()
    items = order["items"]
    order["items"] = [items[0], items[2], items[1], items[3]]
    return order


def by_path(explanations: list[FieldExplanation]) -> dict[str, FieldExplanation]:
    return {e.path: e for e in explanations}


def sources_of(explanation: FieldExplanation) -> dict[str, Any]:
    return dict(explanation.sources)


def _read(order: dict[str, Any], path: str) -> Any:
    value: Any = order
    for part in path.replace("[", ".[").split("."):
        if part.startswith("["):
            value = value[int(part[1:-1])]
        elif part:
            value = value[part]
    return value


def test_explain_lists_every_output_value(reference: CompiledMapping) -> None:
    order = load_order()
    doc, explanations = reference.explain(order)
    assert doc == reference.transform(order)
    paths = [e.path for e in explanations]
    assert len(paths) == len(set(paths))
    assert "deliveryOrder.receiverInfo.detailAddress" in paths
    assert "orderLines[2].isGift" in paths
    for e in explanations:
        assert _read(doc, e.path) == e.value
        file, line, col = e.spec.rsplit(":", 2)
        assert file.endswith("deliveryorder.yaml") and int(line) > 0 and int(col) > 0


def _check_line_sources(explanations: list[FieldExplanation], order: dict[str, Any], out_list: str) -> None:
    """Each emitted line's sources are the concrete input item it came from, with its real values."""
    found = by_path(explanations)
    shipped = [i for i, item in enumerate(order["items"]) if item["qty"] > 0]
    for position, index in enumerate(shipped):
        price = found[f"{out_list}[{position}].actualPrice"]
        assert sources_of(price) == {
            f"items[{index}].unit_price": order["items"][index]["unit_price"],
            f"items[{index}].discount": order["items"][index]["discount"],
        }, f"{out_list}[{position}] comes from items[{index}]"
        code = found[f"{out_list}[{position}].itemCode"]
        assert sources_of(code) == {f"items[{index}].sku": order["items"][index]["sku"]}
        assert code.value == order["items"][index]["sku"]


def test_explain_gives_concrete_item_paths_with_where(xml_mapping: CompiledMapping) -> None:
    # `$each: items` with `$where: $line.qty > 0`: orderLine[1] is items[2] when items[1] is skipped.
    order = order_with_zero_line_second()
    _doc, explanations = xml_mapping.explain(order, XML_CTX)
    found = by_path(explanations)
    assert sources_of(found["orderLines.orderLine[1].actualPrice"]) == {
        "items[2].unit_price": "65.80", "items[2].discount": "0.00"}
    _check_line_sources(explanations, order, "orderLines.orderLine")


@pytest.mark.parametrize("order_factory", [order_with_zero_line_second, load_order],
                         ids=["zero-line-second", "tmall-basic"])
def test_explain_gives_concrete_item_paths_through_a_filtered_let(reference: CompiledMapping,
                                                                   order_factory: Callable[[], Any]) -> None:
    # The reference mapping loops over `$lines = filter(items, …)`: the source paths must still name
    # the input items (`items[3]`), not positions in the filtered list.
    order = order_factory()
    _doc, explanations = reference.explain(order)
    _check_line_sources(explanations, order, "orderLines")


def test_explain_of_header_fields(reference: CompiledMapping) -> None:
    order = load_order()
    _doc, explanations = reference.explain(order)
    found = by_path(explanations)
    warehouse = found["deliveryOrder.warehouseCode"]
    assert sources_of(warehouse) == {"shop_code": "TM-FLAG-001"}
    assert warehouse.tables == ("WAREHOUSE_BY_SHOP",)
    assert warehouse.spec.endswith("deliveryorder.yaml:41:20")
    total = found["deliveryOrder.totalQty"]
    assert total.lets == ("lines",)
    assert "items[].qty" in sources_of(total)  # an aggregate over every element
    assert found["deliveryOrder.orderType"].sources == ()


def test_explain_credits_position(reference: CompiledMapping, tmp_path: Path) -> None:
    """A value built from $position names it among its inputs, with the other inputs beside it;
    a let built from it passes the credit on."""
    _doc, explanations = reference.explain(load_order())
    line_no = by_path(explanations)["orderLines[1].orderLineNo"]
    assert (line_no.value, line_no.lets, line_no.sources) == ("2", ("position",), ())
    spec = tmp_path / "position.yaml"
    spec.write_text('''dockyard: 1
name: t.position
version: "1.0.0"
source: {schema: order}
target: {format: json}
output:
  lines:
    $each: items
    $let:
      n: $position * 10
    $emit:
      ref: order_no + "-" + string($position)
      seq: $n
''', encoding="utf-8")
    _doc, explanations = compile_file(spec).explain(load_order())
    found = by_path(explanations)
    assert found["lines[0].ref"].lets == ("position",)
    assert sources_of(found["lines[0].ref"]) == {"order_no": "TM20231111000123"}
    assert set(found["lines[3].seq"].lets) == {"n", "position"}


def test_explain_names_context_and_clock(form_mapping: CompiledMapping) -> None:
    fixed = datetime(2023, 11, 11, tzinfo=CST)
    _doc, explanations = form_mapping.explain(load_order(), FORM_CTX, fixed)
    found = by_path(explanations)
    assert found["partnerID"].context == ("partnerId",)
    assert found["timestamp"].clock is True
    assert found["requestID"].clock is False


# --------------------------------------------------------------------------------------------------
# errors pickle


def _roundtrip(err: Exception) -> Any:
    return pickle.loads(pickle.dumps(err))


def test_a_real_transform_error_pickles(reference: CompiledMapping) -> None:
    order = load_order()
    order["buyer"]["nick"] = None
    with pytest.raises(TransformError) as info:
        reference.transform(order)
    err = info.value
    back = _roundtrip(err)
    assert type(back) is TransformError
    for attr in ("message", "location", "field", "key", "mapping", "problems"):
        assert getattr(back, attr) == getattr(err, attr), attr
    assert str(back) == str(err)
    assert back.location is not None and back.field == "deliveryOrder.buyerNick"


def test_a_real_input_error_pickles(reference: CompiledMapping) -> None:
    order = load_order()
    order["items"][0]["qty"] = -1
    with pytest.raises(InputError) as info:
        reference.transform(order, validate=True)
    back = _roundtrip(info.value)
    assert type(back) is InputError
    err = info.value
    assert (back.message, back.key, back.problems) == (err.message, err.key, err.problems)
    assert str(back) == str(info.value)


@pytest.mark.parametrize("err", [
    TransformError("boom", location="a.yaml:1:2", field="x.y", key="K1", mapping="m", problems=(("p", "q"),)),
    TransformError("bare"),
    InputError("bad", "K2", (("items[0].qty", "not an integer"),)),
    InputError("bad"),
    ContextError("needs x"),
    BundleError("tampered"),
    SerializationError("no float", "a.b"),
    DockyardError("base"),
], ids=["transform", "transform-bare", "input", "input-bare", "context", "bundle", "serialization", "base"])
def test_every_error_type_pickles(err: Exception) -> None:
    back = _roundtrip(err)
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert back.args == err.args
    assert vars(back) == vars(err)


def test_errors_survive_deepcopy() -> None:
    err = TransformError("boom", location="a.yaml:1:2", field="x", key="K")
    assert str(copy.deepcopy(err)) == str(err)


# --------------------------------------------------------------------------------------------------
# the business key errors name


def _route_push() -> CompiledMapping:
    return compile_file(ROOT / "mappings" / "sf" / "route-push.yaml")


def test_a_key_through_a_list_names_its_first_element_and_never_the_whole_list() -> None:
    """SF's route push has no single order number: its key is the first route's waybill
    (`Body.WaybillRoute[0].mailno`). A key that reaches a list or object names nothing rather than
    dump the message (addresses, names) into every error and log line."""
    mapping = _route_push()
    route = {"id": "r1", "mailno": "SF1000000000001", "orderid": "A-1", "acceptTime": "not a time", "opCode": "50",
             "acceptAddress": "浙江省杭州市西湖区某某路 1 号"}
    push = {"Body": {"WaybillRoute": [route, dict(route, id="r2", mailno="SF2")]}}
    with pytest.raises(TransformError) as info:
        mapping.transform(push, {"warehouseCode": "SF"})
    assert info.value.key == "SF1000000000001"
    assert "浙江省" not in str(info.value)
    assert mapping.business_key({"Body": {"WaybillRoute": []}}) is None
    assert mapping.business_key({"Body": {"WaybillRoute": {"0": route}}}) is None
    assert mapping.business_key({"Body": {"WaybillRoute": [{"mailno": ["SF1", "SF2"]}]}}) is None
    assert mapping.business_key({"Body": {"WaybillRoute": [{"mailno": "x" * 5000}]}}) == "x" * 199 + "…"
