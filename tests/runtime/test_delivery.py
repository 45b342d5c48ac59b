"""Idempotency tied to delivery, against a real HTTP server on localhost and a real SQLite store:
commit after a definite answer, release after a definite failure, in doubt when the outcome is
unknown, and the warehouse's duplicate rule deciding what happens next."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

import dockyard
from dockyard.runtime.delivery import UrllibTransport, Verdict, send_once
from dockyard.runtime.idempotency import Action, State
from dockyard.runtime.idempotency.sqlite import SqliteStore
from dockyard.runtime.request import PreparedRequest, build_request
from dockyard.runtime.secrets import MappingSecrets, Secrets

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "specs" / "qimen-deliveryorder-signed.yaml"
ORDER = json.loads((ROOT / "examples" / "orders" / "tmall-basic.json").read_text(encoding="utf-8"))
SECRETS = Secrets([MappingSecrets({"QIMEN_APP_SECRET": "s", "QIMEN_SM4_KEY": "0123456789abcdef"})])
NOW = datetime(2023, 11, 10, 16, 0, tzinfo=UTC)


class Warehouse(BaseHTTPRequestHandler):
    """Answers with whatever the test queued: (status, body, delay seconds)."""

    script: ClassVar[list[tuple[int, bytes, float]]] = []
    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Warehouse.received.append((self.path, body))
        status, answer, delay = Warehouse.script.pop(0) if Warehouse.script else (200, b"<response/>", 0.0)
        time.sleep(delay)
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:  # keep the test output clean
        return


@pytest.fixture
def server() -> Iterator[str]:
    Warehouse.script, Warehouse.received = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Warehouse)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore.from_url(f"sqlite:///{tmp_path / 'idem.db'}") as s:
        yield s


def prepare_for(host: str, order: dict[str, object] = ORDER) -> Callable[[str], PreparedRequest]:
    mapping = dockyard.compile_file(SPEC)
    ctx = {"host": host, "appKey": "k", "customerId": "c", "version": "2.0", "methodPrefix": "taobao.qimen.",
           "ownerCode": "O", "warehouseCode": "WH-1"}

    def prepare(request_id: str) -> PreparedRequest:
        prepared = build_request(mapping, order, context=ctx, clock=NOW, secrets=SECRETS, request_id=request_id)
        # The example spec is https; the local warehouse speaks plain http.
        wire = prepared.request
        plain = type(wire)(wire.method, wire.url.replace("https://", "http://", 1), wire.headers, wire.body)
        return type(prepared)(**{**prepared.__dict__, "request": plain})

    return prepare


def test_accepted_is_committed_and_a_repeat_is_not_sent(server: str, store: SqliteStore) -> None:
    prepare = prepare_for(server)
    first = send_once(prepare, store, UrllibTransport(), rule="skip")
    assert (first.action, first.state, first.verdict) == (Action.SEND, "committed", Verdict.ACCEPTED)
    second = send_once(prepare, store, UrllibTransport(), rule="skip")
    assert (second.action, second.state) == (Action.SKIP, "untouched")
    assert second.summary == first.summary
    assert len(Warehouse.received) == 1  # the warehouse saw the order once


def test_retryable_failure_releases_the_key(server: str, store: SqliteStore) -> None:
    Warehouse.script = [(503, b"busy", 0.0)]
    prepare = prepare_for(server)
    first = send_once(prepare, store, UrllibTransport(), rule="skip")
    assert (first.state, first.verdict) == ("released", Verdict.RETRY)
    assert store.get("TM20231111000123:WH-1") is None
    second = send_once(prepare, store, UrllibTransport(), rule="skip")
    assert second.state == "committed"
    assert len(Warehouse.received) == 2


def test_a_rejection_is_definite(server: str, store: SqliteStore) -> None:
    Warehouse.script = [(400, b"bad request", 0.0)]
    result = send_once(prepare_for(server), store, UrllibTransport(), rule="skip")
    assert (result.state, result.verdict) == ("committed", Verdict.REJECTED)


def test_timeout_is_in_doubt_and_skip_holds_it(server: str, store: SqliteStore) -> None:
    Warehouse.script = [(200, b"late", 1.0)]
    prepare = prepare_for(server)
    first = send_once(prepare, store, UrllibTransport(), rule="skip", timeout=0.2)
    assert first.state == "in_doubt"
    record = store.get("TM20231111000123:WH-1")
    assert record is not None and record.state is State.IN_DOUBT
    second = send_once(prepare, store, UrllibTransport(), rule="skip")
    assert second.action is Action.REFUSE  # held for an operator or a recovery query, never guessed
    time.sleep(1.0)
    assert len(Warehouse.received) == 1


def test_resend_reuses_the_recorded_request_id(server: str, store: SqliteStore) -> None:
    Warehouse.script = [(200, b"late", 1.0)]
    prepare = prepare_for(server)
    first = send_once(prepare, store, UrllibTransport(), rule="resend", timeout=0.2)
    assert first.state == "in_doubt"
    time.sleep(1.0)
    second = send_once(prepare, store, UrllibTransport(), rule="resend")
    assert (second.action, second.state) == (Action.SEND, "committed")
    assert second.request_id == first.request_id
    record = store.get("TM20231111000123:WH-1")
    assert record is not None and record.state is State.COMMITTED


def test_connection_refused_releases(store: SqliteStore) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again at once: nothing listens there
    result = send_once(prepare_for(f"127.0.0.1:{port}"), store, UrllibTransport(), rule="skip")
    assert result.state == "released"
    assert store.get("TM20231111000123:WH-1") is None


def test_a_changed_payload_under_the_same_key_is_refused(server: str, store: SqliteStore) -> None:
    send_once(prepare_for(server), store, UrllibTransport(), rule="skip")
    changed = {**ORDER, "remark": "another remark"}
    result = send_once(prepare_for(server, changed), store, UrllibTransport(), rule="skip")
    assert result.action is Action.REFUSE and "different payload" in result.reason
    assert len(Warehouse.received) == 1


def test_sf_in_doubt_recovery_queries_with_a_new_request_id(server: str, store: SqliteStore) -> None:
    """SF's rule is `query`: a create whose outcome is unknown is looked up with search-order, and
    SF refuses a requestID it has already seen (A1007). The recovery query must therefore go out
    with a new requestID, while the recorded one (the create's) is handed over beside it."""
    from urllib.parse import parse_qs

    from dockyard.runtime.signing import SF_MSGDIGEST, SignInput

    create = dockyard.compile_file(ROOT / "mappings" / "sf" / "create-order.yaml")
    search = dockyard.compile_file(ROOT / "mappings" / "sf" / "search-order.yaml")
    secrets = Secrets([MappingSecrets({"SF_CHECK_WORD": "TEST-ONLY-sf-check-word"})])

    def local(prepared: PreparedRequest) -> PreparedRequest:
        wire = prepared.request
        url = "http://" + server + "/std/service"
        return type(prepared)(**{**prepared.__dict__, "request": type(wire)(wire.method, url, wire.headers, wire.body)})

    def prepare(request_id: str) -> PreparedRequest:
        return local(build_request(create, ORDER, context=create.meta["examples"], clock=NOW, secrets=secrets,
                                   request_id=request_id))

    Warehouse.script = [(200, b"late", 1.0)]
    first = send_once(prepare, store, UrllibTransport(), rule="query", timeout=0.2)
    assert first.state == "in_doubt"
    time.sleep(1.0)
    second = send_once(prepare, store, UrllibTransport(), rule="query")
    assert (second.action, second.state) == (Action.QUERY, "untouched")
    assert second.recorded_request_id == first.request_id
    assert second.request_id is not None and second.request_id != first.request_id
    # The search request that recovers the order carries the new id, signed over what is sent.
    query = build_request(search, ORDER, context=search.meta["examples"], clock=NOW, secrets=secrets,
                          request_id=second.request_id)
    form = {k: v[0] for k, v in parse_qs(query.request.body.decode("utf-8")).items()}
    created = {k: v[0] for k, v in parse_qs(Warehouse.received[0][1].decode("utf-8")).items()}
    assert created["requestID"] == first.request_id
    assert form["requestID"] == second.request_id != created["requestID"]
    assert form["serviceCode"] == "EXP_RECE_SEARCH_ORDER_RESP"
    signed = SignInput({k: v for k, v in form.items() if k != "msgDigest"}, form["msgData"])
    SF_MSGDIGEST.verify(signed, form["msgDigest"], secrets.get("SF_CHECK_WORD"))
