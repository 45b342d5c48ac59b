"""Hand-written baselines for the shapes of bench/transform.py other than the reference mapping
(whose baseline is the shared reference_hand.py), written as an engineer would write them: plain
dict building, exact Decimal, lxml. Each must give exactly what its compiled mapping gives.

- `flat(order, ctx)`: bench/specs/flat.yaml;
- `xml_bytes(doc)`: a plain lxml writer of a QIMEN deliveryorder.create document (the baseline of
  `render()`: the same tree, no checks);
- `confirm_xml(order, i)`: a QIMEN deliveryorder.confirm message for an order (the inbound input);
- `confirm_event(data, ctx)`: mappings/qimen/deliveryorder.confirm.yaml by hand (XML → status event).
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from lxml import etree

CENT = Decimal("0.01")
SHANGHAI = ZoneInfo("Asia/Shanghai")


def flat(o: dict[str, Any], ctx: dict[str, str]) -> dict[str, Any]:
    r = o["receiver"]
    remark = o.get("remark")
    amount = Decimal(o["amounts"]["paid_total"]).quantize(CENT, ROUND_HALF_UP)
    return {
        "orderCode": o["order_no"],
        "ownerCode": ctx["ownerCode"],
        "warehouseCode": ctx["warehouseCode"],
        "shop": o["shop_code"],
        "buyer": o["buyer"]["nick"],
        "receiverName": r["name"],
        "receiverMobile": r["mobile"],
        "province": r["province"],
        "city": r["city"],
        "district": r["district"],
        "address": r["address"].strip(),
        "amount": str(amount if amount else amount.copy_abs()),
        "remark": "" if remark is None else remark,
        "skus": ",".join([i["sku"] for i in o["items"] if i["qty"] > 0]),
    }


def _fill(element: Any, mapping: dict[str, Any]) -> None:
    sub = etree.SubElement
    for key, value in mapping.items():
        if isinstance(value, dict):
            _fill(sub(element, key), value)
        elif isinstance(value, list):
            for item in value:
                _fill(sub(element, key), item)
        else:
            sub(element, key).text = value if isinstance(value, str) else str(value)


def xml_bytes(doc: dict[str, Any]) -> bytes:
    root = etree.Element("request")
    _fill(root, doc)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="UTF-8")


_STATUSES = ["DELIVERED", "DELIVERED", "PARTDELIVERED", "ACCEPT", "CLOSED"]


def confirm_xml(order: dict[str, Any], i: int) -> bytes:
    """A confirm as a WMS would send it for `order`: packages of two lines, some fields empty."""
    root = etree.Element("request")
    do = etree.SubElement(root, "deliveryOrder")
    local = datetime.fromisoformat(order["created_at"]).astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")
    fields = {
        "deliveryOrderCode": order["order_no"], "deliveryOrderId": f"WMS-{i}" if i % 3 else "",
        "warehouseCode": "WH-HZ-01" if i % 4 else "", "orderType": "JYCK",
        "status": _STATUSES[i % len(_STATUSES)],
        "outBizCode": f"OBC-{order['order_no']}-{i}", "confirmType": "1" if i % 5 == 0 else "0",
        ("orderConfirmTime" if i % 7 else "operateTime"): local, "logisticsCode": "SF",
        "remark": " ok " if i % 2 else "",
    }
    for key, value in fields.items():
        etree.SubElement(do, key).text = value
    packages = etree.SubElement(root, "packages")
    items = order["items"]
    for n in range(0, len(items), 2):
        package = etree.SubElement(packages, "package")
        etree.SubElement(package, "logisticsCode").text = "ZTO" if n % 4 else ""
        etree.SubElement(package, "expressCode").text = f" SF{i:08d}{n} " if n < 4 else ""
        etree.SubElement(package, "packageCode").text = f"PKG-{n}"
        etree.SubElement(package, "weight").text = f"{1 + n % 3}.{n % 10}0"
    lines = etree.SubElement(root, "orderLines")
    for n, item in enumerate(items):
        line = etree.SubElement(lines, "orderLine")
        etree.SubElement(line, "orderLineNo").text = str(n + 1)
        etree.SubElement(line, "itemCode").text = item["sku"]
        etree.SubElement(line, "actualQty").text = f" {item['qty']} "
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


CONFIRM_STATUS = {"NEW": "accepted", "ACCEPT": "accepted", "PARTDELIVERED": "shipped", "DELIVERED": "shipped",
                  "EXCEPTION": "exception", "CANCELED": "cancelled", "CANCELEDFAIL": "cancel_failed",
                  "REJECT": "rejected"}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def _text(element: Any, path: str) -> str | None:
    found = element.find(path)
    return None if found is None else (found.text or "")


def _nonempty(text: str | None) -> str | None:
    """trim, and empty counts as missing (the spec's regex_extract(trim(x), ".+"); no inner newlines here)."""
    if text is None:
        return None
    text = text.strip()
    return text or None


def confirm_event(data: bytes, ctx: dict[str, str]) -> dict[str, Any]:
    root = etree.fromstring(data, _PARSER)
    do = root.find("deliveryOrder")
    raw_status = _text(do, "status")
    status_code = raw_status.strip() if raw_status is not None else None
    status = CONFIRM_STATUS.get(status_code) if status_code is not None else None
    event: dict[str, Any] = {"order_no": _text(do, "deliveryOrderCode"),
                             "warehouse": _nonempty(_text(do, "warehouseCode")) or ctx["warehouseCode"]}
    wms_id = _nonempty(_text(do, "deliveryOrderId"))
    if wms_id is not None:
        event["warehouse_order_id"] = wms_id
    event["status"] = status or "exception"
    event["partial"] = (_text(do, "confirmType") or "").strip() == "1" or status_code == "PARTDELIVERED"
    carrier = _nonempty(_text(do, "logisticsCode"))
    waybills = []
    for package in root.iterfind("packages/package"):
        express = _nonempty(_text(package, "expressCode"))
        if express is None:
            continue
        waybill: dict[str, Any] = {"carrier_code": _nonempty(_text(package, "logisticsCode")) or carrier or "OTHER",
                                   "waybill_no": express}
        code = _nonempty(_text(package, "packageCode"))
        if code is not None:
            waybill["package_code"] = code
        weight = _nonempty(_text(package, "weight"))
        if weight is not None:
            waybill["weight"] = Decimal(weight)
        waybills.append(waybill)
    event["waybills"] = waybills
    lines = []
    for line in root.iterfind("orderLines/orderLine"):
        entry: dict[str, Any] = {}
        number = _nonempty(_text(line, "orderLineNo"))
        if number is not None:
            entry["line_no"] = number
        entry["sku"] = _text(line, "itemCode")
        entry["shipped_qty"] = int((_text(line, "actualQty") or "").strip())
        lines.append(entry)
    event["lines"] = lines
    sent = _nonempty(_text(do, "orderConfirmTime")) or _nonempty(_text(do, "operateTime"))
    assert sent is not None  # every generated message carries one of the two
    event["event_time"] = datetime.strptime(sent, "%Y-%m-%d %H:%M:%S").replace(tzinfo=SHANGHAI).isoformat()
    event["raw_status"] = raw_status
    event["unknown_status"] = status is None
    event["event_id"] = _text(do, "outBizCode")
    event["source"] = "qimen.deliveryorder.confirm"
    message = _nonempty(_text(do, "remark"))
    if message is not None:
        event["message"] = message
    return event
