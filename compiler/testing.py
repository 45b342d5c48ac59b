"""Mapping tests (`dockyard test`): run the `*.test.yaml` files beside specs, diff what differs, and
report rule coverage.

A test file names a spec and lists cases: an input (inline, a file, or raw text read by the spec's
source format), config values and wire settings, a fixed clock, test secrets, and what to expect:
the document (exact or a subset), keys that must be absent, the rendered text, the full request, or
an error. Each spec runs in its instrumented variant, so that after the run every spec shows which
output fields were produced, which branches of each conditional were taken, which table entries
were used, and which optional fields were seen both present and absent.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from dockyard.compiler.api import compile_file
from dockyard.dsl.diagnostics import DiagnosticsError, render_all
from dockyard.dsl.yaml_nodes import safe_load
from dockyard.runtime.errors import DockyardError
from dockyard.runtime.mapping import CompiledMapping
from dockyard.runtime.secrets import TEST_SECRET_MARK, MappingSecrets, Secrets
from dockyard.runtime.wire import WireError, WireSettings

__all__ = ["CaseResult", "CoverageReport", "TestRun", "find_test_files", "run_tests"]


@dataclass
class CaseResult:
    file: str
    name: str
    ok: bool
    message: str = ""  # the failure, with a diff


@dataclass
class CoverageReport:
    spec: str
    covered: int
    total: int
    missing: list[str] = field(default_factory=list)

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else 100.0 * self.covered / self.total


@dataclass
class TestRun:
    cases: list[CaseResult] = field(default_factory=list)
    coverage: list[CoverageReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # test files or specs that could not be used

    @property
    def failed(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.ok]


def find_test_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(path.rglob("*.test.yaml")))
        elif path.name.endswith(".test.yaml"):
            found.append(path)
        elif path.suffix in (".yaml", ".yml"):  # a spec: its tests sit beside it
            found.extend(sorted(path.parent.glob(f"{path.stem}*.test.yaml")))
    return sorted(set(found))


# --- comparing -------------------------------------------------------------------------------------

def _normal(value: Any) -> Any:
    """Numbers compare by value (YAML reads 143.10 as a float; documents hold Decimals)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    return str(value)


def _project(actual: Any, expected: Any) -> Any:
    """The part of `actual` that a subset expectation talks about, so the diff shows only that."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {k: _project(actual[k], v) if k in actual else "<missing>" for k, v in expected.items()}
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [_project(a, e) for a, e in zip(actual, expected, strict=True)]
    return actual


def _show(value: Any) -> list[str]:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=False, default=str).splitlines()


def _diff(expected: Any, actual: Any) -> str:
    return _line_diff(_show(expected), _show(actual))


def _line_diff(expected: list[str], actual: list[str]) -> str:
    lines = difflib.unified_diff(expected, actual, "expected", "actual", lineterm="", n=2)
    return "\n".join(f"      {line}" for line in lines)


def _pretty(text: str, fmt: str) -> list[str]:
    """A rendered document one element, field or parameter a line, so that a diff of a long
    document points at what differs. Text that does not parse stays as it is."""
    if fmt == "xml":
        from lxml import etree

        parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True, load_dtd=False)
        try:
            root = etree.fromstring(text.encode("utf-8"), parser)
        except (etree.XMLSyntaxError, ValueError):
            return text.splitlines()
        declaration = [text[: text.index("?>") + 2]] if text.startswith("<?xml") and "?>" in text else []
        return declaration + etree.tostring(root, encoding="unicode", pretty_print=True).splitlines()
    if fmt == "json":
        try:
            value = json.loads(text, parse_float=_Number, parse_int=_Number, parse_constant=_Number)
        except ValueError:
            return text.splitlines()
        return _json_text(value, 0).splitlines()
    if fmt == "form" and "\n" not in text:
        return text.split("&")
    return text.splitlines()


class _Number(str):
    """A JSON number's text as written: `1` and `"1"`, or `1.50` and `1.5`, must not look alike."""


def _json_text(value: Any, depth: int) -> str:
    """JSON indented by two, with numbers exactly as they were written."""
    if isinstance(value, _Number):
        return str(value)
    pad, end = "  " * (depth + 1), "  " * depth
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {_json_text(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{end}}}"
    if isinstance(value, list) and value:
        return "[\n" + ",\n".join(f"{pad}{_json_text(v, depth + 1)}" for v in value) + f"\n{end}]"
    return json.dumps(value, ensure_ascii=False)


def _rendered_diff(expected: str, actual: str, fmt: str) -> str:
    """A line diff of the pretty-printed documents; when they differ only in layout (spaces,
    quoting, a declaration), a diff of the texts themselves and where they first differ."""
    wanted, got = _pretty(expected, fmt), _pretty(actual, fmt)
    if wanted != got:
        return _line_diff(wanted, got)
    wanted, got = expected.splitlines(), actual.splitlines()
    if wanted != got and (len(wanted) > 1 or len(got) > 1):
        return "      (they differ only in layout)\n" + _line_diff(wanted, got)
    at = next((i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
              min(len(expected), len(actual)))
    start = max(0, at - 30)
    return (f"      they differ only in layout, first at character {at + 1}:\n"
            f"      expected: …{expected[start : at + 30]!r}…\n"
            f"      actual:   …{actual[start : at + 30]!r}…")


_PATH = re.compile(r"[^.\[\]]+(?:\.[^.\[\]]+|\[\d*\])*")
_PATH_STEP = re.compile(r"\[(\d*)\]|([^.\[\]]+)")


def _path_steps(path: str) -> list[str | int]:
    """`orderLines[].remark` → ['orderLines', '[]', 'remark']; `items[0]` → ['items', 0]."""
    if not _PATH.fullmatch(path) or path.endswith("[]"):
        raise _CaseError(f"absent: {path!r} is not a path like deliveryOrder.remark, orderLines[].remark or "
                         "orderLines[0]")
    return [key if key else int(index) if index else "[]" for index, key in _PATH_STEP.findall(path)]


def _absent(document: Any, path: str) -> list[str]:
    """Problems with `path` being absent. Every step before the last must be there (so a typo
    cannot pass unnoticed); `[]` means every element of a list."""
    steps = _path_steps(path)
    problems: list[str] = []

    def walk(value: Any, rest: list[str | int], where: str) -> None:
        step, rest = rest[0], rest[1:]
        if step == "[]":
            if not isinstance(value, list):
                problems.append(f"absent {path}: {where or 'the document'} is not a list")
                return
            for i, element in enumerate(value):
                if rest:
                    walk(element, rest, f"{where}[{i}]")
            return
        if isinstance(step, int):
            if not isinstance(value, list):
                problems.append(f"absent {path}: {where or 'the document'} is not a list")
            elif not rest and step < len(value):
                problems.append(f"expected {where}[{step}] to be absent, found "
                                f"{json.dumps(value[step], ensure_ascii=False, default=str)}")
            elif rest and step >= len(value):
                problems.append(f"absent {path}: {where} has no element {step} (to check that it is absent, "
                                f"list {where}[{step}] itself)")
            elif rest:
                walk(value[step], rest, f"{where}[{step}]")
            return
        here = f"{where}.{step}" if where else step
        if not isinstance(value, dict):
            problems.append(f"absent {path}: {where or 'the document'} is not an object")
        elif not rest and step in value:
            problems.append(f"expected {here} to be absent, found "
                            f"{json.dumps(value[step], ensure_ascii=False, default=str)}")
        elif rest and step not in value:
            problems.append(f"absent {path}: the document has no {here} (to check that it is absent, "
                            f"list {here} itself)")
        elif rest:
            walk(value[step], rest, here)

    walk(document, list(steps), "")
    return problems


# --- running ----------------------------------------------------------------------------------------

class _CaseError(Exception):
    pass


def _clock(text: Any) -> datetime | None:
    if text is None:
        return None
    value = datetime.fromisoformat(str(text))
    if value.tzinfo is None:
        raise _CaseError(f"now {text!r} needs a UTC offset")
    return value


def _input(case: Mapping[str, Any], mapping: CompiledMapping, base: Path) -> Any:
    if "input" in case:
        return case["input"]
    if "input_file" in case:
        return mapping.parse_input((base / str(case["input_file"])).read_bytes())
    if "input_text" in case:
        return mapping.parse_input(str(case["input_text"]))
    raise _CaseError("a case needs input, input_file or input_text")


def _wire(data: Any) -> WireSettings | None:
    """A test's `wire:` settings, as a warehouse config file's `wire:` section would give them."""
    if data is None:
        return None
    try:
        return WireSettings.parse(data)
    except WireError as exc:
        raise _CaseError(str(exc)) from None


def _secrets(values: Mapping[str, Any]) -> Secrets:
    for name, value in values.items():
        if not str(value).startswith(TEST_SECRET_MARK):
            raise _CaseError(f"test secret {name!r} must start with {TEST_SECRET_MARK!r}: tests never hold real ones")
    return Secrets([MappingSecrets({str(k): str(v) for k, v in values.items()})])


def _run_case(mapping: CompiledMapping, defaults: Mapping[str, Any], case: Mapping[str, Any], base: Path) -> str:
    """'' when the case passes, else what went wrong."""
    from dockyard.runtime.request import build_request
    from dockyard.runtime.serialize import to_json_text

    expect = case.get("expect")
    if not isinstance(expect, Mapping) or not expect:
        raise _CaseError("a case needs expect: document, document_subset, absent, rendered, request or error")
    context = {**(defaults.get("context") or {}), **(case.get("context") or {})}
    context = {**mapping.meta.get("examples", {}), **context}
    clock = _clock(case.get("now", defaults.get("now")))
    secrets = _secrets({**(defaults.get("secrets") or {}), **(case.get("secrets") or {})})
    wire = _wire(case["wire"] if "wire" in case else defaults.get("wire"))
    try:
        document = _input(case, mapping, base)
        if "request" in expect or (mapping.meta.get("request") is not None and ("error" in expect or wire)):
            prepared = build_request(mapping, document, context=context, clock=clock, secrets=secrets,
                                     request_id=str(case.get("request_id", "test-request")), validate=True,
                                     wire=wire)
            produced: Any = prepared.document
        else:
            prepared = None
            produced = mapping.transform(document, context, clock, validate=True)
    except DockyardError as exc:
        if "error" in expect:
            wanted = str(expect["error"])
            return "" if wanted in secrets.redact(str(exc)) else (
                f"expected an error containing {wanted!r}, got: {secrets.redact(str(exc))}")
        return f"unexpected error: {secrets.redact(str(exc))}"
    if "error" in expect:
        return f"expected an error containing {str(expect['error'])!r}, but the case succeeded"
    actual = _normal(json.loads(to_json_text(produced), parse_float=Decimal))
    problems = []
    if "document" in expect:
        wanted = _normal(expect["document"])
        if actual != wanted:
            problems.append("document differs:\n" + _diff(wanted, actual))
    if "document_subset" in expect:
        wanted = _normal(expect["document_subset"])
        shown = _project(actual, wanted)
        if not _is_subset(wanted, actual):
            problems.append("document differs (subset):\n" + _diff(wanted, shown))
    if "absent" in expect:
        paths = expect["absent"]
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise _CaseError("absent: must be a list of paths, such as [deliveryOrder.remark]")
        for path in paths:
            problems.extend(_absent(actual, path))
    if "request" in expect and prepared is not None:
        problems.extend(_check_request(expect["request"], prepared, secrets))
    if "rendered" in expect:
        from dockyard.runtime.serialize import serialize

        target = mapping.target
        text = serialize(produced, target).decode(target.xml.encoding if target.xml else "utf-8")
        if text != str(expect["rendered"]):
            problems.append("rendered document differs:\n" + _rendered_diff(str(expect["rendered"]), text,
                                                                             target.format))
    return "\n".join(problems)


def _is_subset(wanted: Any, actual: Any) -> bool:
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(k in actual and _is_subset(v, actual[k]) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(actual, list) and len(wanted) == len(actual) and all(
            _is_subset(w, a) for w, a in zip(wanted, actual, strict=True))
    return bool(wanted == actual)


def _check_request(wanted: Mapping[str, Any], prepared: Any, secrets: Secrets) -> list[str]:
    got = prepared.as_dict()
    problems = []
    for key, value in wanted.items():
        if key == "headers":
            headers = got["headers"]
            for name, text in (value or {}).items():
                if headers.get(name) != str(text):
                    problems.append(f"request header {name}: expected {text!r}, got {headers.get(name)!r}")
        elif key in got:
            if str(got[key]) != str(value):
                shown = [secrets.redact(str(value))], [secrets.redact(str(got[key]))]
                problems.append(f"request {key} differs:\n" + _diff(*shown))
        else:
            problems.append(f"request has no {key!r} (known: {', '.join(sorted(got))})")
    return problems


def _coverage(spec: str, mapping: CompiledMapping) -> CoverageReport:
    items = mapping.module.__dockyard_coverage__
    hits: set[tuple[Any, ...]] = mapping.module._COV.hits
    fields = mapping.module.__dockyard_fields__
    covered = total = 0
    missing: list[str] = []

    def count(ok: bool, what: str) -> None:
        nonlocal covered, total
        total += 1
        covered += ok
        if not ok:
            missing.append(what)

    for index, optional in items["fields"]:
        file, line, col, path = fields[index]
        where = f"{file}:{line}:{col} {path}"
        present, absent = ("field", index, True) in hits, ("field", index, False) in hits
        if optional:
            count(present, f"{where}: never present")
            count(absent, f"{where}: never absent")
        else:
            count(present or absent, f"{where}: never produced")
    for n, (kind, line, col, text) in enumerate(items["branches"]):
        first, second = text.split(" / ")
        count(("branch", n, 1) in hits, f"{spec}:{line}:{col} {kind}: {first} never taken")
        count(("branch", n, 0) in hits, f"{spec}:{line}:{col} {kind}: {second} never taken")
    used = {(h[1], h[2]) for h in hits if h[0] == "table"}
    for name, table in items["tables"].items():
        keys = {k for t, k in used if t == name}
        where = f"{spec}:{table['line']}:{table['col']} table {name}"
        for row in table["rows"]:
            count(row in keys, f"{where}: entry {row!r} never used")
        if table["default"]:
            count(bool(keys - set(table["rows"])), f"{where}: default never used")
    return CoverageReport(spec, covered, total, missing)


def run_tests(paths: Iterable[str | os.PathLike[str]]) -> TestRun:
    run = TestRun()
    mappings: dict[Path, CompiledMapping] = {}
    for test_file in find_test_files(paths):
        shown = os.path.relpath(test_file) if not os.path.relpath(test_file).startswith("..") else str(test_file)
        try:
            data = safe_load(test_file.read_text(encoding="utf-8"))  # bounded: aliases, depth
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            run.errors.append(f"{shown}: cannot read the test file: {exc}")
            continue
        if not isinstance(data, dict) or "spec" not in data or not isinstance(data.get("cases"), list):
            run.errors.append(f"{shown}: a test file needs `spec:` and a list of `cases:`")
            continue
        spec_path = (test_file.parent / str(data["spec"])).resolve()
        if spec_path not in mappings:
            try:
                mappings[spec_path] = compile_file(os.path.relpath(spec_path), coverage=True)
            except DiagnosticsError as exc:
                run.errors.append(f"{shown}: the spec does not compile:\n{render_all(exc.diagnostics, exc.sources)}")
                continue
            except OSError as exc:
                run.errors.append(f"{shown}: cannot read the spec {data['spec']!r}: {exc}")
                continue
        mapping = mappings[spec_path]
        for i, case in enumerate(data["cases"]):
            name = str(case.get("name", f"case {i + 1}")) if isinstance(case, dict) else f"case {i + 1}"
            try:
                if not isinstance(case, dict):
                    raise _CaseError("a case must be a mapping")
                message = _run_case(mapping, data, case, test_file.parent)
            except _CaseError as exc:
                message = f"bad test case: {exc}"
            except (OSError, ValueError) as exc:
                message = f"bad test case: {exc}"
            run.cases.append(CaseResult(shown, name, not message, message))
    for spec_path, mapping in sorted(mappings.items()):
        run.coverage.append(_coverage(os.path.relpath(spec_path), mapping))
    return run


def iter_report(run: TestRun, min_coverage: float | None) -> Iterator[str]:
    for case in run.cases:
        yield f"{'PASS' if case.ok else 'FAIL'}  {case.file}: {case.name}"
        if not case.ok:
            yield "\n".join(f"    {line}" for line in case.message.splitlines())
    for error in run.errors:
        yield f"ERROR {error}"
    yield ""
    yield ("rule coverage (output fields, both branches of each conditional, table entries, "
           "optional fields present and absent):")
    for cov in run.coverage:
        flag = "" if min_coverage is None or cov.percent >= min_coverage else "  below minimum"
        yield f"  {cov.percent:5.1f}%  {cov.covered}/{cov.total}  {cov.spec}{flag}"
        for item in cov.missing:
            yield f"          not covered: {item}"
    passed = sum(1 for c in run.cases if c.ok)
    yield ""
    yield f"{passed} passed, {len(run.failed)} failed"
