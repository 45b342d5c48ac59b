"""Routing: which warehouse gets an order. The first rule of `routing:` that matches wins.

A rule matches when every criterion it gives matches: the order's `shop_code`, `channel` and
`receiver.province` are compared exactly with the rule's values (a list matches any of them), and
`sku_prefix` matches when some line's `sku` starts with one of the prefixes. The default rule
matches every order. The router runs for every order, so the rules are compiled once into frozen
sets and tuples, and the SKUs of an order are read only when a rule asks for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dockyard.service.config import Route

__all__ = ["Router"]


@dataclass(frozen=True, slots=True)
class _Rule:
    index: int
    warehouse: str
    shops: frozenset[str] | None
    channels: frozenset[str] | None
    provinces: frozenset[str] | None
    sku_prefixes: tuple[str, ...] | None
    default: bool
    route: Route


def _set(values: tuple[str, ...]) -> frozenset[str] | None:
    return frozenset(values) if values else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _skus(order: Mapping[str, Any]) -> list[str]:
    items = order.get("items")
    if not isinstance(items, list | tuple):
        return []
    return [sku for item in items if isinstance(item, Mapping) and isinstance(sku := item.get("sku"), str)]


def _province(order: Mapping[str, Any]) -> str | None:
    receiver = order.get("receiver")
    return _text(receiver.get("province")) if isinstance(receiver, Mapping) else None


class Router:
    """`route(order)` → the warehouse name of the first matching rule, or None (the order is
    then quarantined as unrouted); `explain(order)` says which rule matched and why."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)
        self._rules = tuple(
            _Rule(i, r.warehouse, _set(r.shops), _set(r.channels), _set(r.provinces),
                  tuple(r.sku_prefixes) or None, r.default, r)
            for i, r in enumerate(self.routes)
        )

    def _match(self, order: Mapping[str, Any]) -> _Rule | None:
        shop = _text(order.get("shop_code"))
        channel = _text(order.get("channel"))
        province = _province(order)
        skus: list[str] | None = None
        for rule in self._rules:
            if rule.default:
                return rule
            if rule.shops is not None and (shop is None or shop not in rule.shops):
                continue
            if rule.channels is not None and (channel is None or channel not in rule.channels):
                continue
            if rule.provinces is not None and (province is None or province not in rule.provinces):
                continue
            if rule.sku_prefixes is not None:
                if skus is None:
                    skus = _skus(order)
                prefixes = rule.sku_prefixes
                if not any(sku.startswith(prefixes) for sku in skus):
                    continue
            return rule
        return None

    def route(self, order: Mapping[str, Any]) -> str | None:
        """The warehouse of the first rule that matches `order`; None when no rule does."""
        rule = self._match(order)
        return None if rule is None else rule.warehouse

    def explain(self, order: Mapping[str, Any]) -> str:
        """One line for the journal: which rule (its index in `routing:`) matched, on what."""
        return self.decide(order)[1]

    def decide(self, order: Mapping[str, Any]) -> tuple[str | None, str]:
        """`route` and `explain` from one match (ingest needs both for every order)."""
        rule = self._match(order)
        return (None if rule is None else rule.warehouse), self._explain(rule, order)

    def _explain(self, rule: _Rule | None, order: Mapping[str, Any]) -> str:
        if rule is None:
            facts = (f"shop_code={order.get('shop_code')!r}, channel={order.get('channel')!r}, "
                     f"province={_province(order)!r}")
            tail = "" if any(r.default for r in self._rules) else "; there is no default rule"
            return f"no routing rule matched ({facts}){tail}"
        if rule.default:
            return f"routing[{rule.index}] (default) → {rule.warehouse}"
        parts: list[str] = []
        r = rule.route
        if r.shops:
            parts.append(f"shop_code {order.get('shop_code')!r} in {list(r.shops)}")
        if r.channels:
            parts.append(f"channel {order.get('channel')!r} in {list(r.channels)}")
        if r.provinces:
            parts.append(f"province {_province(order)!r} in {list(r.provinces)}")
        if r.sku_prefixes:
            sku = next(s for s in _skus(order) if s.startswith(tuple(r.sku_prefixes)))
            parts.append(f"sku {sku!r} starts with one of {list(r.sku_prefixes)}")
        return f"routing[{rule.index}] ({'; '.join(parts)}) → {rule.warehouse}"
