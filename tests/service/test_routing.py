"""The router: first matching rule wins, each criterion, the default rule, and what the journal says."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dockyard.service.config import Route
from dockyard.service.routing import Router


def order(shop: Any = "SHOP-X", channel: Any = "jd", province: Any = "浙江省", skus: tuple[Any, ...] = ("A-1",),
          **extra: Any) -> dict[str, Any]:
    return {"order_no": "SO1", "shop_code": shop, "channel": channel, "receiver": {"province": province},
            "items": [{"sku": sku, "qty": 1} for sku in skus], **extra}


def test_each_criterion_routes_on_its_own() -> None:
    router = Router([
        Route("by-shop", shops=("SHOP-A", "SHOP-B")),
        Route("by-channel", channels=("tmall",)),
        Route("by-province", provinces=("广东省",)),
        Route("by-sku", sku_prefixes=("SF-", "XL-")),
    ])
    assert router.route(order(shop="SHOP-B")) == "by-shop"
    assert router.route(order(channel="tmall")) == "by-channel"
    assert router.route(order(province="广东省")) == "by-province"
    assert router.route(order(skus=("A-1", "XL-9"))) == "by-sku"
    assert router.route(order()) is None  # nothing matches and there is no default rule


def test_a_rule_needs_every_criterion_it_gives() -> None:
    router = Router([Route("sf", shops=("SHOP-A",), channels=("tmall",), provinces=("广东省",), sku_prefixes=("SF-",)),
                     Route("rest", default=True)])
    full = order(shop="SHOP-A", channel="tmall", province="广东省", skus=("SF-1",))
    assert router.route(full) == "sf"
    assert router.route({**full, "shop_code": "SHOP-B"}) == "rest"
    assert router.route({**full, "channel": "jd"}) == "rest"
    assert router.route({**full, "receiver": {"province": "浙江省"}}) == "rest"
    assert router.route({**full, "items": [{"sku": "XX-SF-1"}]}) == "rest"  # a prefix, not a substring


def test_the_first_matching_rule_wins_and_the_default_catches_the_rest() -> None:
    router = Router([Route("first", channels=("tmall",)), Route("second", channels=("tmall", "jd")),
                     Route("fallback", default=True)])
    assert router.route(order(channel="tmall")) == "first"
    assert router.route(order(channel="jd")) == "second"
    assert router.route(order(channel="douyin")) == "fallback"
    assert router.route({}) == "fallback"


def test_odd_orders_do_not_match_and_do_not_crash() -> None:
    router = Router([Route("s", shops=("1",)), Route("p", provinces=("x",)), Route("k", sku_prefixes=("A",))])
    assert router.route(order(shop=1, skus=("Z-1",))) is None  # values are compared as text, exactly
    assert router.route(order(shop=["1"], channel={"a": 1}, skus=())) is None  # unhashable values
    assert router.route({"receiver": "广东省", "items": "A-1"}) is None
    assert router.route({"items": [None, {"sku": 5}, {"sku": "A-2"}]}) == "k"


def test_explain_names_the_rule_and_what_matched() -> None:
    router = Router([Route("sf", shops=("SHOP-A",), channels=("tmall",), sku_prefixes=("SF-",)),
                     Route("gd", provinces=("广东省",)), Route("rest", default=True)])
    assert router.explain(order(shop="SHOP-A", channel="tmall", skus=("A", "SF-1"))) == (
        "routing[0] (shop_code 'SHOP-A' in ['SHOP-A']; channel 'tmall' in ['tmall']; "
        "sku 'SF-1' starts with one of ['SF-']) → sf")
    assert router.explain(order(province="广东省")) == "routing[1] (province '广东省' in ['广东省']) → gd"
    assert router.explain(order()) == "routing[2] (default) → rest"
    assert Router([Route("gd", provinces=("广东省",))]).explain(order()) == (
        "no routing rule matched (shop_code='SHOP-X', channel='jd', province='浙江省'); there is no default rule")


# -- properties --------------------------------------------------------------------------------

VALUES = st.sampled_from(["a", "b", "c", "广东省"])
PREFIXES = st.sampled_from(["", "A", "AB", "B-", "广"])


def values(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[str, ...]]:
    return st.one_of(st.just(()), st.lists(strategy, min_size=1, max_size=3).map(tuple))


ROUTES = st.builds(Route, warehouse=st.sampled_from(["w1", "w2", "w3"]), shops=values(VALUES),
                   channels=values(VALUES), provinces=values(VALUES), sku_prefixes=values(PREFIXES))
ORDERS = st.fixed_dictionaries({
    "shop_code": st.one_of(VALUES, st.none(), st.integers()),
    "channel": VALUES,
    "receiver": st.fixed_dictionaries({"province": VALUES}),
    "items": st.lists(st.fixed_dictionaries({"sku": st.text(alphabet="AB-广", max_size=4)}), max_size=3),
})


def matches(route: Route, order: dict[str, Any]) -> bool:
    """The rule of `Route`, written out the slow, obvious way."""
    if route.default:
        return True
    skus = [item["sku"] for item in order["items"]]
    return ((not route.shops or order["shop_code"] in route.shops)
            and (not route.channels or order["channel"] in route.channels)
            and (not route.provinces or order["receiver"]["province"] in route.provinces)
            and (not route.sku_prefixes or any(s.startswith(p) for s in skus for p in route.sku_prefixes)))


@given(st.lists(ROUTES, max_size=6), ORDERS)
def test_the_router_picks_the_first_rule_that_matches(routes: list[Route], order: dict[str, Any]) -> None:
    expected = next((r.warehouse for r in routes if matches(r, order)), None)
    router = Router(routes)
    assert router.route(order) == expected
    explained = router.explain(order)
    assert router.decide(order) == (expected, explained)  # ingest's one-match form says the same
    if expected is None:
        assert explained.startswith("no routing rule matched")
    else:
        index = next(i for i, r in enumerate(routes) if matches(r, order))
        assert explained.startswith(f"routing[{index}] ") and explained.endswith(f"→ {expected}")


@given(st.lists(ROUTES, max_size=6), ORDERS)
def test_a_default_rule_routes_every_order(routes: list[Route], order: dict[str, Any]) -> None:
    router = Router([*routes, Route("fallback", default=True)])
    assert router.route(order) is not None
    assert router.route({}) in {"fallback", *(r.warehouse for r in routes if matches(r, _EMPTY))}


_EMPTY: dict[str, Any] = {"shop_code": None, "channel": None, "receiver": {"province": None}, "items": []}
