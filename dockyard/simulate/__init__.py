"""Simulated warehouses on loopback for demos, tests and benchmarks: QIMEN, SF Express, JD LOP and
Cainiao LINK endpoints that verify signatures independently, apply each warehouse's duplicate and
cancel rules, count what they receive, fail on demand, and push signed feedback callbacks; plus
the order middle-platform's status-event webhook.

    sim = Simulator([SimWarehouse("qimen-std", "qimen", secret, callback_base, Faults(), context)])
    base = await sim.start()          # warehouses at f"{base}/qimen-std/…"
"""

from dockyard.simulate.app import UPSTREAM, Simulator
from dockyard.simulate.faults import Faults
from dockyard.simulate.feedback import Feedback
from dockyard.simulate.warehouses import SimWarehouse

__all__ = ["UPSTREAM", "Faults", "Feedback", "SimWarehouse", "Simulator"]
