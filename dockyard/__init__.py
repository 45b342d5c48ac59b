"""Dockyard: order-to-warehouse mappings, written as YAML specs and compiled to checked Python.

    import dockyard
    mapping = dockyard.compile_file("mappings/reference/deliveryorder.yaml")
    document = mapping.transform(order)

    bundle = dockyard.load_bundle("build/bundle")      # needs only the runtime
    document = bundle["reference.deliveryorder"].transform(order)

Names are imported lazily, so that `load_bundle` never pulls in the compiler (or Lark, Jinja2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["__version__", "compile_file", "load_bundle"]
__version__ = "0.1.0"

if TYPE_CHECKING:
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
