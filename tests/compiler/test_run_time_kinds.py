"""Values whose type is known only at run time, and pad widths computed from the input: each is
refused with a Dockyard error that names the spec line and says what was wrong, never with
Python's own TypeError or a MemoryError (what tests/compiler/test_checked_means_runs.py found)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dockyard.compiler.api import check_file, compile_file
from dockyard.runtime.errors import TransformError
from dockyard.runtime.functions import PAD_LIMIT, WrongKind

CLOCK = datetime(2023, 11, 11, 8, 0, tzinfo=UTC)
ORDER = {"order_no": "TM1", "buyer": {"nick": "n"}, "items": [{"sku": "A", "qty": 2}],
         "amounts": {"paid_total": "9.90"}, "created_at": "2023-11-11T08:00:00+08:00", "shop_code": "S", "receiver": {}}


def _spec(expr: str) -> str:
    return ("dockyard: 1\nname: t.kinds\nversion: \"1.0.0\"\nsource:\n  schema: order\n  key: order_no\n"
            f"target:\n  format: json\noutput:\n  f0?: >-\n    {expr}\n")


def _run(expr: str) -> Any:
    text = _spec(expr)
    report = check_file("t.yaml", text)
    assert report.ok, report
    document = compile_file("t.yaml", text).transform(ORDER, clock=CLOCK)
    return document.get("f0", document)


@pytest.mark.parametrize(("expr", "message"), [
    ("abs(parse_json(to_json(buyer)))", "expected a number, got dict"),
    ("abs(parse_json(to_json(order_no)))", "expected a number, got str"),
    ("abs(parse_json(to_json(true)))", "expected a number, got bool"),
    ("sum(parse_json(to_json(items)), $x => $x.sku)", "expected a number, got str"),
    ("substring(parse_json(to_json(items)), 1)", "expected a text, got list"),
    ("parse_json(to_json(buyer)) > 1", "cannot order a dict and a number"),
    ('parse_json("1") > "a"', "cannot order a number and a text"),
    ("parse_json(to_json(true)) <= 1", "cannot order a boolean and a number"),
    ("now() < parse_json(to_json(order_no))", "cannot order a date-time and a text"),
    ('"a" + parse_json(to_json(buyer))', "expected a text, got dict"),
    ('parse_json(to_json(items)) + "a"', "expected a text, got list"),
])
def test_a_value_of_the_wrong_kind_is_named_as_such(expr: str, message: str) -> None:
    with pytest.raises(TransformError) as info:
        _run(expr)
    assert info.value.location is not None and info.value.location.startswith("t.yaml:11:")
    assert message in str(info.value)
    assert isinstance(info.value.__cause__, WrongKind)


def test_values_of_unknown_type_of_the_right_kind_still_work() -> None:
    assert _run('parse_json("1.50") > 1') is True
    assert _run('parse_json("2") >= 2.0') is True
    assert _run('parse_json("\\"b\\"") > "a"') is True
    assert _run('"x" + parse_json("\\"y\\"")') == "xy"
    assert "f0" not in _run('"x" + parse_json("null")')  # missing, as any missing operand makes it
    assert _run('parse_json("null") > 1') is False  # ordering a missing value is false
    assert str(_run('abs(parse_json("-1.50"))')) == "1.50"
    assert _run('abs(parse_json("-3"))') == 3
    assert _run("sum(parse_json(to_json(items)), $x => $x.qty)") == 2


def test_a_computed_pad_width_beyond_the_limit_is_refused_and_one_within_it_pads() -> None:
    with pytest.raises(TransformError, match=f"pad width .* more than the limit of {PAD_LIMIT:,}"):
        _run('pad_left(order_no, epoch_millis(now()), "x")')
    assert _run('pad_left(order_no, length(order_no) + 2, "0")') == "00TM1"
    assert _run("pad_right(order_no, 0 - 5)") == "TM1"


def test_a_literal_pad_width_beyond_the_limit_is_refused_by_check() -> None:
    report = check_file("t.yaml", _spec(f'pad_left(order_no, {PAD_LIMIT + 1}, "0")'))
    assert not report.ok
    assert "more than the limit" in str(report)
    assert check_file("t.yaml", _spec(f'pad_left(order_no, {PAD_LIMIT}, "0")')).ok
