"""The benchmark's order generator: `dockyard.sample_orders`, runnable from here as before.

    python bench/orders.py -n 20000 --seed 42 -o /tmp/orders.jsonl
"""

from __future__ import annotations

from dockyard.sample_orders import generate, main

__all__ = ["generate", "main"]

if __name__ == "__main__":
    main()
