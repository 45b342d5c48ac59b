"""Ingest checks without a server: the two-speed order validator agrees with jsonschema, limits,
and the fingerprint."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.runtime.mapping import _format_checker
from dockyard.sample_orders import generate
from dockyard.service.config import LimitsConfig
from dockyard.service.ingest import BodyError, OrderValidator, fingerprint, order_schema, parse_json_body

SCHEMA = order_schema()
FAST = OrderValidator(SCHEMA)
FULL = jsonschema.Draft202012Validator(SCHEMA, format_checker=_format_checker())
ORDERS = [json.loads(json.dumps(o), parse_float=Decimal) for o in generate(60, seed=9)]

# Values that break or keep a field: wrong types, formats, enums, empties, nulls.
VALUES = st.sampled_from([None, "", "x", "12.5", "1e3", "12,5", 0, -1, 1.5, True, [], {}, "2023-11-11T00:00:00+08:00",
                          "2023-11-11 00:00:00", "yesterday", "TM", "sale", "SF", {"nick": "n"}, [{"sku": 1}]])


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@settings(database=None, max_examples=400, deadline=None)
@given(st.integers(0, len(ORDERS) - 1), st.data(), VALUES, st.booleans())
def test_the_fast_verdict_agrees_with_jsonschema(which: int, data: st.DataObject, value: Any, delete: bool) -> None:
    order = copy.deepcopy(ORDERS[which])
    path = data.draw(st.sampled_from(_paths(order)))
    parent = order
    for part in path[:-1]:
        parent = parent[part]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    assert FAST.valid(order) == FULL.is_valid(order)
    assert (FAST.reasons(order) == []) == FULL.is_valid(order)


def test_generated_orders_pass_and_reasons_name_every_problem() -> None:
    assert all(FAST.valid(o) for o in ORDERS)
    bad = copy.deepcopy(ORDERS[0])
    bad["items"][0]["qty"] = "two"
    del bad["buyer"]
    reasons = FAST.reasons(bad)
    assert any(r.startswith("items[0].qty") for r in reasons) and any("buyer" in r for r in reasons)


def test_body_limits_and_exact_decimals() -> None:
    limits = LimitsConfig(max_depth=4)
    assert parse_json_body(b'{"a": 1.10}', limits) == {"a": Decimal("1.10")}
    with pytest.raises(BodyError, match="deeper than 4"):
        parse_json_body(b'{"a": [[[[1]]]]}', limits)
    with pytest.raises(BodyError, match="not UTF-8"):
        parse_json_body(b'{"a": "\xff"}', limits)
    with pytest.raises(BodyError, match="nests deeper"):
        parse_json_body(b"[" * 100_000 + b"]" * 100_000, LimitsConfig())


def test_the_fingerprint_ignores_key_order_but_not_values() -> None:
    a = {"order_no": "1", "amounts": {"paid_total": Decimal("1.10"), "freight": "0"}}
    b = {"amounts": {"freight": "0", "paid_total": Decimal("1.10")}, "order_no": "1"}
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint({**a, "order_no": "2"})


def test_callback_fields_are_decrypted_before_the_mapping_reads_them() -> None:
    """`decrypt:` of a callback: every value at the path (lists included) is decrypted with the
    named cipher and secret, a missing optional field is left out."""
    from dockyard.runtime.fieldcrypto import get_cipher
    from dockyard.runtime.secrets import MappingSecrets, Secrets
    from dockyard.service.config import CallbackConfig
    from dockyard.service.context import ServiceContext
    from dockyard.service.feedback import _decrypt
    from dockyard.service.routing import Router

    key = "TEST-ONLY-16bytes"[:16]
    secrets = Secrets([MappingSecrets({"SM4_KEY": key})])
    cipher = get_cipher("sm4-ecb")
    secret = secrets.get("SM4_KEY")
    doc = {"receiver": {"mobile": cipher.encrypt("13800000000", secret)},
           "lines": [{"sn": cipher.encrypt("SN-1", secret)}, {"sn": cipher.encrypt("SN-2", secret)}, {}]}
    cfg = CallbackConfig("x", "m", decrypt=({"path": "receiver.mobile", "scheme": "sm4-ecb", "key": "SM4_KEY"},
                                            {"path": "lines[].sn", "scheme": "sm4-ecb", "key": "SM4_KEY"}))
    ctx = ServiceContext(config=None, mappings={}, secrets=secrets, router=Router(()))  # type: ignore[arg-type]
    _decrypt(doc, cfg, ctx)
    assert doc == {"receiver": {"mobile": "13800000000"}, "lines": [{"sn": "SN-1"}, {"sn": "SN-2"}, {}]}
