"""Hand-written baseline of the reference mapping: order → warehouse `deliveryOrder` request.

Idiomatic Python written directly from the rules of the benchmark's MAPPING.md, with exact
`Decimal` money rounded ROUND_HALF_UP (四舍五入) and times converted with `zoneinfo` to
Asia/Shanghai. Dockyard's compiled mapping is compared with `transform` for equal output and
timed against it.

"Missing" in the rules means the key is absent or its value is null; both are handled alike.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["CARRIER_CODE", "DEFAULT_CARRIER", "DEFAULT_WAREHOUSE", "WAREHOUSE_BY_SHOP", "transform"]

WAREHOUSE_BY_SHOP: dict[str, str] = {
    "TM-FLAG-001": "WH-HZ-01",
    "TM-OUTLET-002": "WH-HZ-02",
    "JD-SELF-001": "WH-BJ-01",
    "DY-LIVE-001": "WH-GZ-01",
    "MP-WX-001": "WH-SH-01",
}
DEFAULT_WAREHOUSE = "WH-SH-00"

CARRIER_CODE: dict[str, str] = {"SF": "SF", "JD": "JD", "ZTO": "ZTO", "YTO": "YTO"}
DEFAULT_CARRIER = "OTHER"

ORDER_TYPE = "JYCK"  # 一般交易出库 (general sale)
SHANGHAI = ZoneInfo("Asia/Shanghai")
TWO_PLACES = Decimal("0.01")


def to_decimal(value: str | int | float) -> Decimal:
    """An exact decimal from a JSON decimal string or number (floats via their shortest repr)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def format_money(amount: Decimal) -> str:
    """`amount` rounded half-up to cents, written with exactly two decimals.

    `str` of a Decimal with exponent -2 never uses scientific notation, so it is the plain form.
    """
    return str(amount.quantize(TWO_PLACES, ROUND_HALF_UP))


def shanghai_time(stamp: str) -> str:
    """An ISO-8601 timestamp with offset or Z as Shanghai wall time; fractions are truncated."""
    moment = datetime.fromisoformat(stamp).astimezone(SHANGHAI)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def order_lines(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One warehouse line per item with a positive quantity, numbered from 1 among those kept."""
    lines: list[dict[str, Any]] = []
    for item in items:
        qty = item["qty"]
        if qty <= 0:  # refunded before shipping: nothing to pick
            continue
        lines.append(
            {
                "orderLineNo": str(len(lines) + 1),
                "itemCode": item["sku"],
                "itemName": item["name"],
                "planQty": qty,
                "actualPrice": format_money(to_decimal(item["unit_price"]) - to_decimal(item["discount"])),
                "isGift": "Y" if item["is_gift"] else "N",
            }
        )
    return lines


def transform(order: dict[str, Any]) -> dict[str, Any]:
    """The `{"deliveryOrder": ..., "orderLines": [...]}` request for one canonical order."""
    lines = order_lines(order["items"])
    receiver = order["receiver"]
    remark = order.get("remark")
    carrier = order.get("carrier_preference")
    logistics = DEFAULT_CARRIER if carrier is None else CARRIER_CODE.get(carrier, DEFAULT_CARRIER)
    return {
        "deliveryOrder": {
            "deliveryOrderCode": order["order_no"],
            "orderType": ORDER_TYPE,
            "warehouseCode": WAREHOUSE_BY_SHOP.get(order["shop_code"], DEFAULT_WAREHOUSE),
            "createTime": shanghai_time(order["created_at"]),
            "logisticsCode": logistics,
            "buyerNick": order["buyer"]["nick"],
            "remark": remark if remark is not None else "",
            "totalQty": sum(line["planQty"] for line in lines),
            "totalAmount": format_money(to_decimal(order["amounts"]["paid_total"])),
            "invoiceFlag": "Y" if order.get("invoice") is not None else "N",
            "receiverInfo": {
                "name": receiver["name"],
                "mobile": receiver["mobile"],
                "province": receiver["province"],
                "city": receiver["city"],
                "area": receiver["district"],
                "detailAddress": receiver["address"].strip(),
            },
        },
        "orderLines": lines,
    }
