"""Rotating a warehouse's callback secret without a restart, on SQLite and PostgreSQL: the new
secret goes in place, the previous one (verify.previous) still verifies until its `until`, the
change takes effect through a reload (as SIGHUP or `dockyard reload` make it), the journal and
/metrics say which secret verified, and after the window a callback signed with the old secret is
refused with 401 and journaled, naming the end of the overlap and never a secret."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from test_callbacks import _confirm, _post_qimen
from test_service import example

from dockyard.service.config import _previous
from dockyard.service.reload import reload_service

FLOW = "deliveryorder.confirm"


def _rotate(run: Any, new_value: str, until: datetime | None) -> None:
    """The operator's steps: keep the old value under a new name, put the new value in place, and
    name the old one as `previous` until `until` (None: the overlap is over and it is removed)."""
    path = Path(run.service.ctx.config.path)
    secrets_dir = Path(str(run.service.ctx.config.secrets_dir))
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    verify = doc["warehouses"]["qimen-std"]["callbacks"][FLOW]["verify"]
    name = verify["secret"]
    if until is not None and "previous" not in verify:
        (secrets_dir / (name + "_PREVIOUS")).write_text((secrets_dir / name).read_text(encoding="utf-8"))
        tmp = secrets_dir / (name + ".new")
        tmp.write_text(new_value, encoding="utf-8")
        tmp.replace(secrets_dir / name)
    if until is None:
        verify.pop("previous", None)
    else:
        verify["previous"] = {"secret": name + "_PREVIOUS", "until": until.isoformat()}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def test_the_previous_secret_verifies_inside_the_overlap_and_is_refused_after(env: Any) -> None:
    async def main() -> None:
        async with env() as run:
            old = run.plan.secret_values["QIMEN_APP_SECRET"]
            new = "TEST-ONLY-demo-" + "ab" * 12
            order = example()
            await run.post("/orders", order)
            await run.until(order["order_no"], lambda d: d["delivery"] == "delivered")
            _rotate(run, new, datetime.now(UTC) + timedelta(hours=1))
            detail = await reload_service(run.service, by="test")
            rotated = detail["callback_secrets"][f"qimen-std/{FLOW}"]
            assert rotated["previous"] == "QIMEN_APP_SECRET_PREVIOUS" and old not in str(detail)
            status, ack = await _post_qimen(run, _confirm(order["order_no"], "OBC-OLD"), secret=old)
            assert status == 200 and b"success" in ack  # signed with the old secret, inside the window
            status, text = await _post_qimen(run, _confirm(order["order_no"], "OBC-NEW"), secret=new)
            assert status == 200, text
            status, text = await _post_qimen(run, _confirm(order["order_no"], "OBC-X"), secret="TEST-ONLY-wrong")
            assert status == 401 and b"neither the current nor the previous" in text
            journal = await run.journal(order["order_no"])
            used = {s["detail"]["event_id"]: s["detail"].get("verified_with") for s in journal
                    if s["step"] == "feedback"}
            assert used == {"OBC-OLD": "previous", "OBC-NEW": "current"}
            metrics = run.service.metrics.render().decode()
            assert f'dockyard_callback_verified_total{{flow="{FLOW}",secret="previous",warehouse="qimen-std"}} 1.0' \
                in metrics

            # the overlap ends (here by config; the clock passing `until` does the same)
            _rotate(run, new, datetime.now(UTC) - timedelta(seconds=1))
            await reload_service(run.service, by="test")
            status, text = await _post_qimen(run, _confirm(order["order_no"], "OBC-LATE"), secret=old)
            assert status == 401 and b"overlap ended" in text
            rejected = await run.service.db.read(lambda c: c.execute(
                "SELECT outcome, detail FROM dy_journal WHERE step = 'callback-rejected'"))
            assert [r[0] for r in rejected] == ["forged", "forged"] and "overlap ended" in rejected[-1][1]
            assert all(old not in r[1] and new not in r[1] for r in rejected)
            status, _ = await _post_qimen(run, _confirm(order["order_no"], "OBC-NEW2"), secret=new)
            assert status == 200

            # and removing `previous` altogether is a reload too
            _rotate(run, new, None)
            await reload_service(run.service, by="test")
            status, text = await _post_qimen(run, _confirm(order["order_no"], "OBC-GONE"), secret=old)
            assert status == 401 and b"does not match" in text
            events = await run.service.db.read(lambda c: c.execute("SELECT event_id FROM dy_events ORDER BY 1"))
            assert [e[0] for e in events] == ["OBC-NEW", "OBC-NEW2", "OBC-OLD"]

    asyncio.run(main())


def test_a_rotated_upstream_secret_signs_the_next_forward_after_a_reload(env: Any) -> None:
    """The upstream webhook's HMAC secret is rotated like the others (a new value in the secrets
    folder, then a reload): the next events are signed with the new value, none with the old."""
    async def main() -> None:
        async with env() as run:
            order = example()
            await run.post("/orders", order)
            await run.until(order["order_no"], lambda d: d["delivery"] == "delivered")

            async def forwarded(n: int) -> None:
                for _ in range(200):
                    if len(run.sim.upstream_events()) >= n:
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError(f"{len(run.sim.upstream_events())} events forwarded, not {n}: "
                                     f"{run.sim.stats()['upstream']}")

            status, _ = await _post_qimen(run, _confirm(order["order_no"], "OBC-1"))
            assert status == 200
            await forwarded(1)
            name = run.service.ctx.config.upstream.secret
            new = "TEST-ONLY-upstream-" + "cd" * 12
            secrets_dir = Path(str(run.service.ctx.config.secrets_dir))
            (secrets_dir / (name + ".new")).write_text(new, encoding="utf-8")
            (secrets_dir / (name + ".new")).replace(secrets_dir / name)
            run.sim._upstream.secret = new  # the middle-platform takes the new value at the same moment
            await reload_service(run.service, by="test")
            status, _ = await _post_qimen(run, _confirm(order["order_no"], "OBC-2"))
            assert status == 200
            await forwarded(2)
            assert run.sim.stats()["upstream"]["bad_signatures"] == 0
            assert [e["event_id"] for e in run.sim.upstream_events()] == ["OBC-1", "OBC-2"]

            # a secret that cannot be read holds forwarding back (nothing sent unsigned or lost),
            # and it goes on once the secret is back
            (secrets_dir / name).unlink()
            run.service.ctx.secrets.clear()
            status, _ = await _post_qimen(run, _confirm(order["order_no"], "OBC-3"))
            assert status == 200
            await asyncio.sleep(1.0)
            assert len(run.sim.upstream_events()) == 2
            (secrets_dir / name).write_text(new, encoding="utf-8")
            run.service.ctx.secrets.clear()
            run.service.deliverer.poke("_upstream")
            await forwarded(3)
            assert run.sim.stats()["upstream"]["bad_signatures"] == 0

    asyncio.run(main())


# the config writes a moment with its offset: fixed offsets, to the minute, are that domain (a
# zone's local time in a DST gap has no single instant to compare with)
_OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@settings(max_examples=60, deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=_OFFSETS))
def test_until_is_read_as_the_same_moment_in_any_offset(moment: datetime) -> None:
    assert _previous({"secret": "S", "until": moment.isoformat()}).until == moment  # type: ignore[union-attr]
