"""The one gate through which user-derived values enter generated code: `literal(value)`.

Only plain data is accepted, and it is written with `repr()` of the final value (Decimal as
`Decimal('…')`, compiled patterns as `re_compile('…')`). Anything else is a compiler bug and
raises. A property test checks `ast.literal_eval(literal(v)) == v` for the plain types.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

__all__ = ["literal"]


def literal(value: Any) -> str:
    # The base types' own __repr__/__str__ are called, never a subclass's: an overridden repr
    # must not be able to write code.
    if value is None or isinstance(value, bool):
        return repr(bool(value)) if value is not None else "None"
    if isinstance(value, str):
        return str.__repr__(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write the float {value!r} as a literal")
        return float.__repr__(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot write the decimal {value!r} as a literal")
        return f"Decimal({str.__repr__(Decimal.__str__(value))})"
    if isinstance(value, re.Pattern):
        return f"re_compile({literal(str(value.pattern))}, {int.__repr__(int(value.flags & ~re.UNICODE))})"
    if type(value) is tuple:
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if type(value) is list:
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if type(value) is dict:
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no literal form for {type(value).__name__}")
