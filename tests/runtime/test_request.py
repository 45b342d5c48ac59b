"""The wire request end to end: the signature is computed over exactly what is sent (checked
here by recomputing it independently from the algorithm text), encrypted fields decrypt back,
config placeholders fill the URL, and dry-run --json carries the request."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from click.testing import CliRunner
from lxml import etree

import dockyard
from dockyard.cli import main
from dockyard.runtime.fieldcrypto import get_cipher
from dockyard.runtime.request import PreparedRequest, RequestError, build_request, encrypt_fields, fill_url
from dockyard.runtime.secrets import MappingSecrets, Secret, SecretError, Secrets

ROOT = Path(__file__).resolve().parents[2]
QIMEN = ROOT / "examples" / "specs" / "qimen-deliveryorder-signed.yaml"
SF = ROOT / "examples" / "specs" / "sf-create-signed.yaml"
ORDER = json.loads((ROOT / "examples" / "orders" / "tmall-basic.json").read_text(encoding="utf-8"))
NOW = datetime(2023, 11, 10, 16, 0, tzinfo=UTC)  # 2023-11-11 00:00:00 in Shanghai
CTX = {"host": "wms.test", "appKey": "k1", "customerId": "C9", "version": "2.0", "methodPrefix": "taobao.qimen.",
       "ownerCode": "O1", "warehouseCode": "WH-1"}
SECRETS = {"QIMEN_APP_SECRET": "s3cr3t-qimen", "QIMEN_SM4_KEY": "0123456789abcdef", "SF_CHECK_WORD": "cw~ *x"}


def secrets() -> Secrets:
    return Secrets([MappingSecrets(SECRETS)])


def java_urlencode(text: str) -> str:
    # Java's URLEncoder, written out from its documentation: keep [A-Za-z0-9.-*_], space → +. Python's
    # quote() always keeps "~", which Java encodes.
    return quote(text, safe=".-*_").replace("~", "%7E").replace("%20", "+")


def test_qimen_signature_is_over_the_exact_query_and_body() -> None:
    mapping = dockyard.compile_file(QIMEN)
    prepared = build_request(mapping, ORDER, context=CTX, clock=NOW, secrets=secrets(), request_id="r1")
    url = urlsplit(prepared.request.url)
    assert (url.scheme, url.netloc, url.path) == ("https", "wms.test", "/router/qimen/service")
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    assert query["method"] == "taobao.qimen.deliveryorder.create"
    assert query["timestamp"] == "2023-11-11 00:00:00"
    sent_sign = query.pop("sign")
    text = "s3cr3t-qimen" + "".join(k + v for k, v in sorted(query.items())) + prepared.request.body.decode() \
        + "s3cr3t-qimen"
    assert sent_sign == hashlib.md5(text.encode("utf-8")).hexdigest().upper() == prepared.signature
    assert prepared.request.header("Content-Type") == "text/xml;charset=utf-8"
    assert prepared.idempotency_key == "TM20231111000123:WH-1"


def test_encrypted_mobile_decrypts_to_the_original() -> None:
    mapping = dockyard.compile_file(QIMEN)
    prepared = build_request(mapping, ORDER, context=CTX, clock=NOW, secrets=secrets(), request_id="r1")
    root = etree.fromstring(prepared.request.body)
    cipher_text = root.findtext("deliveryOrder/receiverInfo/mobile")
    assert cipher_text is not None and cipher_text != ORDER["receiver"]["mobile"]
    plain = get_cipher("sm4-ecb").decrypt(cipher_text, Secret("k", SECRETS["QIMEN_SM4_KEY"]), {"encoding": "base64"})
    assert plain == ORDER["receiver"]["mobile"]


def test_fingerprint_is_the_document_before_encryption() -> None:
    mapping = dockyard.compile_file(QIMEN)
    one = build_request(mapping, ORDER, context=CTX, clock=NOW, secrets=secrets(), request_id="a")
    other_key = Secrets([MappingSecrets({**SECRETS, "QIMEN_SM4_KEY": "fedcba9876543210"})])
    two = build_request(mapping, ORDER, context=CTX, clock=NOW, secrets=other_key, request_id="b")
    assert one.fingerprint == two.fingerprint  # same payload, whatever the key or request id
    changed = {**ORDER, "remark": "changed"}
    three = build_request(mapping, changed, context=CTX, clock=NOW, secrets=secrets(), request_id="a")
    assert three.fingerprint != one.fingerprint


def test_sf_digest_is_over_msgdata_timestamp_and_checkword() -> None:
    mapping = dockyard.compile_file(SF)
    prepared = build_request(mapping, ORDER, context={"host": "sf.test", "partnerId": "P1", "monthlyCard": "1"},
                             clock=NOW, secrets=secrets(), request_id="req-7")
    form = dict(parse_qsl(prepared.request.body.decode(), keep_blank_values=True))
    assert form["requestID"] == "req-7"
    assert form["timestamp"] == "1699632000000"
    msg = json.loads(form["msgData"])
    assert msg["orderId"] == "TM20231111000123" and msg["cargoDetails"][0]["amount"] == "143.10"
    expected = base64.b64encode(hashlib.md5(java_urlencode(form["msgData"] + form["timestamp"] + "cw~ *x")
                                            .encode("utf-8")).digest()).decode()
    assert form["msgDigest"] == expected == prepared.signature
    assert prepared.request.header("Content-Type") == "application/x-www-form-urlencoded;charset=utf-8"


def test_missing_secret_names_it() -> None:
    mapping = dockyard.compile_file(SF)
    with pytest.raises(SecretError, match="SF_CHECK_WORD"):
        build_request(mapping, ORDER, context={"host": "h", "partnerId": "P", "monthlyCard": "1"}, clock=NOW,
                      secrets=Secrets([MappingSecrets({})]))


@pytest.mark.parametrize("value", ["", "a b", "evil.com/\n", None])
def test_url_placeholders_refuse_unusable_values(value: str | None) -> None:
    with pytest.raises(RequestError, match="host"):
        fill_url("https://{host}/x", {"host": value})


def test_url_placeholders_never_reach_attributes() -> None:
    # Filled by hand, not str.format: "{host.__class__}" is not a placeholder at all.
    assert fill_url("https://{host.__class__}/{host}", {"host": "h"}) == "https://{host.__class__}/h"


def test_encrypt_fields_walks_lists() -> None:
    doc = {"lines": [{"m": "1"}, {"m": "2"}, {}], "x": {"m": "3"}}
    assert encrypt_fields(doc, "lines[].m", lambda t: "<" + t + ">") == 2
    assert doc == {"lines": [{"m": "<1>"}, {"m": "<2>"}, {}], "x": {"m": "3"}}


def test_dry_run_json_has_the_request_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    order = str(ROOT / "examples/orders/tmall-basic.json")
    result = CliRunner().invoke(main, ["dry-run", "--json", "--test-secrets", "--now", "2023-11-11T00:00:00+08:00",
                                       "--request-id", "r-1", str(QIMEN), order])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"method", "url", "headers", "body", "idempotency_key"} <= set(data)
    assert data["method"] == "POST" and data["url"].startswith("https://wms.example.com/")
    assert data["body"].startswith("<?xml")
    assert "TEST-ONLY" not in result.stdout  # the test secret itself is not shown either


def test_check_reports_unknown_policies_and_paths(tmp_path: Path) -> None:
    spec = QIMEN.read_text(encoding="utf-8").replace("scheme: qimen-md5", "scheme: qimen-mdd5").replace(
        "path: deliveryOrder.receiverInfo.mobile", "path: deliveryOrder.receiverInfo.mobil").replace(
        'url: "https://{host}/router/qimen/service"', 'url: "https://{hots}/router/qimen/service"')
    path = tmp_path / "bad.yaml"
    path.write_text(spec, encoding="utf-8")
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 1
    assert "qimen-mdd5" in result.stderr
    assert "deliveryOrder.receiverInfo.mobil" in result.stderr
    assert "{hots}" in result.stderr and "did you mean 'host'" in result.stderr


def test_dry_run_reads_the_store_without_changing_it(tmp_path: Path) -> None:
    from dockyard.runtime.idempotency import open_store

    url = f"sqlite:///{tmp_path / 'idem.db'}"
    order = str(ROOT / "examples/orders/tmall-basic.json")
    args = ["dry-run", "--test-secrets", "--now", "2023-11-11T00:00:00+08:00", "--request-id", "r-1",
            "--store", url, str(QIMEN), order]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.stderr
    assert "store: new" in first.stdout
    mapping = dockyard.compile_file(QIMEN)
    ctx = {**mapping.meta["examples"]}
    prepared = build_request(mapping, ORDER, context=ctx, clock=NOW,
                             secrets=Secrets([MappingSecrets({"QIMEN_APP_SECRET": "x", "QIMEN_SM4_KEY": "0" * 16})]))
    with open_store(url) as store:
        assert store.get(prepared.idempotency_key or "") is None  # the dry-run reserved nothing
        store.reserve(prepared.idempotency_key or "", prepared.fingerprint, owner="o", request_id="r", ttl=None)
        store.commit(prepared.idempotency_key or "", "o", {"status": 200})
    again = CliRunner().invoke(main, args)
    assert "duplicate (already delivered)" in again.stdout
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps({**ORDER, "remark": "changed"}, ensure_ascii=False), encoding="utf-8")
    conflict = CliRunner().invoke(main, [*args[:-1], str(changed)])
    assert "conflict" in conflict.stdout



def _lop_md5(secret: str, query: dict[str, str], path: str, body: str) -> str:
    # md5-salt written out from the algorithm text (docs/signing.md), not Dockyard's signer.
    text = (secret + "access_token" + query["access_token"] + "app_key" + query["app_key"] + "method" + path
            + "param_json" + body + "timestamp" + query["timestamp"] + "v" + query["v"] + secret)
    return hashlib.md5(text.encode("utf-8")).hexdigest()


JD_CTX = {"host": "api.test", "lopDn": "ECAP", "appKey": "ak", "accessToken": "tk", "customerCode": "C1",
          "timestampMillis": False}
JD_SECRETS = Secrets([MappingSecrets({"JD_LOP_APP_SECRET": "jd-secret"})])


def _signed_path_is(prepared: PreparedRequest, path: str) -> None:
    query = dict(parse_qsl(urlsplit(prepared.request.url).query, keep_blank_values=True))
    assert query.pop("sign") == _lop_md5("jd-secret", query, path, prepared.request.body.decode()) \
        == prepared.signature


@pytest.mark.parametrize("path", ["/ecap/v1/orders/status/get", "/ecap/v2/x/y"])
def test_lop_signs_the_url_path_when_the_spec_names_none(path: str) -> None:
    # jd/query-order.yaml: url "https://{host}{queryPath}" and no `path` option.
    mapping = dockyard.compile_file(ROOT / "mappings" / "jd" / "query-order.yaml")
    prepared = build_request(mapping, ORDER, context={**JD_CTX, "queryPath": path}, clock=NOW, secrets=JD_SECRETS)
    assert urlsplit(prepared.request.url).path == path
    _signed_path_is(prepared, path)


def test_lop_path_option_given_by_the_spec_wins_over_the_url() -> None:
    # A spec that names its path is signed with it, whatever the URL says (here they differ on purpose).
    spec = ROOT / "mappings" / "jd" / "cancel-order.yaml"
    text = spec.read_text(encoding="utf-8").replace('url: "https://{host}/ecap/v1/orders/cancel"',
                                                    'url: "https://{host}/elsewhere"')
    assert "/elsewhere" in text
    mapping = dockyard.compile_file(spec, text)
    prepared = build_request(mapping, ORDER, context=JD_CTX, clock=NOW, secrets=JD_SECRETS)
    assert urlsplit(prepared.request.url).path == "/elsewhere"
    _signed_path_is(prepared, "/ecap/v1/orders/cancel")
