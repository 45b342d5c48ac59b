"""Fuzz: mutations of the shipped specs. `check` must answer every one with diagnostics (never an
exception, a hang or a memory blow-up), and a mutation `check` accepts must compile, load and run
on real orders with at most a Dockyard error."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from pathlib import Path

from fuzzkit import Bounds, fuzz_settings, run
from hypothesis import given
from hypothesis import strategies as st

from dockyard.compiler.api import check_file, compile_file
from dockyard.runtime.errors import DockyardError
from dockyard.sample_orders import generate

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted(p for p in [*ROOT.glob("mappings/*/*.yaml"), *ROOT.glob("examples/specs/*.yaml")]
               if not p.name.endswith(".test.yaml"))
TEXTS = {p: p.read_text(encoding="utf-8") for p in SPECS}
ORDERS = [json.loads(json.dumps(o), parse_float=Decimal) for o in generate(3, seed=5)]
# Fragments a hostile change might put into a spec.
FRAGMENTS = [
    "x: &a [*a]", "<<: *nope", "&x ", "*x", "!!python/object/apply:os.system ['true']", "!!binary AAAA",
    "{" * 300 + "}" * 300, "[" * 2000, "- " * 200, '"\\ud800"', '"\\0"', '"\\x00"', "\t", "\r", "\ufeff", "\x00",
    "format_datetime(now(), \"---\")", "pad_left(order_no, 99999999999, \"--\")",
    "regex_replace(order_no, \"(\", \"\")",
    "encoding: \"\\0\"", "file: ../../../../../etc/passwd.csv", "schema: /etc/passwd", "schema: ../../x.json",
    "lookup(NOPE, order_no)", "$ctx.", "??", "=> ", "if then else", "'''", "|", ">-", "%YAML 1.1", "---", "...",
    "a" * 5000, "9" * 400, "1e999999", "\u2028", "中文", "`quoted name`", "$each: items", "$when: true",
]


@st.composite
def mutations(draw: st.DrawFn) -> tuple[Path, str]:
    path = draw(st.sampled_from(SPECS))
    lines = TEXTS[path].split("\n")
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            lines = [""]
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "fragment", "text", "indent", "truncate"]))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "fragment":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.sampled_from(FRAGMENTS)) + lines[i][at:]
        elif op == "text":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.text(max_size=12)) + lines[i][at + draw(st.integers(0, 5)):]
        elif op == "indent":
            lines[i] = " " * draw(st.integers(0, 6)) + lines[i].lstrip()
        else:
            lines = lines[:i]
    return path, "\n".join(lines)


def test_spec_mutations_get_diagnostics_and_what_checks_clean_runs() -> None:
    bounds = Bounds()
    seen = {"clean": 0}

    @fuzz_settings(ci_examples=300)
    @given(mutations())
    def target(case: tuple[Path, str]) -> None:
        path, text = case
        with bounds.example(text[:200]):
            report = check_file(path, text)
            if not report.ok:
                assert report.diagnostics and all(d.message for d in report.diagnostics)
                return
            seen["clean"] += 1
            mapping = compile_file(path, text)
            if report.spec is not None and report.spec.source_schema_name == "order":
                for order in ORDERS:
                    with contextlib.suppress(DockyardError):
                        mapping.render(order, clock=None)

    run(target, share=0.35)
    assert seen["clean"] > 0  # some mutations are harmless: the compile-and-run half was exercised
