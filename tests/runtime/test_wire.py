"""Per-warehouse wire settings: one spec, configured per warehouse within what it allows.

The library's QIMEN create spec lets a warehouse encrypt the receiver's contact fields; the JD
specs let an account set the md5-salt case; the Cainiao specs the digest form. These tests build
real requests with the real specs and check the bytes independently (the cipher and the digest
are recomputed from their definitions, not read back from Dockyard), and that everything a spec
does not allow, or a value its scheme or cipher does not know, is refused with every problem named.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import yaml
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

import dockyard
from dockyard.runtime.mapping import CompiledMapping
from dockyard.runtime.request import RequestError, build_request
from dockyard.runtime.secrets import MappingSecrets, Secrets
from dockyard.runtime.wire import FieldEncryption, WireError, WireSettings, split_config, unused_encryption

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "mappings"
ORDER = json.loads((ROOT / "examples" / "orders" / "tmall-basic.json").read_text(encoding="utf-8"))
NOW = datetime(2023, 11, 10, 16, 30, tzinfo=UTC)
SM4_KEY = "TEST-ONLY-sm4key"  # 16 bytes
SECRETS = Secrets([MappingSecrets({"QIMEN_APP_SECRET": "TEST-ONLY-qimen-secret", "QIMEN_SM4_KEY": SM4_KEY,
                                   "JD_LOP_APP_SECRET": "TEST-ONLY-jd", "CAINIAO_SECRET_KEY": "TEST-ONLY-cn"})])
MOBILE = {"encrypt": [{"path": "deliveryOrder.receiverInfo.mobile", "scheme": "sm4-ecb", "key": "QIMEN_SM4_KEY",
                       "options": {"encoding": "base64"}}]}


def compiled(rel: str) -> CompiledMapping:
    return dockyard.compile_file(MAPPINGS / rel)


def sm4_ecb_b64(text: str, key: bytes = SM4_KEY.encode()) -> str:
    """SM4-ECB, PKCS7, Base64, with the `cryptography` library directly (not Dockyard's cipher)."""
    padder = padding.PKCS7(128).padder()
    data = padder.update(text.encode()) + padder.finalize()
    enc = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
    return base64.b64encode(enc.update(data) + enc.finalize()).decode()


def qimen(wire: WireSettings | None) -> Any:
    mapping = compiled("qimen/deliveryorder.create.yaml")
    return build_request(mapping, ORDER, context=mapping.meta["examples"], clock=NOW, secrets=SECRETS,
                         request_id="r1", wire=wire)


def test_one_qimen_spec_encrypts_the_mobile_for_the_warehouse_that_asks() -> None:
    clear = qimen(None)
    acme = qimen(WireSettings.parse(MOBILE))
    mobile = etree.fromstring(acme.request.body).findtext("deliveryOrder/receiverInfo/mobile")
    assert mobile == sm4_ecb_b64(ORDER["receiver"]["mobile"]) == "z7FJ9FW1/q6ms8A+RhEHuQ=="
    assert etree.fromstring(clear.request.body).findtext("deliveryOrder/receiverInfo/mobile") == "139****0366"
    # Everything else is the same document; the payload (its fingerprint) is the same order.
    assert clear.request.body.replace(b"139****0366", mobile.encode()) == acme.request.body
    assert clear.fingerprint == acme.fingerprint
    # The signature covers the ciphertext that is sent (recomputed from the QIMEN rule).
    query = dict(parse_qsl(urlsplit(acme.request.url).query))
    sign = query.pop("sign")
    text = "TEST-ONLY-qimen-secret" + "".join(k + v for k, v in sorted(query.items())) \
        + acme.request.body.decode() + "TEST-ONLY-qimen-secret"
    assert sign == hashlib.md5(text.encode()).hexdigest().upper() == acme.signature != clear.signature
    assert acme.notes == ("encrypt deliveryOrder.receiverInfo.mobile with sm4-ecb (key QIMEN_SM4_KEY; "
                          "from the warehouse config)",)
    assert acme.as_dict()["wire"] == list(acme.notes) and "wire" not in clear.as_dict()


def test_the_example_acme_config_file_is_what_the_pinned_test_uses() -> None:
    data = yaml.safe_load((MAPPINGS / "qimen/warehouses/acme-3pl.yaml").read_text(encoding="utf-8"))
    context, wire = split_config(data, "acme-3pl.yaml")
    assert "wire" not in context and context["version"] == "3.0"
    mapping = compiled("qimen/deliveryorder.create.yaml")
    prepared = build_request(mapping, ORDER, context=context, clock=NOW, secrets=SECRETS, request_id="r-tmall-1",
                             wire=wire)
    # The signature pinned in deliveryorder.create.acme-3pl.test.yaml (and before it, by the SM4 spec copy).
    assert prepared.signature == "82EAA75FC62603234AA268DCBBB3A556"


def test_a_field_the_spec_does_not_have_is_left_aside_with_a_note() -> None:
    # A warehouse's config serves all its flows: the cancel has no receiver, so nothing is encrypted there.
    cancel = compiled("qimen/order.cancel.yaml")
    wire = WireSettings.parse(MOBILE)
    prepared = build_request(cancel, ORDER, context=cancel.meta["examples"], clock=NOW, secrets=SECRETS,
                             request_id="r1", wire=wire)
    plain = build_request(cancel, ORDER, context=cancel.meta["examples"], clock=NOW, secrets=SECRETS,
                          request_id="r1")
    assert prepared.request == plain.request
    assert prepared.notes == ("encrypt deliveryOrder.receiverInfo.mobile: not applied, the spec does not offer it "
                              "(it lets a warehouse encrypt: none)",)
    assert unused_encryption(wire, [cancel.meta["request"]]) == ["deliveryOrder.receiverInfo.mobile"]
    create = compiled("qimen/deliveryorder.create.yaml")
    assert unused_encryption(wire, [cancel.meta["request"], create.meta["request"]]) == []


def test_jd_case_and_cainiao_digest_are_per_warehouse() -> None:
    jd = compiled("jd/create-order.yaml")
    lower = build_request(jd, ORDER, context=jd.meta["examples"], clock=NOW, secrets=SECRETS, request_id="r")
    upper = build_request(jd, ORDER, context=jd.meta["examples"], clock=NOW, secrets=SECRETS, request_id="r",
                          wire=WireSettings.parse({"sign": {"case": "upper"}}))
    assert lower.signature is not None and lower.signature == lower.signature.lower()
    assert upper.signature == lower.signature.upper()
    assert "sign=" + upper.signature in upper.request.url

    cn = compiled("cainiao/order-cancel-notify.yaml")
    hexed = build_request(cn, ORDER, context=cn.meta["examples"], clock=NOW, secrets=SECRETS, request_id="r",
                          wire=WireSettings.parse({"sign": {"digest": "hex"}}))
    form = {k: v[0] for k, v in parse_qs(hexed.request.body.decode()).items()}
    md5 = hashlib.md5((form["logistics_interface"] + "TEST-ONLY-cn").encode())
    assert form["data_digest"] == base64.b64encode(md5.hexdigest().encode()).decode()


@pytest.mark.parametrize(("rel", "wire", "problems"), [
    ("qimen/deliveryorder.create.yaml", {"sign": {"case": "upper"}},
     ["qimen.deliveryorder.create: wire.sign.case: the spec does not let a warehouse set this option of "
      "qimen-md5 (it allows: none)"]),
    ("jd/create-order.yaml", {"sign": {"case": "UPPER"}},
     ["jd.create-order: wire.sign: jd-lop-md5-salt: option case='UPPER' must be one of lower, upper"]),
    ("qimen/deliveryorder.create.yaml",
     {"encrypt": [{"path": "deliveryOrder.receiverInfo.mobile", "scheme": "rot13", "key": "K"},
                  {"path": "deliveryOrder.receiverInfo.tel", "scheme": "sm4-ecb", "key": "K",
                   "options": {"encoding": "base32"}}]},
     ["qimen.deliveryorder.create: wire.encrypt deliveryOrder.receiverInfo.mobile: no crypto policy named 'rot13'",
      "qimen.deliveryorder.create: wire.encrypt deliveryOrder.receiverInfo.tel: sm4-ecb: option encoding must be "
      "one of base64, hex, not 'base32'"]),
    ("sf/create-order.yaml", {"sign": {"timestamp_param": "ts"}},
     ["sf.create-order: wire.sign.timestamp_param: the spec does not let a warehouse set this option of "
      "sf-msgdigest (it allows: none)"]),
], ids=["not-configurable", "unknown-value", "cipher-problems", "sf-none"])
def test_what_a_spec_does_not_allow_is_refused_naming_every_problem(rel: str, wire: dict[str, Any],
                                                                    problems: list[str]) -> None:
    mapping = compiled(rel)
    settings_ = WireSettings.parse(wire)
    with pytest.raises(WireError) as info:
        settings_.apply(mapping.meta["request"], mapping.name)
    assert [p.split(" (known:")[0] if "crypto policy" in p else p for p in info.value.problems] == problems
    with pytest.raises(RequestError, match="the warehouse's wire settings do not fit"):
        build_request(mapping, ORDER, context=mapping.meta["examples"], clock=NOW, secrets=SECRETS, wire=settings_)


def test_a_spec_that_encrypts_a_field_itself_is_not_asked_twice() -> None:
    meta = {"sign": None, "encrypt": [{"path": "a.b", "scheme": "sm4-ecb", "key": "K", "options": {}}],
            "encryptable": [{"path": "a.c", "schemes": ["aes-gcm"]}]}
    wire = WireSettings.parse({"encrypt": [{"path": "a.b", "scheme": "sm4-ecb", "key": "K"},
                                           {"path": "a.c", "scheme": "sm4-ecb", "key": "K"}]})
    with pytest.raises(WireError) as info:
        wire.apply(meta, "m")
    assert info.value.problems == ("m: wire.encrypt a.b: the spec already encrypts this field itself",
                                   "m: wire.encrypt a.c: the spec allows the ciphers aes-gcm, not 'sm4-ecb'")
    assert WireSettings.parse({"sign": {"x": 1}}).describe() == ["sign option x=1"]
    with pytest.raises(WireError, match="the spec signs nothing"):
        WireSettings.parse({"sign": {"x": 1}}).apply(meta, "m")


def test_applying_is_worked_out_once_per_mapping() -> None:
    mapping = compiled("qimen/deliveryorder.create.yaml")
    wire = WireSettings.parse(MOBILE)
    first = wire.apply(mapping.meta["request"], mapping.name)
    assert wire.apply(mapping.meta["request"], mapping.name) is first
    assert first.meta is not mapping.meta["request"]  # the spec's own section is never changed
    assert mapping.meta["request"]["encrypt"] == []
    assert WireSettings.parse(MOBILE) == wire and hash(WireSettings.parse(MOBILE)) == hash(wire)
    assert not WireSettings() and WireSettings.parse(None) == WireSettings()


def test_parse_reads_numbers_and_booleans_as_the_text_they_stand_for() -> None:
    wire = WireSettings.parse({"sign": {"a": True, "b": 3, "c": 1.5},
                               "encrypt": [{"path": "x[].y", "scheme": "aes-gcm", "key": "K.1",
                                            "options": {"aad": False}}]})
    assert wire.sign == (("a", "true"), ("b", "3"), ("c", "1.5"))
    assert wire.encrypt == (FieldEncryption("x[].y", "aes-gcm", "K.1", (("aad", "false"),)),)


# Hostile config data is a class: whatever YAML can hold, parse answers WireSettings or WireError.
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12))
_yaml_data = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(
        ["sign", "encrypt", "path", "scheme", "key", "options"])), inner, max_size=5)), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(_yaml_data)
def test_any_yaml_value_parses_or_is_refused_with_reasons(data: object) -> None:
    try:
        wire = WireSettings.parse(data)
    except WireError as exc:
        assert exc.problems and all(isinstance(p, str) and p.startswith("wire") for p in exc.problems)
        return
    assert isinstance(wire, WireSettings)
    mapping = compiled("qimen/deliveryorder.create.yaml")
    try:
        wire.apply(mapping.meta["request"], mapping.name)
    except WireError as exc:
        assert all(p.startswith("qimen.deliveryorder.create: wire") for p in exc.problems)
