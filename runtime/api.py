"""The runtime's public API for generated code: the only module a compiled mapping imports.

Keeping this list narrow is what keeps policies pluggable and generated code reviewable; a test
checks that generated modules import nothing else. Nothing here imports Lark, Jinja2 or the
compiler.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Decimal,
)
from re import compile as re_compile

from dockyard.runtime.coverage import CoverageRecorder
from dockyard.runtime.dates import (
    datetime_formatter,
    datetime_parser,
    epoch_millis,
    iso_formatter,
    parse_datetime,
    zone,
)
from dockyard.runtime.functions import (
    MONEY,
    Memo,
    any_order,
    as_bool,
    as_datetime,
    as_int,
    as_list,
    as_number,
    as_object,
    as_str,
    compact,
    compact_list,
    fail,
    first,
    get_field,
    get_index,
    get_item,
    last,
    mask,
    memo_put,
    money_abs,
    money_add,
    money_compare,
    money_div,
    money_max,
    money_min,
    money_minus,
    money_mul,
    money_order,
    money_rem,
    money_sub,
    money_sum,
    pad_width,
    parse_json,
    regex_extract,
    split,
    to_decimal,
    to_int,
    to_string,
)
from dockyard.runtime.serialize import to_json_text, writes_wrongly
from dockyard.runtime.target import CData, Target, XmlOptions

__all__ = [
    "JSON_SCALARS",
    "MONEY",
    "ROUND_CEILING",
    "ROUND_DOWN",
    "ROUND_FLOOR",
    "ROUND_HALF_DOWN",
    "ROUND_HALF_EVEN",
    "ROUND_HALF_UP",
    "ROUND_UP",
    "CData",
    "CoverageRecorder",
    "Decimal",
    "Memo",
    "MissingValue",
    "Target",
    "XmlOptions",
    "any_order",
    "as_bool",
    "as_datetime",
    "as_int",
    "as_list",
    "as_number",
    "as_object",
    "as_str",
    "compact",
    "compact_list",
    "datetime_formatter",
    "datetime_parser",
    "epoch_millis",
    "fail",
    "first",
    "get_field",
    "get_index",
    "get_item",
    "iso_formatter",
    "last",
    "mask",
    "memo_put",
    "money_abs",
    "money_add",
    "money_compare",
    "money_div",
    "money_max",
    "money_min",
    "money_minus",
    "money_mul",
    "money_order",
    "money_rem",
    "money_sub",
    "money_sum",
    "pad_width",
    "parse_datetime",
    "parse_json",
    "re_compile",
    "regex_extract",
    "split",
    "to_decimal",
    "to_int",
    "to_json_text",
    "to_string",
    "writes_wrongly",
    "zone",
]


# The classes a value may have for orjson to write it as the JSON writer would (a Decimal or a
# datetime through its hook); a compiled mapping's `json_plain` checks values read from the input.
JSON_SCALARS = frozenset((str, int, bool, Decimal, datetime, date, CData))


class MissingValue(Exception):
    """Raised by generated code when a required output field has no value. The mapping wrapper
    turns it into a TransformError naming the spec location, the field and the business key."""

    def __init__(self, field_index: int) -> None:
        self.field_index = field_index
        super().__init__(field_index)
