"""Dockyard: order-to-warehouse mappings, written as YAML specs and compiled to checked Python.

    import dockyard
    mapping = dockyard.compile_file("mappings/reference/deliveryorder.yaml")
    document = mapping.transform(order)

    bundle = dockyard.load_bundle("build/bundle")      # needs only the runtime
    document = bundle["reference.deliveryorder"].transform(order)

Names are imported lazily, so that `load_bundle` never pulls in the compiler (or Lark, Jinja2).
"""

from __future__ import annotations

from pathlib import Path

TYPE_CHECKING = False  # not `typing`'s: importing typing costs a fresh process ~3.5 ms

__all__ = ["__version__", "compile_file", "load_bundle"]
__version__ = "0.1.0"

# Installed, the stage folders (dsl/, compiler/, runtime/) sit inside this package (pyproject.toml
# maps them in). In a source checkout they sit beside this folder instead; when Python imports the
# checkout (`python -m …` from the repository root), let `dockyard.dsl` & co. resolve the same way.
_checkout = Path(__file__).resolve().parent.parent
if not (Path(__file__).parent / "dsl").is_dir() and (_checkout / "dsl" / "expr.lark").is_file():
    __path__.append(str(_checkout))

if TYPE_CHECKING:
    from typing import Any

    from dockyard.compiler.api import compile_file
    from dockyard.runtime.bundle import load_bundle


def __getattr__(name: str) -> Any:
    if name == "compile_file":
        from dockyard.compiler.api import compile_file

        return compile_file
    if name == "load_bundle":
        from dockyard.runtime.bundle import load_bundle

        return load_bundle
    raise AttributeError(f"module 'dockyard' has no attribute {name!r}")
