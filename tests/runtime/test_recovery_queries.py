"""The QIMEN and JD recovery-query answers → outcome, over classes of answers too large for the
mapping tests: a refusal is read as "not at the warehouse" (a resend) only when its words say the
order does not exist, and anything found is settled with the ids it carries."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dockyard
from dockyard.runtime.mapping import CompiledMapping

ROOT = Path(__file__).resolve().parents[2]

# Words that may make a refusal mean "not found" or "busy" (both → retryable): the property below
# draws messages without any of them. Written out here, apart from the mappings' regular expressions.
TRIGGERS = ("不存在", "未找到", "找不到", "查询不到", "查不到", "没有找到", "未查询到", "未获取到", "无此", "无该",
            "found", "exist", "no such", "繁忙", "稍后", "限流", "频繁", "busy", "timeout", "超时")
ORDER_WORDS = ("单据", "订单", "出库单", "发货单", "单号")
# Text of the kind WMSs and gateways write: CJK, ASCII letters, digits, punctuation, spaces.
TEXT = st.text(alphabet=st.sampled_from(list("订单号码货主商品仓库签名参数错误已取消拒绝失败无权限 "
                                               "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789:：,，.。-_()")),
               max_size=40)
CODE = st.text(alphabet=st.sampled_from(list("abcdefghij-._0123456789")), min_size=1, max_size=12)
ID = st.text(alphabet=st.sampled_from(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")), min_size=1, max_size=20)


def _mapping(path: str, cache: dict[str, CompiledMapping] = {}) -> CompiledMapping:  # noqa: B006 - a cache
    if path not in cache:
        cache[path] = dockyard.compile_file(ROOT / "mappings" / path)
    return cache[path]


def qimen(body: str) -> dict[str, Any]:
    m = _mapping("qimen/query-response.yaml")
    result: dict[str, Any] = m.transform(m.parse_input(body.encode("utf-8")), {})
    return result


def jd(doc: dict[str, Any]) -> dict[str, Any]:
    m = _mapping("jd/query-response.yaml")
    result: dict[str, Any] = m.transform(m.parse_input(orjson.dumps(doc)), {})
    return result


def _plain(text: str) -> bool:
    return not any(w in text.lower() for w in TRIGGERS)


@settings(max_examples=150, deadline=None)
@given(TEXT.filter(_plain), CODE)
def test_qimen_a_refusal_without_not_found_words_is_rejected(message: str, code: str) -> None:
    out = qimen(f"<response><flag>failure</flag><code>{escape(code)}</code><message>{escape(message)}</message>"
                "</response>")
    assert out["result"] == "rejected" and out["retryable"] is False, (message, out)


@settings(max_examples=150, deadline=None)
@given(TEXT.filter(_plain), CODE)
def test_jd_an_error_without_not_found_words_is_rejected(message: str, code: str) -> None:
    out = jd({"code": code, "msg": message})
    assert out["result"] == ("retryable" if code == "0" else "rejected"), (message, out)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(ORDER_WORDS), st.sampled_from(("不存在", "未找到", "找不到", "查询不到")), ID)
def test_an_order_that_does_not_exist_is_not_found_at_both(word: str, absent: str, order_no: str) -> None:
    message = f"{word}{order_no}{absent}"
    assert qimen(f"<response><flag>failure</flag><message>{escape(message)}</message></response>")["result"] \
        == "retryable"
    assert jd({"code": 1004, "msg": message})["result"] == "retryable"


@settings(max_examples=100, deadline=None)
@given(ID, ID, st.sampled_from(("NEW", "ACCEPT", "PICK", "DELIVERED", "CANCELED")), TEXT)
def test_qimen_found_is_a_duplicate_with_the_wms_id(code: str, order_id: str, status: str, message: str) -> None:
    # Found wins over any message, even one that says "not found" about something else.
    out = qimen(f"<response><flag>success</flag><message>{escape(message)}</message><deliveryOrder>"
                f"<deliveryOrderCode>{escape(code)}</deliveryOrderCode><deliveryOrderId>{escape(order_id)}"
                f"</deliveryOrderId><status>{status}</status></deliveryOrder></response>")
    assert (out["result"], out["warehouse_order_id"], out["original"]["status"]) == ("duplicate", order_id, status)


@settings(max_examples=100, deadline=None)
@given(ID, ID, st.one_of(st.integers(-1, 999), TEXT))
def test_jd_found_is_a_duplicate_with_the_order_code_and_waybill(order_code: str, waybill: str, status: Any) -> None:
    out = jd({"code": 0, "data": {"orderCode": order_code, "waybillCode": waybill, "status": status}})
    assert out["result"] == "duplicate" and out["warehouse_order_id"] == order_code
    assert out["waybills"] == [{"carrier_code": "JD", "waybill_no": waybill}]


@pytest.mark.parametrize("message", ["货主不存在", "商品编码不存在: SKU-1", "仓库编码不存在", "收件人不存在",
                                     "商家编码不存在"])
def test_other_things_that_do_not_exist_are_not_the_order(message: str) -> None:
    assert qimen(f"<response><flag>failure</flag><message>{message}</message></response>")["result"] == "rejected"
    assert jd({"code": 1, "msg": message})["result"] == "rejected"
