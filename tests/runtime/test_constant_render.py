"""A mapping whose every document is the same (an acknowledgement) is serialized once.

The compiler marks a mapping `constant` only when its output holds nothing but literals: no path,
no context value, no clock, no condition, no `$each`, no let. Such a mapping's render() keeps its
first bytes. These tests pin both halves: which specs are constant (the library's three acks are;
anything that reads or decides is not), and that the kept bytes are exactly what rendering anew
makes, whatever document and context come in, with validation still done when asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.compiler.api import compile_file
from dockyard.runtime.errors import DockyardError

ROOT = Path(__file__).resolve().parents[2]
ACKS = ("mappings/qimen/ack.yaml", "mappings/cainiao/ack.yaml", "mappings/sf/route-push.ack.yaml")

SCHEMA = {"type": "object", "required": ["order_no"],
          "properties": {"order_no": {"type": "string"}, "n": {"type": "integer"},
                         "items": {"type": "array", "items": {"type": "string"}}}}


def _spec(tmp_path: Path, output: str, extra: str = "", fmt: str = "json") -> Path:
    (tmp_path / "in.schema.json").write_text(json.dumps(SCHEMA))
    target = "format: json" if fmt == "json" else "format: xml\n  root: response"
    path = tmp_path / "m.yaml"
    path.write_text(f"""dockyard: 1
name: t.const
version: "1.0.0"
source:
  schema: in.schema.json
target:
  {target}
{extra}output:
{output}""")
    return path


@pytest.mark.parametrize("spec", ACKS)
def test_the_library_acks_are_constant(spec: str) -> None:
    assert compile_file(ROOT / spec).meta["constant"] is True


@pytest.mark.parametrize("spec", ["mappings/qimen/deliveryorder.create.yaml", "mappings/qimen/response.yaml",
                                  "mappings/sf/route-push.yaml"])
def test_a_mapping_that_reads_its_input_is_not(spec: str) -> None:
    assert compile_file(ROOT / spec).meta["constant"] is False


@pytest.mark.parametrize(("output", "extra"), [
    ('  a: "x"\n  b: order_no\n', ""),                                   # a path
    ('  a: "x"\n  b: string(now())\n', ""),                              # the clock
    ('  a: "x"\n  b: $ctx.shop\n', "context:\n  shop: {type: string}\n"),  # a context value
    ('  a: "x"\n  b:\n    $value: "y"\n    $when: present(n)\n', ""),    # a condition
    ('  a: "x"\n  b: >-\n    "y" + "z"\n', ""),                         # an expression (folded, not a literal)
    ('  a: "x"\n  b:\n    $each: items\n    $emit:\n      c: "y"\n', ""),  # a $each
    ('  a: "x"\n', "let:\n  k: order_no\n"),                              # a let (its evaluation can fail)
])
def test_anything_that_reads_or_decides_is_not_constant(tmp_path: Path, output: str, extra: str) -> None:
    assert compile_file(_spec(tmp_path, output, extra)).meta["constant"] is False


_documents = st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=20), st.integers()), max_size=5)


@pytest.mark.parametrize("fmt", ["json", "xml"])
@settings(max_examples=60, deadline=None)
@given(docs=st.lists(_documents, min_size=1, max_size=4), context=st.none() | _documents)
def test_kept_bytes_are_what_rendering_anew_makes(tmp_path_factory: Any, fmt: str, docs: list[dict[str, Any]],
                                                  context: dict[str, Any] | None) -> None:
    spec = _spec(tmp_path_factory.mktemp("c"), '  flag: "success"\n  code: "0"\n  list: ["a", "b"]\n  n: 7\n',
                 fmt=fmt)
    kept, fresh = compile_file(spec), compile_file(spec)
    assert kept.meta["constant"] is True
    for doc in docs:
        again = fresh._render(doc, context, None, False)  # the path every non-constant mapping takes
        assert kept.render(doc, context) == again
    assert kept._rendered is not None  # and it was kept


def test_validation_is_still_done_when_asked_for(tmp_path: Path) -> None:
    mapping = compile_file(_spec(tmp_path, '  flag: "success"\n'))
    assert mapping.render({"order_no": "A"}) == b'{"flag":"success"}'
    with pytest.raises(DockyardError):
        mapping.render({"n": "not a number"}, validate=True)
    assert mapping.render({"n": "not a number"}) == b'{"flag":"success"}'
