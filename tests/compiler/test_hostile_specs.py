"""A hostile spec gets a diagnostic, in bounded time and memory, never a traceback: YAML alias
bombs, deep nesting, a NUL or a lone surrogate in the target encoding, a date-time pattern with no
date part, files from outside the spec's folder. Each class is tested through `check`, and where
the issue was seen, through show-code, dry-run and compile too (the CLI)."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.cli import main
from dockyard.compiler.api import check_file, compile_file
from dockyard.dsl.yaml_nodes import MAX_ALIASES, MAX_DEPTH, safe_load

ROOT = Path(__file__).resolve().parents[2]
ORDER = ROOT / "examples" / "orders" / "tmall-basic.json"
BASE = """dockyard: 1
name: hostile.spec
version: "1.0.0"
source:
  schema: order
  key: order_no
target:
  format: xml
  root: request
  encoding: UTF-8
output:
  code: order_no
"""


def _codes(text: str, tmp_path: Path, name: str = "spec.yaml") -> list[str]:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    report = check_file(path)
    return [d.code for d in report.diagnostics if d.is_error]


def _bomb(levels: int, width: int, referenced: bool) -> str:
    lines = [f"  a0: &a0 [{', '.join(['x'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    tail = f"  ref: *a{levels - 1}\n" if referenced else ""
    return BASE + "x-bomb:\n" + "\n".join(lines) + "\n" + tail


@pytest.mark.parametrize("referenced", [False, True])
def test_an_alias_bomb_is_a_diagnostic_in_bounded_time_and_memory(tmp_path: Path, referenced: bool) -> None:
    """The 2 KB spec of the report (9 levels of 9 aliases: 387 million nodes once expanded) took
    40 s and 774 MB; the aliases did not even need to be used."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.process_time()
    codes = _codes(_bomb(9, 9, referenced), tmp_path)
    assert codes == ["yaml-aliases"]
    assert time.process_time() - started < 5  # a generous bound, not a speed test: it was 40 s
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KB


def test_too_many_aliases_even_small_ones_and_a_self_containing_alias(tmp_path: Path) -> None:
    many = BASE + "x-a: &a x\nx-many: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
    assert _codes(many, tmp_path) == ["yaml-aliases"]
    fine = BASE + "x-a: &a x\nx-some: [" + ", ".join(["*a"] * 10) + "]\n"
    assert "yaml-aliases" not in _codes(fine, tmp_path)
    assert _codes(BASE + "x-loop: &l [*l]\n", tmp_path) == ["yaml-aliases"]
    assert _codes(BASE + "x-loop: &m {k: [*m]}\n", tmp_path) == ["yaml-aliases"]


@pytest.mark.parametrize("style", ["flow-list", "flow-map", "block"])
def test_deep_nesting_is_a_diagnostic_not_a_recursion_error(tmp_path: Path, style: str) -> None:
    n = 1000
    if style == "flow-list":
        deep = "x-deep: " + "[" * n + "]" * n + "\n"
    elif style == "flow-map":
        deep = "x-deep: " + "{a: " * n + "1" + "}" * n + "\n"
    else:
        deep = "x-deep:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(n)) + "  " * (n + 1) + "v: 1\n"
    assert _codes(BASE + deep, tmp_path) == ["yaml-depth"]
    shallow = "x-deep: " + "[" * (MAX_DEPTH - 5) + "]" * (MAX_DEPTH - 5) + "\n"
    assert "yaml-depth" not in _codes(BASE + shallow, tmp_path)


def test_the_bounded_safe_load_of_test_and_context_files() -> None:
    assert safe_load("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}
    with pytest.raises(yaml.YAMLError, match="aliases"):
        safe_load(_bomb(9, 9, True).replace("dockyard: 1\n", "dockyard: 1\n", 1))
    with pytest.raises(yaml.YAMLError, match="nested"):
        safe_load("[" * 2000 + "]" * 2000)


ENCODINGS = ['"UTF\\0-8"', '"\\ud800"', '"UTF-8\\udfff"', '"ut f8"', '"-x"', '"rot13"', '"base64"', '"no-such-codec"',
             '""', '"\\x01"']


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_bad_target_encoding_is_a_diagnostic_in_every_command(tmp_path: Path, encoding: str) -> None:
    spec = tmp_path / "enc.yaml"
    spec.write_text(BASE.replace("encoding: UTF-8", f"encoding: {encoding}"), encoding="utf-8")
    runner = CliRunner()
    for args in (["check", str(spec)], ["show-code", str(spec)], ["dry-run", str(spec), str(ORDER)],
                 ["compile", "-o", str(tmp_path / "bundle"), str(spec)]):
        result = runner.invoke(main, args)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.output)
        assert result.exit_code != 0, args
        assert "Traceback" not in result.output and "spec-bad-value" not in result.output
        assert "enc.yaml:10:" in result.output, result.output


@settings(database=None, max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=12))
def test_any_encoding_text_is_refused_or_serializes(name: str) -> None:
    escaped = name.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    text = BASE.replace("encoding: UTF-8", f'encoding: "{escaped}"')
    report = check_file("enc.yaml", text)
    if report.ok:
        compile_file("enc.yaml", text).render({"order_no": "X1"})


@pytest.mark.parametrize("pattern", ["---", "", "'yyyy'", "''", " ", "- : /"])
def test_a_date_pattern_without_a_date_part_is_refused_by_check(tmp_path: Path, pattern: str) -> None:
    field = f'  t: >-\n    format_datetime(parse_datetime("2023-11-11T00:00:00Z"), "{pattern}")\n'
    codes = _codes(BASE + field, tmp_path)
    assert codes and set(codes) <= {"bad-argument"}


def test_check_accepting_means_the_bundle_loads_the_reported_case(tmp_path: Path) -> None:
    """`compile` once wrote a bundle that could not be loaded (a TypeError at import)."""
    good = BASE + '  t: format_datetime(parse_datetime("2023-11-11T00:00:00Z"), "yyyy---MM")\n'
    spec = tmp_path / "ok.yaml"
    spec.write_text(good, encoding="utf-8")
    assert b"<t>2023---11</t>" in compile_file(spec).render({"order_no": "X1"})


@pytest.mark.parametrize("call", ['pad_left(order_no, 20, "---")', 'pad_right(order_no, 3, "")',
                                  'mask(order_no, 1, 1, "ab")'])
def test_a_fill_character_is_one_character(tmp_path: Path, call: str) -> None:
    assert _codes(BASE + f"  t: {call}\n", tmp_path) == ["bad-argument"]


def test_join_needs_texts_and_a_list_argument_may_hold_a_temporary(tmp_path: Path) -> None:
    assert _codes(BASE.replace("format: xml\n  root: request\n  encoding: UTF-8", "format: json")
                  + "  t: join(items, \",\")\n", tmp_path) == ["type-argument"]
    # `parse_json(remark)` is generated with an assignment expression, which Python refuses in a
    # comprehension's iterable: it once made "generated code does not compile".
    spec = BASE.replace("format: xml\n  root: request\n  encoding: UTF-8", "format: json") + (
        "  a?: abs(min(parse_json(remark)))\n  b: count(parse_json(remark))\n  c: sum(parse_json(remark))\n"
        "  d: map(parse_json(remark), $x => $x)\n  e: filter(parse_json(remark), $x => $x > 1)\n")
    path = tmp_path / "walrus.yaml"
    path.write_text(spec, encoding="utf-8")
    doc = compile_file(path).transform({"order_no": "X1", "remark": "[3, 1, 2]"})
    assert doc == {"code": "X1", "a": 1, "b": 3, "c": 6, "d": [3, 1, 2], "e": [3, 2]}


def test_table_and_schema_files_are_confined_to_the_spec_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.csv").write_text("k,v\na,SECRET-FROM-THE-BUILD-MACHINE\n", encoding="utf-8")
    (outside / "s.json").write_text('{"type": "object"}', encoding="utf-8")
    project = tmp_path / "project"
    specs = project / "specs" / "wh"
    specs.mkdir(parents=True)
    (specs / "sub").mkdir()
    (specs / "sub" / "t.csv").write_text("k,v\na,1\n", encoding="utf-8")
    (specs / "link.csv").symlink_to(outside / "x.csv")
    table = BASE + "tables:\n  T:\n    file: {file}\n"
    for ref in ("../../../outside/x.csv", str(outside / "x.csv"), "link.csv"):
        assert _codes(table.format(file=ref), specs) == ["spec-file-outside"], ref
    assert _codes(table.format(file="sub/t.csv"), specs) == []
    schema = BASE.replace("  schema: order\n", "  schema: ../../../outside/s.json\n")
    assert _codes(schema, specs) == ["spec-file-outside"]
    # An explicit allow-list in the project's pyproject.toml
    (project / "pyproject.toml").write_text('[tool.dockyard]\nspec_file_roots = ["../outside"]\n', encoding="utf-8")
    from dockyard.dsl import spec_parser

    spec_parser._file_roots.cache_clear()
    try:
        assert _codes(table.format(file="../../../outside/x.csv"), specs) == []
    finally:
        spec_parser._file_roots.cache_clear()
