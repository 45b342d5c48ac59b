"""Golden tests of the diagnostics a person sees: one small spec per kind of mistake.

Each case is `diagnostics/<kind>.yaml` (a valid spec apart from its one mistake) and the rendered
diagnostics `diagnostics/<kind>.expected`, exactly as `dockyard check` would print them with the
working directory at the repository root. To regenerate the expected files after an intended change:

    DOCKYARD_UPDATE_GOLDEN=1 pytest tests/compiler/test_diagnostics.py

then read every changed file: the caret must sit under the mistake and the message must be clear.

`diagnostics/reported/` holds specs whose diagnostics are wrong today (reported to the lead); their
tests state the wanted behaviour and are marked xfail until the checker is fixed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.compiler.api import CheckReport, check_file
from dockyard.dsl.diagnostics import Diagnostic, Severity, render_all

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "diagnostics"
CASES = sorted(p.stem for p in HERE.glob("*.yaml"))
UPDATE = os.environ.get("DOCKYARD_UPDATE_GOLDEN") == "1"


def relative(case: str) -> str:
    return (HERE / f"{case}.yaml").relative_to(ROOT).as_posix()


def check_case(case: str, monkeypatch: pytest.MonkeyPatch) -> CheckReport:
    monkeypatch.chdir(ROOT)
    return check_file(relative(case))


def rendered(report: CheckReport) -> str:
    return render_all(report.diagnostics, report.sources) + "\n"


def compare_golden(case: str, actual: str) -> None:
    """Compare with `<case>.expected`, or rewrite it when DOCKYARD_UPDATE_GOLDEN=1."""
    expected_file = HERE / f"{case}.expected"
    if UPDATE:
        if not expected_file.exists() or expected_file.read_text(encoding="utf-8") != actual:
            expected_file.write_text(actual, encoding="utf-8", newline="\n")
        return
    assert expected_file.exists(), f"{expected_file.name} is missing: run with DOCKYARD_UPDATE_GOLDEN=1"
    assert actual == expected_file.read_text(encoding="utf-8")


# The kind of each case: its codes in the order reported, and whether the spec still passes.
EXPECTED_CODES: dict[str, tuple[list[str], bool]] = {
    "yaml-syntax": (["yaml-syntax"], False),
    "duplicate-key": (["yaml-duplicate-key"], False),
    "unknown-top-level-key": (["spec-missing-key", "spec-unknown-key"], False),
    "missing-target": (["spec-missing-key"], False),
    "bad-target-format": (["spec-bad-value"], False),
    "expression-syntax": (["syntax-operator"], False),
    "unknown-source-path": (["unknown-path"], False),
    "unquoted-constant": (["unknown-path"], False),
    "unknown-function": (["unknown-function"], False),
    "unknown-table": (["unknown-table"], False),
    "wrong-argument-count": (["arity"], False),
    "wrong-argument-type": (["type-argument"], False),
    "string-decimal-mix": (["type-mix"], False),
    "literal-expected": (["literal-expected"], False),
    "unknown-time-zone": (["bad-argument"], False),
    "bad-date-pattern": (["bad-argument"], False),
    "invalid-regex": (["bad-argument"], False),
    "unused-let": (["unused-let"], True),
    "position-outside-each": (["unknown-variable"], False),
    "each-over-non-list": (["type-each"], False),
    "target-schema": (["target-schema", "target-schema"], False),
    "xml-invalid-element-name": (["target-xml-name"], False),
    "wire-settings": (["request-sign", "unknown-policy", "request-encrypt", "request-encrypt"], False),
    "no-null": (["no-null", "no-null"], False),
    "required-omit": (["required-omit"], False),
    "required-omit-via-let": (["required-omit", "required-omit"], False),
    "when-beside-each": (["spec-directive"], False),
    "key-not-a-value": (["key-not-a-value"], False),
    "bad-key-path": (["spec-bad-value"], False),
    "several-mistakes": (["unused-let", "unknown-path", "unknown-path", "unknown-function", "type-mix",
                          "bad-argument", "arity", "type-mix"], False),
}


def test_every_case_has_a_kind() -> None:
    assert set(CASES) == set(EXPECTED_CODES)


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    report = check_case(case, monkeypatch)
    compare_golden(case, rendered(report))


@pytest.mark.parametrize("case", CASES)
def test_codes_and_outcome(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    report = check_case(case, monkeypatch)
    codes, ok = EXPECTED_CODES[case]
    assert [d.code for d in report.diagnostics] == codes
    assert report.ok is ok
    for d in report.diagnostics:
        assert d.span.file == relative(case)  # every message names the spec, relative to the root


@pytest.mark.parametrize("case", CASES)
def test_diagnostics_are_sorted_by_position(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    report = check_case(case, monkeypatch)
    assert report.diagnostics == sorted(report.diagnostics, key=Diagnostic.sort_key)


def test_several_mistakes_are_all_reported_in_one_run(monkeypatch: pytest.MonkeyPatch) -> None:
    report = check_case("several-mistakes", monkeypatch)
    lines = (HERE / "several-mistakes.yaml").read_text(encoding="utf-8").splitlines()
    # (line, the text under the caret, severity): each caret sits under its own mistake.
    found = [(d.span.line, lines[d.span.line - 1][d.span.col - 1 : d.span.col - 1 + d.span.width], d.severity)
             for d in report.diagnostics]
    assert found == [
        (13, "unused", Severity.WARNING),
        (18, "JYCK", Severity.ERROR),
        (19, "nik", Severity.ERROR),
        (20, "trm", Severity.ERROR),
        (22, '"¥" + amounts.paid_total', Severity.ERROR),
        (24, '"Asia/Shangai"', Severity.ERROR),
        (29, "trim($line.sku, 1)", Severity.ERROR),
        (31, '$position + "x"', Severity.ERROR),
    ]
    positions = [(d.span.line, d.span.col) for d in report.diagnostics]
    assert positions == sorted(positions)
    assert not report.ok
    assert report.spec is not None  # the spec parsed: every mistake came from one checker run


def test_diagnostics_do_not_depend_on_the_working_directory(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    """Checked from elsewhere with an absolute path, only the file name in the header changes."""
    here = rendered(check_case("unknown-source-path", monkeypatch))
    monkeypatch.chdir(tmp_path)
    absolute = HERE / "unknown-source-path.yaml"
    report = check_file(absolute)
    assert report.path == str(absolute)
    assert rendered(report) == here.replace(relative("unknown-source-path"), str(absolute))


def test_reference_mapping_checks_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    report = check_file("mappings/reference/deliveryorder.yaml")
    assert report.diagnostics == [], render_all(report.diagnostics, report.sources)
    assert report.ok
    assert report.spec is not None
    assert report.spec.name == "reference.deliveryorder"


# --- regressions ------------------------------------------------------------------------------------
# Specs whose diagnostics were once wrong (wrong place, missing, confusing, hidden by another error,
# or a crash). Each test states the behaviour a person needs.

REPORTED = HERE / "regressions"


def check_reported(case: str, monkeypatch: pytest.MonkeyPatch) -> tuple[CheckReport, list[str]]:
    monkeypatch.chdir(ROOT)
    path = REPORTED / f"{case}.yaml"
    return check_file(path.relative_to(ROOT).as_posix()), path.read_text(encoding="utf-8").splitlines()


def at(report: CheckReport, line: int) -> list[Diagnostic]:
    return [d for d in report.diagnostics if d.span.line == line]


def _unknown_variable(report: CheckReport, lines: list[str]) -> None:
    [diag] = [d for d in report.diagnostics if d.code == "unknown-variable"]
    assert (diag.span.line, diag.span.col) == (17, 19)
    assert diag.hint == "did you mean '$lines'?"  # was: "did you mean 'lines'?" (no $)


def _form_nested_object(report: CheckReport, lines: list[str]) -> None:
    [diag] = report.diagnostics
    assert lines[diag.span.line - 1].strip().startswith("receiverInfo:")  # was: under 'name:' below it


def _target_schema_required(report: CheckReport, lines: list[str]) -> None:
    [diag] = report.diagnostics
    assert lines[diag.span.line - 1].strip() == "deliveryOrder:"  # was: under 'deliveryOrderCode:'


def _no_yaml_token_names(report: CheckReport, lines: list[str]) -> None:
    assert report.diagnostics
    for d in report.diagnostics:
        assert "<block" not in d.message and "<scalar>" not in d.message, d.message


def _syntax_error_hides_checks(report: CheckReport, lines: list[str]) -> None:
    found = [(d.span.line, d.code) for d in report.diagnostics]
    assert found == [(14, "unknown-path"), (15, "syntax-incomplete")]


def _structure_error_hides_checks(report: CheckReport, lines: list[str]) -> None:
    found = [(d.span.line, d.code) for d in report.diagnostics]
    assert found == [(14, "unknown-path"), (17, "spec-directive")]


def _missing_operator_wording(report: CheckReport, lines: list[str]) -> None:
    [diag] = report.diagnostics
    assert (diag.span.line, diag.span.col) == (14, 52)
    assert "unexpected the " not in diag.message  # was: "unexpected the number 2 after a complete value"


def _output_not_a_mapping(report: CheckReport, lines: list[str]) -> None:
    assert not report.ok
    assert [(d.span.line, d.severity) for d in report.diagnostics] == [(11, Severity.ERROR)]  # was: nothing


def _xml_root_location(report: CheckReport, lines: list[str]) -> None:
    [diag] = report.diagnostics
    assert lines[diag.span.line - 1].strip() == 'root: "1request"'  # was: under 'deliveryOrder:'


def _source_key_location(report: CheckReport, lines: list[str]) -> None:
    [diag] = report.diagnostics
    assert lines[diag.span.line - 1].strip() == "key: order.no"  # was: under 'schema: order'


def _let_defined_below(report: CheckReport, lines: list[str]) -> None:
    [diag] = [d for d in report.diagnostics if d.code == "unknown-variable"]
    assert diag.hint != "declare it under let:"  # it is declared, one line below


def _sum_of_strings(report: CheckReport, lines: list[str]) -> None:
    assert len(report.diagnostics) == 1  # was: two errors for one mistake


def _silently_accepted(report: CheckReport, lines: list[str]) -> None:
    assert not report.ok  # was: no diagnostic at all, the spec passes


REPORTED_CASES = {
    "unknown-variable": _unknown_variable,
    "form-nested-object": _form_nested_object,
    "target-schema-required": _target_schema_required,
    "expression-starts-with-quote": _no_yaml_token_names,
    "yaml-under-indentation": _no_yaml_token_names,
    "syntax-error-hides-checks": _syntax_error_hides_checks,
    "structure-error-hides-checks": _structure_error_hides_checks,
    "missing-operator-wording": _missing_operator_wording,
    "output-not-a-mapping": _output_not_a_mapping,
    "xml-root-location": _xml_root_location,
    "source-key-location": _source_key_location,
    "let-defined-below": _let_defined_below,
    "sum-of-strings": _sum_of_strings,
    "object-literal-duplicate-key": _silently_accepted,
    "each-let-not-a-mapping": _silently_accepted,
}


def test_every_reported_case_has_a_check() -> None:
    assert {p.stem for p in REPORTED.glob("*.yaml")} == set(REPORTED_CASES)
    assert not set(REPORTED_CASES) & set(CASES)


@pytest.mark.parametrize("case", sorted(REPORTED_CASES))
def test_reported(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    report, lines = check_reported(case, monkeypatch)
    REPORTED_CASES[case](report, lines)


SPEC_HEAD = ('dockyard: 1\nname: diag.example\nversion: "1.0.0"\nsource:\n  schema: order\n'
             "target:\n  format: json\noutput:\n  deliveryOrder:\n    deliveryOrderCode: ")


def test_huge_integer_literal_is_a_diagnostic_not_a_crash() -> None:
    report = check_file("huge.yaml", SPEC_HEAD + "1" * 5000 + "\n")
    assert report.diagnostics


def test_long_sum_is_not_a_crash() -> None:
    report = check_file("long.yaml", SPEC_HEAD + " + ".join(["amounts.paid_total"] * 600) + "\n")
    assert report.diagnostics is not None


def test_when_beside_value_is_legal() -> None:
    """`$when` beside `$value` leaves a single value out on a condition (it used to be refused)."""
    report = check_file("when.yaml", SPEC_HEAD + 'order_no\n    remark?:\n      $value: remark\n'
                        '      $when: present(remark) and remark != ""\n')
    assert report.diagnostics == [], render_all(report.diagnostics, report.sources)


def test_a_misspelt_directive_beside_value_names_the_ones_allowed() -> None:
    report = check_file("when.yaml", SPEC_HEAD + "order_no\n    remark?:\n      $value: remark\n      $wen: true\n")
    [diag] = report.diagnostics
    assert (diag.code, diag.message, diag.hint) == ("spec-directive", "'$wen' cannot stand beside '$value'",
                                                     "did you mean '$when'?")
    assert (diag.span.line, diag.span.col) == (13, 7)


@pytest.mark.parametrize("word", ["null", "None", "nil", "undefined"])
def test_null_in_an_expression_says_the_language_has_none(word: str) -> None:
    report = check_file("null.yaml", SPEC_HEAD + f"order_no\n    remark?: remark ?? {word}\n")
    [diag] = report.diagnostics
    assert (diag.code, diag.message) == ("no-null", "the language has no null")
    assert diag.hint is not None and "omit" in diag.hint
    assert (diag.span.line, diag.span.col, diag.span.width) == (11, 24, len(word))


def test_a_source_field_named_null_is_still_a_field(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text('{"type": "object", "properties": {"null": {"type": "string"}}}')
    spec = SPEC_HEAD.replace("schema: order", "schema: s.json\n  key: \"null\"") + "(null)\n"
    report = check_file(tmp_path / "s.yaml", spec)
    assert report.ok, render_all(report.diagnostics, report.sources)
