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
    # SF Express: the search-order query flow (sf.search-order), in the library today.
    "sf": "query",
    # QIMEN WMS: `deliveryorder.query`, and a repeated deliveryOrderCode is answered with the
    # recognisable duplicate `单据已存在` (issue 10: being added to the library and the simulator).
    "qimen-std": "query",
    # JD Logistics LOP: the LOP order query (issue 10: being added to the library and the simulator).
    "jd": "query",
    # Cainiao LINK: no public query for a consign order and no documented duplicate answer
    # (mappings/cainiao/consign-order-notify.yaml): the one integration allowed to hold.
    "cainiao": None,
}
