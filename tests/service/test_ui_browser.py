"""The dashboard in a real headless browser: Playwright for Python driving Debian's Chromium
(/usr/bin/chromium). With live data flowing from the simulated warehouses the overview's charts
and numbers move, an order is found and its timeline opened, the failing reason shows on an
order's page with its replay, and a DLQ group is discarded as operator (confirmed in dialogs,
journaled); a fault run shows its 5xx, retries, open circuit and backlog age, and a bulk replay
of its dead letters delivers them. Screenshots go to $DOCKYARD_ARTIFACTS (default: the test's
tmp_path); docs/images/overview-fault-run.png is one of them.

Without playwright or Chromium the test is skipped when CI is unset; with CI set it fails.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
from pathlib import Path
from typing import Any

import pytest
from test_service import example

from dockyard.simulate import Feedback

CHROMIUM = "/usr/bin/chromium"
OPERATOR = "test-only-ui-browser-operator-0123456789"


def _require_browser() -> None:
    problems = []
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        problems.append("the python package playwright is not installed")
    if not Path(CHROMIUM).exists():
        problems.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    if problems:
        reason = "browser test needs Playwright and Debian's Chromium: " + "; ".join(problems)
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def _artifacts(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    base = Path(os.environ["DOCKYARD_ARTIFACTS"]) if os.environ.get("DOCKYARD_ARTIFACTS") else tmp_path
    out = base / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    out.mkdir(parents=True, exist_ok=True)
    return out


def numbered(n: int) -> dict[str, Any]:
    order = copy.deepcopy(example())
    order["order_no"] = f"{order['order_no']}{n:03d}"
    return order


def test_the_dashboard_in_a_real_browser(env: Any, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    _require_browser()
    from playwright.async_api import async_playwright, expect

    shots = _artifacts(tmp_path, request)

    async def main() -> None:
        overrides = {"dashboard": {"tokens": {OPERATOR: "operator"}}}
        async with env(warehouses=("qimen-std", "jd"), overrides=overrides,
                       feedback=Feedback(step_delay=0.05)) as run, async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(run.url + "/ui/")
                assert page.url.endswith("/ui/login")
                await page.fill("#token", OPERATOR)
                await page.click("#signin")
                await page.wait_for_selector('#charts .chart[data-warehouse="qimen-std"]')
                await page.wait_for_selector("#live:not(.off)")
                totals = '#charts .chart[data-warehouse="qimen-std"] .totals'
                assert await page.get_attribute(totals, "data-received") == "0"
                before = await page.get_attribute('#charts .chart[data-warehouse="qimen-std"] .line-received',
                                                  "points")
                updates = int(await page.get_attribute("#charts", "data-updates") or 0)

                # live data while the page is open
                first = numbered(1)
                await run.post("/orders", first)
                for n in range(2, 6):
                    await asyncio.sleep(0.3)
                    await run.post("/orders", numbered(n))
                bad = example("all-lines-zero")
                bad["channel"] = "jd"
                await run.post("/orders", bad)
                await expect(page.locator(totals)).to_have_attribute("data-received", "5", timeout=10_000)
                await run.until(first["order_no"], lambda d: d["delivery"] == "delivered")
                await run.until(bad["order_no"], lambda d: d["delivery"] == "dlq")
                await expect(page.locator(totals)).not_to_have_attribute("data-delivered", "0", timeout=10_000)
                await expect(page.locator("#m-dlq")).to_have_text("1", timeout=10_000)
                after = await page.get_attribute('#charts .chart[data-warehouse="qimen-std"] .line-received',
                                                 "points")
                assert after != before
                assert int(await page.get_attribute("#charts", "data-updates") or 0) >= updates + 2
                assert "%" in (await page.text_content("#m-success") or "")
                assert "circuit closed" in (await page.text_content('.chart[data-warehouse="jd"] .circ') or "")
                await page.screenshot(path=str(shots / "1-overview.png"), full_page=True)

                # find an order and open its timeline
                await page.click('nav a[data-view="search"]')
                await page.fill("#search-q", first["order_no"])
                await page.click("#search-go")
                await page.click(f"#search-results tr.result >> text={first['order_no']}")
                await page.wait_for_selector('#timeline li[data-step="committed"]')
                await page.wait_for_selector('#lineage tr[data-field="deliveryOrder.deliveryOrderCode"]')
                steps = await page.eval_on_selector_all("#timeline li", "els => els.map(e => e.dataset.step)")
                assert steps[:3] == ["received", "validated", "routed"] and "sent" in steps
                body = page.locator("#timeline li details.body").first
                await body.locator("summary").click()
                assert await body.locator("pre").is_visible()
                await page.screenshot(path=str(shots / "2-timeline.png"), full_page=True)

                # the order page shows the failing reason at once; the mapping refuses this order, so
                # Replay is not the main action there ("Replay anyway" is)
                dialogs: list[str] = []

                async def accept(dialog: Any) -> None:
                    dialogs.append(dialog.message)
                    await dialog.accept("nothing to ship" if dialog.type == "prompt" else None)

                page.on("dialog", accept)
                await page.goto(run.url + "/ui/#order/" + bad["order_no"])
                await page.wait_for_selector("#order-summary .failing")
                assert "Replay cannot help" in (await page.text_content("#order-summary .failing") or "")
                await page.click("#order-summary .failing button.replay")
                await page.wait_for_selector("#replay-result")
                assert "replayed" in (await page.text_content("#replay-result") or "")
                assert dialogs and "Replay job" in dialogs[0] and "cannot help" in dialogs[0]
                journal = await run.journal(bad["order_no"])
                assert [s["detail"]["by"] for s in journal if s["step"] == "replayed"] == ["dashboard:operator"]
                await run.until(bad["order_no"], lambda d: d["delivery"] == "dlq")  # it failed the same way

                # the DLQ grouped by warehouse and reason: no bulk replay for the refused group; discard it
                await page.click('nav a[data-view="dlq"]')
                await page.wait_for_selector('#dlq-groups tr.dlq-group')
                group = page.locator("#dlq-groups tr.dlq-group").first
                assert "Replay cannot help" in (await group.text_content() or "")
                assert await group.locator("button.bulk-replay").count() == 0
                await group.locator("a.job-link").first.click()
                await page.wait_for_selector("#dlq-detail h3")
                await page.screenshot(path=str(shots / "3-dlq.png"), full_page=True)
                await group.locator("button.bulk-discard").click()
                await page.wait_for_selector("#bulk-result")
                assert "discard: 1 job(s)" in (await page.text_content("#bulk-result") or "")
                await page.screenshot(path=str(shots / "4-discarded.png"), full_page=True)
                journal = await run.journal(bad["order_no"])
                [row] = [s for s in journal if s["step"] == "discarded"]
                assert row["detail"]["by"] == "dashboard:operator" and row["detail"]["reason"] == "nothing to ship"

                await page.click('nav a[data-view="errors"]')
                await page.wait_for_selector("#error-groups tr.error-group")
                await page.screenshot(path=str(shots / "5-errors.png"), full_page=True)
                assert errors == []
                html = await page.content()
                for value in run.plan.secret_values.values():
                    assert value not in html
            finally:
                await browser.close()

    asyncio.run(main())
    assert (shots / "1-overview.png").exists()


def test_a_fault_run_in_the_browser(env: Any, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The warehouse answers 503 to everything: the 5xx and retry series rise, the circuit opens
    and the age of the oldest due job shows; the dead letters are one group on the DLQ page, and
    once the warehouse is back a bulk replay of that group delivers them."""
    _require_browser()
    from playwright.async_api import async_playwright, expect

    from dockyard.simulate import Faults

    shots = _artifacts(tmp_path, request)

    async def main() -> None:
        overrides = {"dashboard": {"tokens": {OPERATOR: "operator"}}}
        retry = {"max_attempts": 2, "base_delay": 0.05, "max_delay": 0.1, "jitter": 0}
        async with env(warehouses=("qimen-std",), overrides=overrides, retry=retry,
                       faults={"qimen-std": Faults(error_rate=1.0)}) as run, async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(run.url + "/ui/login")
                await page.fill("#token", OPERATOR)
                await page.click("#signin")
                chart = '#charts .chart[data-warehouse="qimen-std"]'
                await page.wait_for_selector(chart)

                first = [numbered(90 + n) for n in range(5)]  # out of attempts before the circuit opens
                await run.post("/orders/batch", first)
                for order in first:
                    await run.until(order["order_no"], lambda d: d["delivery"] == "dlq")
                orders = [numbered(100 + n) for n in range(60)]
                await run.post("/orders/batch", orders)
                totals = page.locator(chart + " .totals")
                await expect(totals).not_to_have_attribute("data-errors", "0", timeout=10_000)
                await expect(totals).not_to_have_attribute("data-retries", "0", timeout=10_000)
                # The node mirrors the circuit's state from its last claim, so the open circuit shows
                # a moment after the failures that open it; due jobs can be aged before that too
                # (waiting on the in-flight limit), so the circuit is waited for first.
                await expect(page.locator(chart + " .circ")).to_contain_text("circuit open", timeout=15_000)
                aged = 0.0
                for _ in range(100):  # the circuit is open: due jobs wait, and their age shows
                    aged = float(await page.get_attribute(chart + " .backlog", "data-age") or 0)
                    if aged > 0:
                        break
                    await asyncio.sleep(0.1)
                assert aged > 0
                await page.screenshot(path=str(shots / "overview-fault-run.png"), full_page=True)

                run.sim.set_faults("qimen-std", Faults())
                for order in orders:
                    await run.until(order["order_no"], lambda d: d["delivery"] in ("dlq", "delivered"), timeout=30)
                dead = [o["order_no"] for o in first + orders if (await run.order(o["order_no"]))["delivery"] == "dlq"]
                assert len(dead) >= 5

                page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
                await page.click('nav a[data-view="dlq"]')
                group = page.locator("#dlq-groups tr.dlq-group").first
                await expect(group).to_contain_text("qimen-std", timeout=10_000)
                await group.locator("button.bulk-replay").click()
                await page.wait_for_selector("#bulk-result")
                assert f"replay: {len(dead)} job(s)" in (await page.text_content("#bulk-result") or "")
                await page.screenshot(path=str(shots / "dlq-after-bulk-replay.png"), full_page=True)
                for no in dead:
                    await run.until(no, lambda d: d["delivery"] == "delivered", timeout=30)
                assert errors == []
            finally:
                await browser.close()

    asyncio.run(main())
