"""Tests of the code generator: the golden module of the reference mapping, determinism, what the
generated code may import and call, the `# file:line:col path` comments and the source map.

The golden file is regenerated with `DOCKYARD_UPDATE_GOLDEN=1 pytest tests/compiler/test_codegen.py`.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dockyard.compiler.api import compile_file, compile_source
from dockyard.compiler.bundle import build_bundle
from dockyard.compiler.emitter import comment_safe
from dockyard.runtime import api as runtime_api
from dockyard.runtime.errors import TransformError

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden" / "reference_deliveryorder.py.txt"
REFERENCE = "mappings/reference/deliveryorder.yaml"
XML_SPEC = "examples/specs/qimen-deliveryorder-xml.yaml"
FORM_SPEC = "examples/specs/sf-create-form.yaml"
ALL_SPECS = (REFERENCE, XML_SPEC, FORM_SPEC)

# Builtins generated code must never touch: code execution, imports, files, reflection.
FORBIDDEN_NAMES = {
    "eval", "exec", "__import__", "open", "getattr", "setattr", "delattr", "compile", "globals", "locals",
    "vars", "breakpoint", "input", "__builtins__", "__loader__", "__spec__",
}
# The only dunder attribute generated code reads (`x.__class__ is str`, the fast decimal path).
ALLOWED_DUNDER_ATTRIBUTES = {"__class__"}


@pytest.fixture
def in_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from the repository root, so spec paths (and so generated text) are relative."""
    monkeypatch.chdir(ROOT)
    return ROOT


def load_order(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "examples" / "orders" / f"{name}.json").read_text("utf-8"),
                                      parse_float=Decimal)
    return data


# --------------------------------------------------------------------------------------------------
# golden module and determinism


def test_reference_module_matches_golden(in_root: Path) -> None:
    source = compile_source(REFERENCE).source
    if os.environ.get("DOCKYARD_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(source, encoding="utf-8", newline="\n")
    assert GOLDEN.is_file(), "no golden file: run with DOCKYARD_UPDATE_GOLDEN=1 once"
    expected = GOLDEN.read_text(encoding="utf-8")
    assert source == expected, "the generated module changed; review it and regenerate the golden file"


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_compiling_twice_gives_identical_text(in_root: Path, spec: str) -> None:
    assert compile_source(spec).source == compile_source(spec).source


@pytest.mark.parametrize("seed", ["0", "12345"])
def test_generated_text_does_not_depend_on_hash_seed(in_root: Path, seed: str) -> None:
    script = ("import sys\nfrom dockyard.compiler.api import compile_source\n"
              "sys.stdout.write(compile_source(sys.argv[1]).source)\n")
    env = {**os.environ, "PYTHONHASHSEED": seed}
    for spec in ALL_SPECS:
        result = subprocess.run([sys.executable, "-W", "error", "-c", script, spec], cwd=ROOT, env=env,
                                capture_output=True, check=False)
        assert result.returncode == 0, result.stderr.decode()
        assert result.stdout.decode("utf-8") == compile_source(spec).source, spec


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_bundles_are_byte_identical(in_root: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    manifest_one = build_bundle(list(ALL_SPECS), first)
    manifest_two = build_bundle(list(reversed(ALL_SPECS)), second)
    assert manifest_one == manifest_two
    one, two = _tree_bytes(first), _tree_bytes(second)
    assert sorted(one) == sorted(two)
    assert "manifest.json" in one
    assert not [name for name in one if name.endswith(".tmp")], "temporary files left behind"
    for name in one:
        assert one[name] == two[name], f"{name} differs between two builds"


# --------------------------------------------------------------------------------------------------
# what generated code may contain


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_generated_module_compiles(in_root: Path, spec: str) -> None:
    source = compile_source(spec).source
    code = compile(source, f"<test:{spec}>", "exec", dont_inherit=True)
    assert code.co_filename == f"<test:{spec}>"


def imports_of(tree: ast.AST) -> list[tuple[str | None, str, str | None, int]]:
    """(module, name, alias, level) of every import anywhere in the tree; `import x` has module None."""
    found: list[tuple[str | None, str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((None, alias.name, alias.asname, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.extend((node.module, alias.name, alias.asname, node.level) for alias in node.names)
    return found


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_generated_module_imports_only_the_runtime_api(in_root: Path, spec: str) -> None:
    tree = ast.parse(compile_source(spec).source)
    imports = imports_of(tree)
    assert imports, "a generated module imports its helpers from dockyard.runtime.api"
    for module, name, alias, level in imports:
        assert (module, level) == ("dockyard.runtime.api", 0), f"imports {name} from {module!r}"
        assert name in runtime_api.__all__, f"imports {name!r}, which is not in dockyard.runtime.api.__all__"
        assert alias is None, f"imports {name} as {alias}"
    # Only module-level imports: nothing is imported while transforming.
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert len(top) == len([n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)])


def unsafe_nodes(tree: ast.AST) -> list[str]:
    problems = []
    bad_attributes = FORBIDDEN_NAMES | {"system", "popen"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            problems.append(f"line {node.lineno}: uses {node.id}")
        elif isinstance(node, ast.Attribute) and (
                node.attr in bad_attributes
                or (node.attr.startswith("__") and node.attr not in ALLOWED_DUNDER_ATTRIBUTES)):
            problems.append(f"line {node.lineno}: reads .{node.attr}")
        elif isinstance(node, ast.Global | ast.Nonlocal | ast.Lambda | ast.ClassDef | ast.AsyncFunctionDef):
            problems.append(f"line {node.lineno}: has a {type(node).__name__}")
    return problems


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_generated_module_calls_nothing_dangerous(in_root: Path, spec: str) -> None:
    tree = ast.parse(compile_source(spec).source)
    assert unsafe_nodes(tree) == []
    # Every name the module reads is a runtime API name, a builtin it may use, a generated name
    # (`_…`) or one of its own module-level definitions.
    defined = {t.id for n in tree.body if isinstance(n, ast.Assign)
               for t in n.targets if isinstance(t, ast.Name)}
    defined |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    # The parameters of transform_entry's transform() keep the public names of CompiledMapping.transform.
    defined |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                for a in (*n.args.args, *n.args.kwonlyargs)}
    allowed_builtins = {"str", "len", "sum", "abs", "min", "max", "enumerate", "None", "True", "False",
                        "dict", "int", "bool", "Exception"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            name = node.id
            ok = (name in runtime_api.__all__ or name in defined or name.startswith("_")
                  or (name in allowed_builtins and hasattr(builtins, name)))
            assert ok, f"line {node.lineno}: reads {name!r}"


def test_unsafe_node_check_catches_injected_code() -> None:
    # The checker of the tests above must itself find what it looks for.
    tree = ast.parse("x = __import__('os').system('true')\ny = open('f')\nz = q.__globals__\neval('1')\n")
    problems = unsafe_nodes(tree)
    assert any("__import__" in p for p in problems)
    assert any("open" in p for p in problems)
    assert any("__globals__" in p for p in problems)
    assert any("eval" in p for p in problems)


# --------------------------------------------------------------------------------------------------
# field comments and the source map


def _module_for(spec: str) -> tuple[str, Any]:
    mapping = compile_file(spec)
    return mapping.source, mapping.module


@pytest.mark.parametrize("spec", ALL_SPECS)
def test_every_field_has_a_location_comment(in_root: Path, spec: str) -> None:
    source, module = _module_for(spec)
    lines = source.splitlines()
    fields = module.__dockyard_fields__
    sourcemap = module.__dockyard_sourcemap__
    assert fields, "a mapping has output fields"
    for index, (file, line, col, path) in enumerate(fields):
        comment = f"# {comment_safe(file)}:{line}:{col} {comment_safe(path)}"
        numbers = [n for n, text in enumerate(lines, start=1) if text.strip() == comment]
        assert numbers, f"no comment {comment!r} in the generated module"
        # The comment sits on a line that the source map gives to this very field.
        assert any(sourcemap.get(n) == index for n in numbers), f"{comment!r} is not mapped to field {index}"
    for lineno, index in sourcemap.items():
        assert 1 <= lineno <= len(lines), f"source map line {lineno} is outside the module"
        assert 0 <= index < len(fields)
        assert lines[lineno - 1].startswith("    "), f"mapped line {lineno} is not inside transform()"


def _generic_leaves(doc: Any, path: str = "") -> set[str]:
    if isinstance(doc, dict):
        out: set[str] = set()
        for k, v in doc.items():
            out |= _generic_leaves(v, f"{path}.{k}" if path else k)
        return out
    if isinstance(doc, list):
        out = set()
        for v in doc:
            out |= _generic_leaves(v, f"{path}[]")
        return out
    return {path}


def test_every_output_value_has_a_field_entry(in_root: Path) -> None:
    _source, module = _module_for(REFERENCE)
    paths = {f[3] for f in module.__dockyard_fields__}
    mapping = compile_file(REFERENCE)
    for name in ("tmall-basic", "hostile-remark", "jd-three-decimal-discount"):
        for leaf in _generic_leaves(mapping.transform(load_order(name))):
            assert leaf in paths, f"output value {leaf} has no field entry"


def test_field_locations_point_at_the_expressions_in_the_spec(in_root: Path) -> None:
    _source, module = _module_for(REFERENCE)
    spec_lines = (ROOT / REFERENCE).read_text("utf-8").splitlines()
    checked = 0
    for file, line, col, path in module.__dockyard_fields__:
        assert file == REFERENCE
        if "$" in path:
            continue
        key = path.rsplit(".", 1)[-1].removesuffix("[]")
        text = spec_lines[line - 1]
        assert text.lstrip().startswith(f"{key}:"), f"{path} points at line {line}: {text!r}"
        value = text[col - 1 :]
        assert value and text[: col - 1].rstrip().endswith(":"), f"{path}: column {col} of {text!r}"
        checked += 1
    assert checked >= 20


# --------------------------------------------------------------------------------------------------
# run-time failures are reported against the spec


SPEC_HEAD = """\
dockyard: 1
name: test.locations
version: "1.0.0"
source: {schema: order}
target: {format: json}
context:
  divisor: {type: decimal}
  optional_divisor: {type: decimal, required: false}
output:
  code: order_no
"""


def _write_field_spec(directory: Path, expr: str, in_loop: bool) -> tuple[str, str, str]:
    """A spec with one interesting field; returns (file name, expected location, field path)."""
    if in_loop:
        body = ("  lines:\n    $each: items\n    $as: i\n    $emit:\n      sku: $i.sku\n"
                f"      target: {expr}\n")
        path = "lines[].target"
    else:
        body = f"  header:\n    code: order_no\n    target: {expr}\n"
        path = "header.target"
    text = SPEC_HEAD + body
    lines = text.splitlines()
    lineno = next(i for i, line in enumerate(lines, start=1)
                  if line.startswith(("    target: ", "      target: ")))
    col = lines[lineno - 1].index(expr) + 1
    (directory / "spec.yaml").write_text(text, encoding="utf-8")
    return "spec.yaml", f"spec.yaml:{lineno}:{col}", path


def _break(order: dict[str, Any], change: str) -> dict[str, Any]:
    order = json.loads(json.dumps(order))
    match change:
        case "nick-null":
            order["buyer"]["nick"] = None
        case "no-remark":
            order.pop("remark", None)
        case "item-without-barcode":
            for item in order["items"]:
                item.pop("barcode", None)
        case "ok":
            pass
    return order


ONE = {"divisor": "1"}
FAILURES = [
    # (expression, in a $each?, change to the order, context, message)
    pytest.param("buyer.nick", False, "nick-null", ONE, "required value is missing", id="required-null"),
    pytest.param("remark", False, "no-remark", ONE, "required value is missing", id="required-absent"),
    pytest.param("$i.barcode", True, "item-without-barcode", ONE, "required value is missing",
                 id="required-absent-in-each"),
    pytest.param("decimal(remark)", False, "ok", ONE, "not a decimal", id="bad-decimal-optional-source"),
    pytest.param("decimal(receiver.address)", False, "ok", ONE, "not a decimal", id="bad-decimal-inline"),
    pytest.param("decimal(amounts.paid_total) / $ctx.optional_divisor", False, "ok",
                 {**ONE, "optional_divisor": "0"}, "division by zero", id="zero-optional-divisor"),
    pytest.param("decimal(amounts.paid_total) / $ctx.divisor", False, "ok", {"divisor": "0"},
                 "division by zero", id="division-by-zero-from-context"),
    pytest.param("decimal($i.name)", True, "ok", ONE, "not a decimal", id="bad-decimal-in-each"),
    pytest.param("decimal($i.unit_price) / $ctx.divisor", True, "ok", {"divisor": "0"}, "division by zero",
                 id="division-by-zero-in-each"),
]


@pytest.mark.parametrize(("expr", "in_loop", "change", "ctx", "message"), FAILURES)
def test_runtime_failures_name_the_spec_location_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           expr: str, in_loop: bool, change: str,
                                                           ctx: dict[str, Any], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    spec, location, field = _write_field_spec(tmp_path, expr, in_loop)
    mapping = compile_file(spec)
    order = _break(load_order("tmall-basic"), change)
    with pytest.raises(TransformError) as info:
        mapping.transform(order, ctx)
    err = info.value
    assert message in err.message
    assert err.location == location, f"{err.location!r} != {location!r} ({err})"
    assert err.field == field
    assert err.key == "TM20231111000123"
    assert err.mapping == "test.locations"
    text = str(err)
    assert text.startswith(f"{location}: "), text
    assert "<dockyard" not in text and ".py" not in text and "line " not in text.split(";")[0]


def test_a_default_inside_a_list_function_compiles() -> None:
    # `??` binds a temporary, which Python forbids in a comprehension's iterable.
    from dockyard.compiler.api import compile_expression

    expr = compile_expression("map(items ?? others, $x => $x.sku)")
    assert expr.evaluate({"others": [{"sku": "A"}, {"sku": "B"}]}) == ["A", "B"]
    assert expr.evaluate({"items": [{"sku": "C"}]}) == ["C"]
    assert compile_expression("sum(items ?? [], $x => $x.qty)").evaluate({}) == 0


@pytest.mark.parametrize(("value", "text"), [("abc", "abc"), (True, "true"), (12, "12"), ("1.50", "1.50")])
def test_string_of_an_untyped_value_keeps_its_kind(value: object, text: str) -> None:
    from dockyard.compiler.api import compile_expression

    assert compile_expression("string(parse_json(raw).v)").evaluate({"raw": json.dumps({"v": value})}) == text


def test_fail_refuses_the_input_with_its_reason(tmp_path: Path) -> None:
    spec = tmp_path / "refuse.yaml"
    spec.write_text('dockyard: 1\nname: t.refuse\nversion: "1"\nsource: {schema: order}\ntarget: {format: json}\n'
                    "let:\n  lines: filter(items, $i => $i.qty > 0)\noutput:\n"
                    '  n: if count($lines) > 0 then count($lines) else fail("every line has qty 0")\n',
                    encoding="utf-8")
    mapping = compile_file(spec)
    orders = ROOT / "examples" / "orders"
    assert mapping.transform(json.loads((orders / "tmall-basic.json").read_text(encoding="utf-8")))["n"] == 3
    with pytest.raises(TransformError) as info:
        mapping.transform(json.loads((orders / "all-lines-zero.json").read_text(encoding="utf-8")))
    err = info.value
    assert "every line has qty 0" in err.message and err.field == "n" and err.location is not None
    assert err.location.endswith(":9:6") and err.key == "TM20231102001907"


_CONDITIONAL_READS = """\
dockyard: 1
name: t.conditional-reads
version: "1.0.0"
source: {schema: order, key: order_no}
target: {format: json}
output:
  code: order_no
  extra?:
    $when: receiver.city == "x"
    city: receiver.city
  lines:
    $each: items
    $as: line
    $where: $line.qty > 0
    $emit:
      sku: $line.sku
"""


def _reading_lines(mapping: Any) -> list[tuple[int, str]]:
    """The module's lines inside its functions that read the input (`_src`), but the def lines."""
    out = []
    for number, text in enumerate(mapping.source.splitlines(), start=1):
        code = text.strip()
        if "_src" in code and not code.startswith(("def ", "#", "_src = ")):
            out.append((number, code))
    return out


_LIBRARY_SPECS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "mappings").rglob("*.yaml")
                        if not p.name.endswith(".test.yaml") and "schemas" not in p.parts
                        and "warehouses" not in p.parts and "accounts" not in p.parts)


@pytest.mark.parametrize("spec", [*_LIBRARY_SPECS, "conditional-reads"])
def test_every_line_that_reads_the_input_points_at_the_spec(spec: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A read that fails (an input that breaks its schema) is reported at a spec line: every
    generated line that reads the input is in the source map, the conditions of `$when` blocks
    and the lines of `$each` loops included."""
    monkeypatch.chdir(ROOT)
    if spec == "conditional-reads":
        path = tmp_path / "conditional-reads.yaml"
        path.write_text(_CONDITIONAL_READS, encoding="utf-8")
        spec = str(path)
    mapping = compile_file(spec)
    unmapped = [(n, code) for n, code in _reading_lines(mapping) if n not in mapping._sourcemap]
    assert unmapped == []
