"""`dockyard test`: cases pass and fail for the right reasons, diffs are readable, and rule coverage
counts fields, both branches of conditionals, table entries and optional fields present/absent."""

from __future__ import annotations

import json
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


ABSENT_SPEC = """dockyard: 1
name: t.absent
version: "1.0.0"
source: {schema: order}
target: {format: xml, root: request}
output:
  deliveryOrder:
    deliveryOrderCode: order_no
    remark?: if remark == "" then omit else remark
  orderLines:
    orderLine:
      $each: items
      $emit:
        itemCode: $item.sku
        gift?: {$value: "Y", $when: $item.is_gift}
"""


def absent_case(tmp_path: Path, order: str, absent: str) -> list[tuple[bool, str]]:
    (tmp_path / "absent.yaml").write_text(ABSENT_SPEC, encoding="utf-8")
    (tmp_path / "absent.test.yaml").write_text(f"""spec: absent.yaml
cases:
  - input_file: {ORDERS / order}
    expect:
      absent: {absent}
""", encoding="utf-8")
    run = run_tests([tmp_path / "absent.test.yaml"])
    assert not run.errors, run.errors
    return [(c.ok, c.message) for c in run.cases]


def test_absent_passes_when_the_keys_are_absent(tmp_path: Path) -> None:
    # jd-three-decimal-discount has an empty remark and no gift line.
    assert absent_case(tmp_path, "jd-three-decimal-discount.json",
                       "[deliveryOrder.remark, 'orderLines.orderLine[].gift', 'orderLines.orderLine[3]', "
                       "deliveryOrder.unknown]") == [(True, "")]


def test_absent_fails_and_shows_the_value_found(tmp_path: Path) -> None:
    # hostile-remark has a remark, and its second line is a gift.
    [(ok, message)] = absent_case(tmp_path, "hostile-remark.json",
                                  "[deliveryOrder.remark, 'orderLines.orderLine[].gift']")
    assert not ok
    assert 'expected deliveryOrder.remark to be absent, found "<b>加急</b>' in message
    assert 'expected orderLines.orderLine[1].gift to be absent, found "Y"' in message  # the gift line only
    assert "orderLine[0].gift" not in message


def test_absent_refuses_a_path_whose_parent_is_not_there(tmp_path: Path) -> None:
    """A typo before the last step must not pass as 'absent'."""
    [(ok, message)] = absent_case(tmp_path, "tmall-basic.json", "[deliveryOrdr.remark, 'orderLines.orderLine[9].gift']")
    assert not ok
    assert "the document has no deliveryOrdr (to check that it is absent, list deliveryOrdr itself)" in message
    assert "orderLines.orderLine has no element 9" in message


@pytest.mark.parametrize("absent", ["deliveryOrder.remark", "['a..b']", "[1]", "['orderLines.orderLine[]']"])
def test_absent_needs_a_list_of_paths(tmp_path: Path, absent: str) -> None:
    [(ok, message)] = absent_case(tmp_path, "tmall-basic.json", absent)
    assert not ok and message.startswith("bad test case: absent")


def test_a_long_rendered_xml_document_is_diffed_line_by_line(tmp_path: Path) -> None:
    from dockyard.compiler.api import compile_file
    from dockyard.runtime.serialize import serialize

    (tmp_path / "absent.yaml").write_text(ABSENT_SPEC, encoding="utf-8")
    mapping = compile_file(tmp_path / "absent.yaml")
    order = json.loads((ORDERS / "tmall-basic.json").read_text(encoding="utf-8"))
    text = serialize(mapping.transform(order), mapping.target).decode("utf-8")
    assert len(text.strip().splitlines()) == 2 and text.count("<itemCode>") == 4  # declaration, one long line
    wrong = text.replace("SKU-100204-WHT", "SKU-100204-BLK")
    case_text = (f"spec: absent.yaml\ncases:\n  - input_file: {ORDERS / 'tmall-basic.json'}\n"
                 f"    expect:\n      rendered: {json.dumps(wrong, ensure_ascii=False)}\n")
    (tmp_path / "absent.test.yaml").write_text(case_text, encoding="utf-8")
    [case] = run_tests([tmp_path / "absent.test.yaml"]).cases
    assert not case.ok
    diff = case.message.splitlines()
    assert diff[0] == "rendered document differs:"
    changed = [line.strip() for line in diff
               if line.strip()[:1] in "+-" and not line.strip().startswith(("+++", "---"))]
    assert changed == ["-      <itemCode>SKU-100204-BLK</itemCode>", "+      <itemCode>SKU-100204-WHT</itemCode>"]
    assert max(len(line) for line in diff) < 100  # no line holds the whole document


def test_a_rendered_difference_in_layout_only_says_where(tmp_path: Path) -> None:
    from dockyard.compiler.testing import _rendered_diff

    message = _rendered_diff('<a><b x="1">t</b></a>', "<a><b x='1'>t</b></a>", "xml")
    assert "differ only in layout, first at character 9" in message
    assert "'1'" in message
    assert _rendered_diff("a=1&b=2", "a=1&b=3", "form").splitlines()[-2:] == ["      -b=2", "      +b=3"]


def test_a_rendered_json_diff_keeps_numbers_as_written() -> None:
    from dockyard.compiler.testing import _rendered_diff

    lines = _rendered_diff('{"a":"1","b":[1.50,{"c":true}]}', '{"a":1,"b":[1.5,{"c":true}]}', "json").splitlines()
    changed = [line.strip().replace(" ", "") for line in lines
               if line.strip()[:1] in "+-" and line.strip()[:3] not in ("+++", "---")]
    assert changed == ['-"a":"1",', '+"a":1,', "-1.50,", "+1.5,"]
    assert '             "c": true' in lines  # context lines keep the indentation


def test_coverage_counts_both_sides_of_a_when_beside_value(tmp_path: Path) -> None:
    # tmall-basic has no gift line: the `$when` of `gift` is never true, and gift never present.
    [(ok, _)] = absent_case(tmp_path, "tmall-basic.json", "['orderLines.orderLine[].gift']")
    assert ok
    [cov] = run_tests([tmp_path / "absent.test.yaml"]).coverage
    line = ABSENT_SPEC.splitlines().index('        gift?: {$value: "Y", $when: $item.is_gift}') + 1
    assert any(f":{line}:" in m and "$when: true never taken" in m for m in cov.missing), cov.missing
    assert any("orderLine[].gift: never present" in m for m in cov.missing), cov.missing
    assert not any("$when: false never taken" in m for m in cov.missing)
