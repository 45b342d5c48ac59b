"""The function registry: every function is documented, every example runs and gives its stated
result exactly, and docs/language.md is what `dockyard.dsl.docgen` generates."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dockyard.compiler.api import compile_expression
from dockyard.dsl.docgen import CATEGORY_ORDER, main, render_language_reference
from dockyard.dsl.functions import REGISTRY, Example, Function

# The table the registry's lookup examples use.
TABLES = {"CARRIERS": {"SF": "SF", "JD": "JD", "ZTO": "ZTO", "YTO": "YTO"}}
DOC = Path(__file__).resolve().parents[2] / "docs" / "language.md"

FUNCTIONS = [pytest.param(fn, id=fn.name) for fn in REGISTRY.values()]
EXAMPLES = [pytest.param(fn, ex, id=f"{fn.name}-{i}: {ex.expr}")
            for fn in REGISTRY.values() for i, ex in enumerate(fn.examples)]


def assert_exact(actual: Any, expected: Any, where: str = "result") -> None:
    """Equal, and of the same Python type: a Decimal keeps its digits, an int is not a Decimal."""
    if expected is None:
        assert actual is None, f"{where}: expected missing (None), got {actual!r}"
        return
    assert type(actual) is type(expected), f"{where}: expected {expected!r}, got {actual!r}"
    if isinstance(expected, Decimal):
        assert str(actual) == str(expected), f"{where}: expected Decimal({str(expected)!r}), got {actual!r}"
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{where}: expected {expected!r}, got {actual!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_exact(a, e, f"{where}[{i}]")
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{where}: expected {expected!r}, got {actual!r}"
        for key in expected:
            assert_exact(actual[key], expected[key], f"{where}.{key}")
    else:
        assert actual == expected, f"{where}: expected {expected!r}, got {actual!r}"


# --- the registry ------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", FUNCTIONS)
def test_function_is_documented(fn: Function) -> None:
    assert fn.doc.strip(), f"{fn.name} has no doc"
    assert fn.category.strip(), f"{fn.name} has no category"
    for p in fn.params:
        assert p.doc.strip(), f"parameter {p.name!r} of {fn.name} has no doc"
    if fn.pure:
        assert fn.examples, f"{fn.name} has no example"


@pytest.mark.parametrize(("fn", "example"), EXAMPLES)
def test_example(fn: Function, example: Example) -> None:
    assert f"{fn.name}(" in example.expr, f"an example of {fn.name} must call it"
    compiled = compile_expression(example.expr, tables=TABLES)
    assert_exact(compiled.evaluate(example.input), example.result)


def test_every_category_has_its_place() -> None:
    # A category outside CATEGORY_ORDER would still be documented (after the others); a typo in a
    # category name would quietly make a new section, so the registry's categories are pinned here.
    assert {fn.category for fn in REGISTRY.values()} <= set(CATEGORY_ORDER)


def test_now_reads_the_injected_clock() -> None:
    compiled = compile_expression("string(now())")
    assert compiled.evaluate({}, clock=datetime(2023, 11, 11, tzinfo=UTC)) == "2023-11-11T00:00:00+00:00"


def test_impure_functions_have_no_examples() -> None:
    # Their result is not fixed by the expression, so a stated result could not be checked.
    assert all(not fn.examples for fn in REGISTRY.values() if not fn.pure)


# --- docs/language.md ----------------------------------------------------------------------------

def test_language_reference_is_up_to_date() -> None:
    assert DOC.is_file(), "docs/language.md is missing: run python -m dockyard.dsl.docgen"
    assert render_language_reference() == DOC.read_text(encoding="utf-8"), (
        "docs/language.md is out of date: run python -m dockyard.dsl.docgen")


def test_language_reference_is_deterministic() -> None:
    assert render_language_reference() == render_language_reference()


def _headings(markdown: str) -> list[str]:
    """The headings outside fenced code blocks."""
    headings, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.+)", line)):
            headings.append(m.group(1))
    return headings


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = heading.lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_language_reference_documents_every_function_once() -> None:
    headings = _headings(render_language_reference())
    for name in REGISTRY:
        assert headings.count(f"`{name}`") == 1, name


def test_language_reference_links_resolve() -> None:
    text = render_language_reference()
    slugs = [_slug(h) for h in _headings(text)]
    assert len(slugs) == len(set(slugs)), "two headings share an anchor"
    for target in re.findall(r"\]\(#([^)]+)\)", text):
        assert target in slugs, f"link to #{target} has no heading"


def test_docgen_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "language.md"
    assert main(["--check", str(path)]) == 1
    assert "does not exist" in capsys.readouterr().out
    assert main([str(path)]) == 0
    assert path.read_text(encoding="utf-8") == render_language_reference()
    capsys.readouterr()
    assert main(["--check", str(path)]) == 0
    assert capsys.readouterr().out == ""
    path.write_text(render_language_reference() + "stale\n", encoding="utf-8")
    assert main(["--check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "out of date" in out and out.count("\n") == 1


def test_docgen_imports_neither_lark_nor_jinja2() -> None:
    code = ("import sys, dockyard.dsl.docgen\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lark', 'jinja2'))\n"
            "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
