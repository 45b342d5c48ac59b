"""Per-warehouse wire settings reach the wire through the service: a warehouse whose config asks
for the receiver's mobile SM4-encrypted gets it encrypted, with the key named in config and read
from the secret store, while another warehouse running the same spec gets it in clear text."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from test_service import example

from dockyard.runtime.fieldcrypto import get_cipher
from dockyard.runtime.secrets import Secret

SM4_KEY = "0123456789abcdef"  # 16 bytes: a test key
WIRE = {"encrypt": [{"path": "deliveryOrder.receiverInfo.mobile", "scheme": "sm4-ecb", "key": "QIMEN_SM4_KEY",
                     "options": {"encoding": "base64"}}]}


def _mobile_sent(journal: list[dict[str, Any]]) -> str:
    sent = next(s for s in journal if s["step"] == "sent")
    found = re.search(r"<receiverInfo>.*?<mobile>([^<]*)</mobile>", sent["detail"]["body"], re.S)
    assert found, sent["detail"]["body"]
    return found.group(1)


@pytest.mark.parametrize("configured", [True, False], ids=["wire-encrypt", "spec-default"])
def test_a_warehouse_config_encrypts_a_field_the_spec_allows(env: Any, configured: bool) -> None:
    async def main() -> None:
        order = example()
        clear = order["receiver"]["mobile"]
        plan = {"wire": {"qimen-std": WIRE}, "extra_secrets": {"QIMEN_SM4_KEY": SM4_KEY}} if configured else {}
        async with env(**plan) as run:
            await run.post("/orders", order)
            await run.until(order["order_no"], lambda d: d["delivery"] == "delivered")
            sent = _mobile_sent(await run.journal(order["order_no"]))
        if not configured:  # the same spec without the wire setting: clear text
            assert sent == clear
            return
        assert sent != clear and clear not in sent
        key = Secret("QIMEN_SM4_KEY", SM4_KEY)
        assert get_cipher("sm4-ecb").decrypt(sent, key, {"encoding": "base64"}) == clear

    asyncio.run(main())
