"""`dockyard test`: cases pass and fail for the right reasons, diffs are readable, and rule coverage
counts fields, both branches of conditionals, table entries and optional fields present/absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dockyard.cli import main
from dockyard.compiler.testing import run_tests

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "mappings" / "reference" / "deliveryorder.yaml"
ORDERS = ROOT / "examples" / "orders"


def write(tmp_path: Path, body: str, name: str = "t.test.yaml") -> Path:
    path = tmp_path / name
    path.write_text(f"spec: {SPEC}\n" + body, encoding="utf-8")
    return path


def test_reference_mapping_tests_pass_with_full_coverage() -> None:
    run = run_tests([ROOT / "mappings" / "reference"])
    assert run.cases and not run.failed and not run.errors
    [cov] = run.coverage
    assert cov.percent == 100.0, cov.missing


def test_a_wrong_expectation_fails_with_a_diff(tmp_path: Path) -> None:
    write(tmp_path, f"""cases:
  - name: wrong price
    input_file: {ORDERS / 'jd-three-decimal-discount.json'}
    expect:
      document_subset: {{orderLines: [{{actualPrice: "286.65"}}, {{actualPrice: "353.21"}}, {{actualPrice: "128.71"}}]}}
""")
    run = run_tests([tmp_path])
    [case] = run.cases
    assert not case.ok
    assert '-      "actualPrice": "286.65"' in case.message and '+      "actualPrice": "286.66"' in case.message


def test_numbers_compare_by_value(tmp_path: Path) -> None:
    write(tmp_path, f"""cases:
  - name: totalQty as a YAML number
    input_file: {ORDERS / 'tmall-basic.json'}
    expect: {{document_subset: {{deliveryOrder: {{totalQty: 4.0}}}}}}
""")
    assert not run_tests([tmp_path]).failed


def test_error_expectations(tmp_path: Path) -> None:
    write(tmp_path, f"""cases:
  - name: malformed order
    input: {{order_no: X1}}
    expect: {{error: "does not match the source schema"}}
  - name: no error comes
    input_file: {ORDERS / 'tmall-basic.json'}
    expect: {{error: "boom"}}
""")
    run = run_tests([tmp_path])
    assert [c.ok for c in run.cases] == [True, False]
    assert "but the case succeeded" in run.cases[1].message


def test_coverage_names_what_was_not_exercised(tmp_path: Path) -> None:
    write(tmp_path, f"""cases:
  - name: one order
    input_file: {ORDERS / 'tmall-basic.json'}
    expect: {{document_subset: {{deliveryOrder: {{orderType: JYCK}}}}}}
""")
    [cov] = run_tests([tmp_path]).coverage
    assert cov.percent < 100
    text = "\n".join(cov.missing)
    assert "??: default never taken" in text  # tmall-basic has a remark
    assert "entry 'JD-SELF-001' never used" in text
    assert "table CARRIER_CODE: default never used" in text


def test_test_secrets_must_be_marked(tmp_path: Path) -> None:
    write(tmp_path, f"""secrets: {{SOMETHING: real-looking-value}}
cases:
  - name: c
    input_file: {ORDERS / 'tmall-basic.json'}
    expect: {{document_subset: {{}}}}
""")
    [case] = run_tests([tmp_path]).cases
    assert not case.ok and "TEST-ONLY-" in case.message


@pytest.mark.parametrize(("minimum", "code"), [(None, 0), (50, 0), (99.9, 1)])
def test_cli_min_coverage(tmp_path: Path, minimum: float | None, code: int) -> None:
    write(tmp_path, f"""cases:
  - name: one order
    input_file: {ORDERS / 'tmall-basic.json'}
    expect: {{document_subset: {{deliveryOrder: {{orderType: JYCK}}}}}}
""")
    args = ["test", str(tmp_path)] + ([] if minimum is None else ["--min-coverage", str(minimum)])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.stdout
    assert "rule coverage" in result.stdout and "1 passed, 0 failed" in result.stdout


def test_cli_without_tests_is_a_usage_error(tmp_path: Path) -> None:
    assert CliRunner().invoke(main, ["test", str(tmp_path)]).exit_code == 2


def test_rendered_compares_the_exact_bytes(tmp_path: Path) -> None:
    ack = ROOT / "mappings" / "sf" / "route-push.ack.yaml"
    push = ROOT / "mappings" / "sf" / "testdata" / "inbound" / "route-collected.json"
    (tmp_path / "ack.test.yaml").write_text(f"""spec: {ack}
cases:
  - name: exact
    input_file: {push}
    expect: {{rendered: '{{"return_code":"0000","return_msg":"成功"}}'}}
  - name: a space too many
    input_file: {push}
    expect: {{rendered: '{{"return_code": "0000","return_msg":"成功"}}'}}
""", encoding="utf-8")
    run = run_tests([tmp_path])
    assert [c.ok for c in run.cases] == [True, False]
    assert "rendered document differs" in run.cases[1].message
