"""User text never becomes code: a hostile spec compiles, runs, and gives back every string as data.

Hostile text goes into output keys, constants, table keys and values (inline and from a CSV file),
descriptions, the spec's file name, object-literal keys, regular expressions and date-time patterns.
Property tests check the one gate, `literal()`, and quoted constants end to end.
"""

from __future__ import annotations

import ast
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockyard.compiler.api import check_file, compile_file, compile_source
from dockyard.compiler.literals import literal
from dockyard.runtime import api as runtime_api
from dockyard.runtime.serialize import to_json_bytes

ROOT = Path(__file__).resolve().parents[2]

# No example database: the tests must not leave a .hypothesis folder in the repository.
PROPERTY = settings(database=None, max_examples=300, deadline=None)
SPEC_PROPERTY = settings(database=None, max_examples=50, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow])

HOSTILE = [
    '"}; import os #',
    'a"b',
    "{x}",
    "{{x}}",
    "'''",
    '"""',
    "\\",
    "back\\slash\\n\\\\ and \\x41 \\u0041",
    "a\nb",
    "cr\rlf\r\n",
    "ls\u2028ps\u2029",
    "ctl\x01\x07\x08\x1b\x7f",
    "\t tab \x0b\x0c",
    "nel\x85 bom\ufeff",
    "emoji 😀🎁🧧 中文 汉字 ünïcödé",
    "#{comment} # not a comment",
    "%s %(x)s {0} $x ${x}",
    "<![CDATA[x]]> </script>",
    "')\nimport os\nos.system('true')\n#",
    "  padded  ",
]

FORBIDDEN_NAMES = {"eval", "exec", "__import__", "open", "getattr", "setattr", "compile", "globals", "locals"}


def dq(text: str) -> str:
    """A YAML double-quoted scalar holding exactly `text` (escapes for everything not printable)."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif ch.isprintable() and ch not in "\u2028\u2029\ufeff":
            out.append(ch)
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def el(text: str) -> str:
    """An expression string literal holding exactly `text` (escapes: \\" \\\\ \\n \\t \\r \\uXXXX)."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    out = []
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif ch.isprintable() and ch not in "\u2028\u2029\ufeff\x85":
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:  # pragma: no cover - the hostile texts use astral characters only printably
            raise ValueError(ch)
    return '"' + "".join(out) + '"'


def payload(directory: Path) -> list[str]:
    """Texts that would create PWNED files if any of them were ever executed."""
    target = directory / "PWNED"
    return [
        f"__import__('os').system('touch {target}')",
        f"'); __import__('os').system('touch {target}'); ('",
        f'"""); __import__("os").system("touch {target}"); ("""',
        f"{{__import__('os').system('touch {target}')}}",
    ]


Q3 = "'" * 3  # three single quotes
QQ3 = '"' * 3  # three double quotes
# The date pattern: text in single quotes is printed as is ('' is one quote), letters are fields.
DATE_TEXT = "\"}; import os # ''' {x} %s %% \\ "
DATE_PATTERN = "yyyy'" + DATE_TEXT.replace("'", "''") + "'MM"


def csv_rows(texts: list[str]) -> dict[str, str]:
    """The CSV table's rows. Carriage returns are left to their own test (see below), so that one
    problem does not hide the others."""
    plain = [t for t in texts if "\r" not in t]
    return {t: plain[(i + 1) % len(plain)] for i, t in enumerate(plain)}


def write_csv(path: Path, rows: dict[str, str]) -> None:
    lines = ['"key","value"']
    for k, v in rows.items():
        lines.append('"' + k.replace('"', '""') + '","' + v.replace('"', '""') + '"')
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))


def hostile_spec(directory: Path, texts: list[str]) -> str:
    rows = {t: texts[(i + 1) % len(texts)] for i, t in enumerate(texts)}
    write_csv(directory / "hostile table.csv", csv_rows(texts))
    joined = " | ".join(texts)
    lines = [
        "dockyard: 1",
        "name: hostile.spec",
        'version: "1.0.0"',
        f"description: {dq(joined)}",
        "source: {schema: order}",
        "target: {format: json}",
        "context:",
        "  note:",
        "    type: string",
        "    required: false",
        f"    description: {dq(joined)}",
        "tables:",
        "  HOSTILE:",
        f"    description: {dq(joined)}",
        f"    default: {dq(texts[0])}",
        "    rows:",
        *[f"      {dq(k)}: {dq(v)}" for k, v in rows.items()],
        "  FROM_CSV:",
        f"    file: {dq('hostile table.csv')}",
        f"    description: {dq(joined)}",
        "output:",
        *[f"  {dq(t)}: {dq(t)}" for t in texts],
        "  lookups:",
    ]
    for i, t in enumerate(texts):
        lines += [f"    {dq(f'k{i}')}: |", f"      lookup(HOSTILE, {el(t)})"]
    lines.append("  csv:")
    for i, t in enumerate(texts):
        lines += [f"    {dq(f'k{i}')}: |", f"      lookup(FROM_CSV, {el(t)}, {el('none')})"]
    lines.append("  default: lookup(HOSTILE, order_no)")
    lines.append("  concat:")
    for i, t in enumerate(texts):
        lines += [f"    {dq(f'e{i}')}: |", f"      concat({el(t)}, order_no, {el(t)})"]
    lines += [
        "  object: |",
        "    {" + ", ".join(f"{el(t)}: {el(t)}" for t in texts) + "}",
        "  json: |",
        "    to_json({" + ", ".join(f"{el(t)}: {el(t)}" for t in texts) + "})",
        "  list: |",
        "    [" + ", ".join(el(t) for t in texts) + "]",
        "  date: |",
        f"    format_datetime(parse_datetime(created_at), {el(DATE_PATTERN)}, \"Asia/Shanghai\")",
        "  regex: |",
        f"    regex_replace({el(Q3 + 'x' + QQ3 + '{x}')}, {el(Q3 + '|' + QQ3)}, {el('#')})",
        "  matched: |",
        f"    matches({el('a' + Q3 + 'b')}, {el(Q3)})",
        "  extended: |",
        f"    extend_props[{el(texts[0])}] ?? \"absent\"",
    ]
    return "\n".join(lines) + "\n"


def expected_output(texts: list[str], order: dict[str, Any]) -> dict[str, Any]:
    rows = {t: texts[(i + 1) % len(texts)] for i, t in enumerate(texts)}
    no = order["order_no"]
    doc: dict[str, Any] = {t: t for t in texts}
    doc["lookups"] = {f"k{i}": rows[t] for i, t in enumerate(texts)}
    from_csv = csv_rows(texts)
    doc["csv"] = {f"k{i}": from_csv.get(t, "none") for i, t in enumerate(texts)}
    doc["default"] = texts[0]
    doc["concat"] = {f"e{i}": f"{t}{no}{t}" for i, t in enumerate(texts)}
    doc["object"] = {t: t for t in texts}
    doc["json"] = to_json_bytes({t: t for t in texts}).decode("utf-8")
    doc["list"] = list(texts)
    doc["date"] = "2023" + DATE_TEXT + "11"
    doc["regex"] = "#x#{x}"
    doc["matched"] = True
    doc["extended"] = order["extend_props"][texts[0]]
    return doc


def _pwned(directory: Path) -> list[Path]:
    return [p for p in (directory / "PWNED", Path.cwd() / "PWNED", ROOT / "PWNED") if p.exists()]


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, list[str]]:
    texts = HOSTILE + payload(tmp_path)
    name = "hostile '''\"}; import os #{x}.yaml"
    spec = tmp_path / name
    spec.write_text(hostile_spec(tmp_path, texts), encoding="utf-8")
    return spec, texts


def _order(texts: list[str]) -> dict[str, Any]:
    order: dict[str, Any] = json.loads((ROOT / "examples" / "orders" / "tmall-basic.json").read_text("utf-8"))
    order["extend_props"] = {texts[0]: texts[-1]}
    return order


def test_hostile_spec_gives_back_every_string_as_data(hostile: tuple[Path, list[str]]) -> None:
    spec, texts = hostile
    assert not _pwned(spec.parent)
    mapping = compile_file(spec)
    order = _order(texts)
    doc = mapping.transform(order)
    expected = expected_output(texts, order)
    assert list(doc) == list(expected)
    for key, value in expected.items():
        assert doc[key] == value, key
    # The serialized document round-trips too.
    assert json.loads(mapping.render(order)) == expected
    assert not _pwned(spec.parent), "a hostile text was executed"


def test_hostile_metadata_is_kept_as_data(hostile: tuple[Path, list[str]]) -> None:
    spec, texts = hostile
    mapping = compile_file(spec)
    joined = " | ".join(texts)
    assert mapping.meta["description"] == joined
    assert mapping.meta["spec"] == str(spec)
    assert mapping.spec_path == str(spec)
    fields = {f[3] for f in mapping.module.__dockyard_fields__}
    for t in texts:
        assert t in fields
    tables = [v for k, v in vars(mapping.module).items() if k.startswith("_T")]
    rows = {t: texts[(i + 1) % len(texts)] for i, t in enumerate(texts)}
    assert tables == [rows, csv_rows(texts)]
    assert not _pwned(spec.parent)


MODULE_NAMES = {"TARGET", "__dockyard_mapping__", "__dockyard_fields__", "__dockyard_sourcemap__",
                "__dockyard_lineage__", "__dockyard_loops__"}


def test_hostile_module_has_no_injected_statements(hostile: tuple[Path, list[str]]) -> None:
    spec, _texts = hostile
    source = compile_source(spec).source
    tree = ast.parse(source)
    # The module's shape is fixed: docstring, one import from the runtime API, assignments, and the
    # compiler's own functions: transform() (with transform_traced() for explain when the spec has
    # $each lists, and transform_entry(), the factory of transform() as one call) and, for a JSON
    # target, json_plain().
    for node in tree.body:
        if isinstance(node, ast.Expr):
            assert isinstance(node.value, ast.Constant) and node is tree.body[0]
        elif isinstance(node, ast.ImportFrom):
            assert node.module == "dockyard.runtime.api" and node.level == 0
            assert {a.name for a in node.names} <= set(runtime_api.__all__)
        elif isinstance(node, ast.Assign):
            assert len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            name = node.targets[0].id
            assert name in MODULE_NAMES or name.startswith(("_C", "_T")), name
        else:
            assert isinstance(node, ast.FunctionDef), ast.dump(node)[:200]
            assert node.name in ("transform", "transform_traced", "transform_entry", "json_plain"), node.name
    assert sum(isinstance(n, ast.ImportFrom | ast.Import) for n in ast.walk(tree)) == 1
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            assert node.id not in FORBIDDEN_NAMES, f"line {node.lineno}: {node.id}"
        if isinstance(node, ast.Attribute):
            assert node.attr in {"__class__"} or not node.attr.startswith("__"), node.attr
            assert node.attr not in {"system", "popen"}, node.attr
    # Every comment line of the module is a single line: hostile text never ends a comment early.
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            assert all(ch.isprintable() for ch in stripped), f"line {number}: {line!r}"
    # Python's own idea of line breaks agrees with ours (no \r, \f or \x0b starting a new line).
    assert source.endswith("\n") and source.splitlines() == source[:-1].split("\n")


def test_spec_file_name_with_a_newline(tmp_path: Path) -> None:
    directory = tmp_path / "dir\nimport os #"
    directory.mkdir()
    spec = directory / "x\n'''.yaml"
    spec.write_text('dockyard: 1\nname: odd.name\nversion: "1"\nsource: {schema: order}\n'
                    'target: {format: json}\noutput:\n  code: order_no\n', encoding="utf-8")
    mapping = compile_file(spec)
    assert mapping.transform(_order(HOSTILE)) == {"code": "TM20231111000123"}
    assert mapping.spec_path == str(spec)
    assert mapping.module.__dockyard_fields__[0][0] == str(spec)


def test_csv_table_keeps_carriage_returns_in_quoted_fields(tmp_path: Path) -> None:
    # RFC 4180: a quoted field may hold CR and LF; they are data, and must reach the output as such.
    rows = {"cr\rkey": "v1", "crlf\r\nkey": "v2", "k3": "value\rwith CR", "k4": "value\r\nwith CRLF"}
    write_csv(tmp_path / "t.csv", rows)
    spec = tmp_path / "csv.yaml"
    spec.write_text(
        'dockyard: 1\nname: csv.cr\nversion: "1"\nsource: {schema: order}\ntarget: {format: json}\n'
        "tables:\n  T: {file: t.csv}\noutput:\n"
        + "".join(f"  {dq(k)}: |\n    lookup(T, {el(k)}, \"none\")\n" for k in rows),
        encoding="utf-8")
    doc = compile_file(spec).transform(_order(HOSTILE))
    assert doc == rows


@pytest.mark.parametrize(("name", "version"), [("abc\\n", "1.0.0"), ("abc", "1.0.0\\n")],
                         ids=["name", "version"])
def test_name_or_version_ending_in_a_newline_is_refused(tmp_path: Path, name: str, version: str) -> None:
    # Both go into the module's header comment and docstring; their schema patterns end in `$`,
    # which Python's `re` (used by jsonschema) also matches just before a final newline.
    spec = tmp_path / "nl.yaml"
    spec.write_text(f'dockyard: 1\nname: "{name}"\nversion: "{version}"\nsource: {{schema: order}}\n'
                    "target: {format: json}\noutput:\n  code: order_no\n", encoding="utf-8")
    report = check_file(spec)
    assert not report.ok, "a name or version ending in a newline was accepted"


# --------------------------------------------------------------------------------------------------
# literal(): the only gate for user values


def _decimal_of(node: ast.expr) -> Decimal:
    """The Decimal a `Decimal('…')` call stands for, checked by shape (never evaluated)."""
    assert isinstance(node, ast.Call), ast.dump(node)
    assert isinstance(node.func, ast.Name) and node.func.id == "Decimal"
    assert len(node.args) == 1 and not node.keywords
    arg = node.args[0]
    assert isinstance(arg, ast.Constant) and type(arg.value) is str
    return Decimal(arg.value)


def rebuild(node: ast.expr) -> Any:
    """Data from the AST of a literal: constants, containers and Decimal('…') only."""
    if isinstance(node, ast.Constant):
        return node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)):
        return -node.operand.value
    if isinstance(node, ast.List):
        return [rebuild(e) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(rebuild(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        assert all(k is not None for k in node.keys)
        return {rebuild(k): rebuild(v) for k, v in zip(node.keys, node.values, strict=True) if k is not None}
    return _decimal_of(node)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (True is not 1, a tuple is not a list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(k1, k2) and same(a[k1], b[k2])
                                        for k1, k2 in zip(a, b, strict=True))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return bool(a == b)


scalars = st.one_of(
    st.text(),
    st.integers(),
    st.integers(min_value=-(10**60), max_value=10**60),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
)
hashable = st.recursive(st.one_of(st.text(), st.integers(), st.booleans(), st.none()),
                        lambda inner: st.tuples(inner, inner), max_leaves=4)
plain = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple),
                            st.dictionaries(hashable, inner, max_size=4)),
    max_leaves=12,
)
finite_decimals = st.decimals(allow_nan=False, allow_infinity=False)
with_decimals = st.recursive(
    st.one_of(scalars, finite_decimals),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple),
                            st.dictionaries(st.text(), inner, max_size=4)),
    max_leaves=12,
)


@PROPERTY
@given(plain)
def test_literal_round_trips_plain_data(value: Any) -> None:
    code = literal(value)
    back = ast.literal_eval(code)
    assert back == value
    assert same(back, value), f"{value!r} came back as {back!r}"


@PROPERTY
@given(finite_decimals)
def test_literal_writes_decimals_as_a_decimal_call_on_their_text(value: Decimal) -> None:
    code = literal(value)
    tree = ast.parse(code, mode="eval")
    call = tree.body
    assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Decimal"
    assert len(call.args) == 1 and not call.keywords
    arg = call.args[0]
    assert isinstance(arg, ast.Constant) and arg.value == str(value)
    assert Decimal(arg.value).as_tuple() == value.as_tuple()  # same digits and exponent, -0 stays -0
    assert code == f"Decimal({str(value)!r})"


@PROPERTY
@given(with_decimals)
def test_literal_round_trips_data_with_decimals(value: Any) -> None:
    back = rebuild(ast.parse(literal(value), mode="eval").body)
    assert same(back, value), f"{value!r} came back as {back!r}"


@PROPERTY
@given(st.text())
def test_literal_of_text_is_one_string_token(value: str) -> None:
    tree = ast.parse(literal(value), mode="eval")
    assert isinstance(tree.body, ast.Constant) and tree.body.value == value
    # As a statement it is still one expression: nothing after it can run.
    module = ast.parse(f"x = {literal(value)}")
    assert len(module.body) == 1


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("sNaN"),
                                   float("nan"), float("inf")])
def test_literal_refuses_non_finite_numbers(value: Any) -> None:
    with pytest.raises(ValueError, match="cannot write"):
        literal(value)


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes", bytearray(b"x"), frozenset(), print,
                                   Path("x")],
                         ids=["object", "set", "bytes", "bytearray", "frozenset", "function", "path"])
def test_literal_refuses_anything_else(value: Any) -> None:
    with pytest.raises(TypeError, match="no literal form"):
        literal(value)


class _SneakyStr(str):
    __slots__ = ()

    def __repr__(self) -> str:
        return "__import__('os').getcwd()"


class _SneakyInt(int):
    def __repr__(self) -> str:
        return "__import__('os').getpid()"


@pytest.mark.parametrize("value", [_SneakyStr("x"), _SneakyInt(7), [_SneakyStr("x")], {"k": _SneakyInt(7)}],
                         ids=["str-subclass", "int-subclass", "in-a-list", "in-a-dict"])
def test_literal_never_trusts_a_subclass_repr(value: Any) -> None:
    # A subclass of str or int may override __repr__; the gate must write the plain value (or refuse).
    try:
        code = literal(value)
    except TypeError:
        return
    assert "__import__" not in code, code
    back = ast.literal_eval(code)
    assert back == value


# --------------------------------------------------------------------------------------------------
# quoted constants, end to end


CONSTANT_SPEC = ('dockyard: 1\nname: prop.constant\nversion: "1"\nsource: {{schema: order}}\n'
                 'target: {{format: json}}\noutput:\n  value: {value}\n  {key}: "k"\n'
                 '  list:\n    - {value}\n')


def _valid_key(text: str) -> bool:
    special = text.startswith("$") or text.endswith("?") or text in {"value", "list"}
    return bool(text) and not special


@SPEC_PROPERTY
@given(value=st.text(), key=st.text().filter(_valid_key))
def test_quoted_constants_come_out_unchanged(tmp_path_factory: pytest.TempPathFactory, value: str,
                                             key: str) -> None:
    directory = tmp_path_factory.mktemp("prop")
    spec = directory / "constant.yaml"
    spec.write_text(CONSTANT_SPEC.format(value=dq(value), key=dq(key)), encoding="utf-8")
    mapping = compile_file(spec)
    doc = mapping.transform(_order(HOSTILE))
    assert doc == {"value": value, key: "k", "list": [value]}
    assert list(doc) == ["value", key, "list"]
