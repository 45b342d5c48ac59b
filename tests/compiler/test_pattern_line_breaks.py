"""A value that a schema constrains by a pattern, with a line break after it (a YAML block scalar
or an escaped "\\n" gives one easily), is refused where it is written: in a spec (its structure is
checked against dsl/schemas/spec.schema.json), in a constant written into a target-schema field,
and in the service config. Python's `$` matches before a final newline and let each of these
through the schema before (runtime/schema_patterns.py)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.compiler.api import check_file
from dockyard.dsl.diagnostics import DiagnosticsError
from dockyard.service.config import load_config

BASE = """dockyard: 1
name: {name}
version: {version}
source:
  schema: order
  key: order_no
target:
  format: json
tables:
  {table}: {{rows: {{TM: tmall}}}}
output:
  code: order_no
  channel: lookup(CHANNELS, "TM")
"""
GOOD = {"name": "lines.spec", "version": '"1.0.0"', "table": "CHANNELS"}
# where each value is written in BASE (line, column), for the diagnostic's position
WHERE = {"name": (2, 7), "version": (3, 10), "table": (10, 3)}


def _errors(tmp_path: Path, text: str) -> list[tuple[int, int, str]]:
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    report = check_file(path)
    return [(d.span.line, d.span.col, d.message) for d in report.diagnostics if d.is_error]


def test_the_base_spec_is_clean(tmp_path: Path) -> None:
    assert _errors(tmp_path, BASE.format(**GOOD)) == []


@settings(database=None, max_examples=30, deadline=None)
@given(st.sampled_from(sorted(WHERE)), st.sampled_from(["\\n", "\\n\\n", "\\r\\n", " ", "\\t"]))
def test_a_spec_value_with_a_line_break_after_it_is_refused_where_it_is_written(field: str, suffix: str) -> None:
    import tempfile

    values = dict(GOOD)
    plain = values[field].strip('"')
    values[field] = json.dumps(plain + json.loads(f'"{suffix}"'))  # a YAML double-quoted scalar, escapes kept
    text = BASE.format(**values)
    with tempfile.TemporaryDirectory() as folder:
        errors = _errors(Path(folder), text)
    assert errors, f"{field} with {suffix!r} after it was accepted"
    assert WHERE[field] in [(line, col) for line, col, _ in errors], errors
    assert not any("Traceback" in message for _, _, message in errors)


def test_a_constant_with_a_newline_does_not_fit_a_target_pattern(tmp_path: Path) -> None:
    (tmp_path / "target.schema.json").write_text(json.dumps({
        "type": "object", "properties": {"kind": {"type": "string", "pattern": "^[A-Z]+$"}}}), encoding="utf-8")
    spec = textwrap.dedent("""\
        dockyard: 1
        name: target.pattern
        version: "1.0.0"
        source:
          schema: order
          key: order_no
        target:
          format: json
          schema: target.schema.json
        output:
          kind: {value}
        """)
    assert _errors(tmp_path, spec.format(value='"SALE"')) == []
    errors = _errors(tmp_path, spec.format(value='"SALE\\n"'))
    assert [(line, col) for line, col, _ in errors] == [(11, 9)]
    assert "does not fit the target schema" in errors[0][2]


@pytest.mark.parametrize("suffix", ["\\n", " "])
def test_a_config_name_with_a_line_break_after_it_is_refused_where_it_is_written(tmp_path: Path,
                                                                                  suffix: str) -> None:
    (tmp_path / "build.dybundle").mkdir()
    config = tmp_path / "dockyard.yaml"
    config.write_text(textwrap.dedent(f"""\
        dockyard: 1
        bundles: [build.dybundle]
        warehouses:
          wh:
            flows:
              create: {{request: qimen.deliveryorder.create, response: qimen.response}}
        dashboard: {{tokens: {{ops: {{env: "OPS_TOKEN{suffix}", role: read}}}}}}
        """), encoding="utf-8")
    with pytest.raises(DiagnosticsError) as info:
        load_config(config)
    found = [(d.span.line, d.span.col, d.code) for d in info.value.diagnostics]
    column = config.read_text(encoding="utf-8").splitlines()[6].index('"OPS_TOKEN') + 1
    assert (7, column, "config-bad-value") in found, found
