"""How each integration of the warehouse library settles work whose outcome is unknown (a timeout
or a reset after the warehouse processed the request, a node killed with the request on the
wire): the table the multi-node and mixed-fault tests hold the service to.

A warehouse with a way to be asked must end with **0 orders held for a person**; only a warehouse
with `None` (neither a query flow nor a recognisable duplicate answer to a resend) may hold an
order in doubt, and then with its reason. The evidence for each entry belongs in
docs/integrations-contract.md; change an entry here when that evidence changes, never to make a
run pass.
"""

from __future__ import annotations

# demo warehouse name -> how its in-doubt work resolves itself, or None where it cannot
IN_DOUBT_RESOLUTION: dict[str, str | None] = {
    # SF Express: the search-order query flow (sf.search-order → sf.search-response).
    "sf": "query",
    # QIMEN WMS: the deliveryorder.query flow (qimen.deliveryorder.query → qimen.query-response);
    # a create sent again after "not found" is answered with the recognisable duplicate `单据已存在`
    # if it did arrive after all.
    "qimen-std": "query",
    # JD Logistics LOP: the LOP order query flow (jd.query-order → jd.query-response) at the
    # account's queryPath; which LOP query takes our order number is not publicly confirmed
    # (docs/integrations-contract.md), and a create sent again is answered with JD's duplicate error.
    "jd": "query",
    # Cainiao LINK: no public query for a consign order and no documented duplicate answer
    # (mappings/cainiao/consign-order-notify.yaml): the one integration allowed to hold.
    "cainiao": None,
}
