"""Tests of dockyard.runtime.signing and the `dockyard sign` command.

Every expected signature here is computed from the algorithm text in
shared/domain/warehouse-protocols.md, with the signed text typed out by hand and hashlib/hmac/base64
applied step by step, never by calling the code under test. A few are also pinned as constants that
were computed once with openssl from the same hand-typed texts, so a mistake made identically in
the code and in a test's own computation is still caught.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote_plus, unquote_plus

import click
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.runtime.plugins import PluginError, available
from dockyard.runtime.secrets import Secret
from dockyard.runtime.signing import (
    CAINIAO_LINK,
    HMAC_SHA256_HEADER,
    JD_JOS,
    JD_LOP_HMAC_MD5,
    JD_LOP_HMAC_SHA1,
    JD_LOP_HMAC_SHA256,
    JD_LOP_HMAC_SHA512,
    JD_LOP_MD5_SALT,
    MASK,
    QIMEN_HMAC,
    QIMEN_HMAC_SHA256,
    QIMEN_MD5,
    SF_MSGDIGEST,
    SIGNERS,
    ReplayError,
    SignatureError,
    Signer,
    SignInput,
    SignInputError,
    get_signer,
    java_urlencode,
    signer_names,
)
from dockyard.sign_cli import sign

# No example database: the tests must not leave a .hypothesis folder in the repository.
PROPERTY = settings(database=None, max_examples=300, deadline=None)

CST = timezone(timedelta(hours=8))
NOW = datetime(2023, 11, 11, 0, 0, 0, tzinfo=CST)

QIMEN_SECRET = "TEST-ONLY-qimen-secret"
SF_CHECKWORD = "TEST-ONLY-checkword"
JOS_SECRET = "TEST-ONLY-jos-secret"
LOP_SECRET = "TEST-ONLY-lop-secret"
CAINIAO_SECRET = "TEST-ONLY-cainiao-secret"
HEADER_SECRET = "TEST-ONLY-header-secret"

QIMEN_BODY = "<request><remark>不要发票</remark></request>"
SF_MSGDATA = '{"orderId":"DY-001","remark":"顺丰 *~ 到付"}'
JOS_JSON = '{"orderNo":"DY-001","备注":"不要发票"}'
LOP_BODY = '[{"orderId":"DY-001","remark":"不要发票"}]'
CAINIAO_BODY = '{"orderCode":"DY-001","remark":"不要发票"}'
HEADER_BODY = '{"orderNo":"DY-001","remark":"不要发票"}'

# Pinned with openssl (`openssl dgst -md5|-sha256 [-hmac KEY]`, `base64`) over the hand-typed texts
# of the vector tests below.
PIN_QIMEN_MD5 = "5E8519060B3C3DF37D5052954216F583"
PIN_QIMEN_HMAC = "4CE158FDAC51D6DFED7CF7DF03C2A221"
PIN_QIMEN_HMAC_SHA256 = "808E1C784B97FD8F63C7204B665914E67D8250075D4B0E09CFF515A5E08A45CA"
PIN_SF = "/YTyUWanZ/McFcIxrQh4mg=="
PIN_JOS = "07371DE4AF2DB87FD76BDA42BDC6012D"
PIN_LOP_MD5 = "631046015810a848fdb221e359006059"
# The LOP HMAC pins sign the SAME secret-wrapped text as md5-salt (JD's SDK builds the content once
# and passes it to every algorithm: docs/signing.md cites the sources). Computed with
# `openssl dgst -sha256|-md5|-sha1|-sha512 -hmac KEY -binary | base64` over that text.
PIN_LOP_HMAC = {
    "sha256": "BGItSK7wY2XPmlDeJ1nMxYX7OZfx0tIbCbytJocU7WY=",
    "md5": "7lNAWwM4VwCxFXqHQBFkug==",
    "sha1": "RYIe3M5W5NTH8kbyylRllAedvqM=",
    "sha512": "fTb1w8x8eGr4jFMo9s06yf0tOxmVEScFSarT3OSRQlEfb150V+RzU8wUCTkx53A+ZIa8PHEFDgve5MxkTK3jQg==",
}
# What the HMAC variants gave before they wrapped the secret (HMAC over the bare fields): a
# signature JD's gateway would not accept. Kept to show the fix changes the bytes.
UNWRAPPED_LOP_HMAC_SHA256 = "rEBDKstWw3L+ylNx1zusDTnsxiNXg4dWXhqQ8opUV8k="
PIN_CAINIAO_RAW = "8x/iOi/8lwd97ehrbUHNDg=="
PIN_CAINIAO_HEX = "ZjMxZmUyM2EyZmZjOTcwNzdkZWRlODZiNmQ0MWNkMGU="
PIN_HEADER_HEX = "a9eb003110cd40f509672d8143c26935ba695c6d141954b45abebbd3152219bc"
PIN_HEADER_B64 = "qesAMRDNQPUJZy2BQ8JpNbppXG0UGVS0Wr670xUiGbw="


def secret(value: str) -> Secret:
    return Secret("SIGN_SECRET", value)


def qimen_params(timestamp: str = "2023-11-11 00:00:00", sign_method: str = "md5") -> dict[str, str]:
    # In the order a spec might list them; the signer sorts.
    return {"method": "taobao.qimen.deliveryorder.create", "timestamp": timestamp, "format": "xml",
            "app_key": "12345678", "v": "2.0", "sign_method": sign_method, "customerId": "C001"}


def jos_params(timestamp: str = "2023-11-11 00:00:00") -> dict[str, str]:
    return {"method": "jingdong.eclp.order.addOrder", "app_key": "KEY1", "access_token": "TOK",
            "timestamp": timestamp, "v": "2.0", "360buy_param_json": JOS_JSON}


def lop_params(timestamp: str = "2023-11-11 00:00:00.123", algorithm: str = "md5-salt") -> dict[str, str]:
    return {"LOP-DN": "ECAP", "app_key": "KEY1", "access_token": "TOK", "timestamp": timestamp, "v": "2.0",
            "method": "/ecap/v1/orders/create", "algorithm": algorithm}


# ---------------------------------------------------------------------------------------------
# Java's URLEncoder


def test_java_urlencode_keeps_star_and_encodes_tilde() -> None:
    assert java_urlencode("a b*~c.-_") == "a+b*%7Ec.-_"
    # Python's quote_plus does the opposite on both: this is why SF needs its own encoder.
    assert quote_plus("a b*~c.-_") == "a+b%2A~c.-_"


def test_java_urlencode_percent_encodes_utf8_bytes_in_uppercase() -> None:
    assert java_urlencode("顺丰") == "%E9%A1%BA%E4%B8%B0"
    assert java_urlencode("不要发票") == "%E4%B8%8D%E8%A6%81%E5%8F%91%E7%A5%A8"
    assert java_urlencode("é") == "%C3%A9"  # only ASCII letters stay as they are
    assert java_urlencode("😀") == "%F0%9F%98%80"  # one code point, four bytes
    assert java_urlencode("\n\t") == "%0A%09"


def _java_urlencode_by_the_book(text: str) -> str:
    """URLEncoder's rule written out byte by byte, the reference for the fast version."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if byte < 0x80 and (ch.isalnum() or ch in ".-*_"):
            out.append(ch)
        elif ch == " ":
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


@PROPERTY
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_java_urlencode_agrees_with_urlencoders_rule_on_any_text(text: str) -> None:
    assert java_urlencode(text) == _java_urlencode_by_the_book(text)


def test_java_urlencode_reserved_and_punctuation() -> None:
    assert java_urlencode("AZaz09") == "AZaz09"
    assert java_urlencode("!'()") == "%21%27%28%29"
    assert java_urlencode("/:?&=+%#") == "%2F%3A%3F%26%3D%2B%25%23"
    assert java_urlencode('{"a":1}') == "%7B%22a%22%3A1%7D"
    assert java_urlencode("") == ""


@PROPERTY
@given(st.text())
def test_java_urlencode_round_trips_and_uses_only_safe_characters(text: str) -> None:
    encoded = java_urlencode(text)
    assert unquote_plus(encoded) == text
    safe = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-*_+%")
    assert set(encoded) <= safe


# ---------------------------------------------------------------------------------------------
# Vectors, one scheme at a time


def test_qimen_md5_vector_with_cjk_body() -> None:
    # Sorted by key in byte order: app_key, customerId, format, method, sign_method, timestamp, v.
    pairs = ("app_key12345678" "customerIdC001" "formatxml" "methodtaobao.qimen.deliveryorder.create"
             "sign_methodmd5" "timestamp2023-11-11 00:00:00" "v2.0")
    text = QIMEN_SECRET + pairs + QIMEN_BODY + QIMEN_SECRET
    expected = hashlib.md5(text.encode("utf-8")).hexdigest().upper()
    assert expected == PIN_QIMEN_MD5
    inp = SignInput(qimen_params(), QIMEN_BODY)
    assert QIMEN_MD5.text(inp, QIMEN_SECRET) == text
    assert QIMEN_MD5.sign(inp, secret(QIMEN_SECRET)) == expected


def test_qimen_hmac_vectors() -> None:
    pairs = ("app_key12345678" "customerIdC001" "formatxml" "methodtaobao.qimen.deliveryorder.create"
             "sign_methodhmac" "timestamp2023-11-11 00:00:00" "v2.0")
    text = pairs + QIMEN_BODY  # no secret wrap: the secret is the HMAC key
    expected = hmac.new(QIMEN_SECRET.encode("utf-8"), text.encode("utf-8"), hashlib.md5).hexdigest().upper()
    inp = SignInput(qimen_params(sign_method="hmac"), QIMEN_BODY)
    assert QIMEN_HMAC.text(inp, QIMEN_SECRET) == text
    assert QIMEN_HMAC.sign(inp, secret(QIMEN_SECRET)) == expected
    assert len(expected) == 32

    pairs256 = pairs.replace("sign_methodhmac", "sign_methodhmac-sha256")
    text256 = pairs256 + QIMEN_BODY
    expected256 = hmac.new(QIMEN_SECRET.encode("utf-8"), text256.encode("utf-8"), hashlib.sha256).hexdigest().upper()
    inp256 = SignInput(qimen_params(sign_method="hmac-sha256"), QIMEN_BODY)
    assert QIMEN_HMAC_SHA256.sign(inp256, secret(QIMEN_SECRET)) == expected256
    assert len(expected256) == 64


def test_qimen_hmac_pins() -> None:
    # The pins were computed over the md5 parameter set (sign_method=md5) with HMAC, to share the text.
    inp = SignInput(qimen_params(), QIMEN_BODY)
    assert QIMEN_HMAC.sign(inp, secret(QIMEN_SECRET)) == PIN_QIMEN_HMAC
    assert QIMEN_HMAC_SHA256.sign(inp, secret(QIMEN_SECRET)) == PIN_QIMEN_HMAC_SHA256


def test_qimen_sort_is_byte_order_case_and_digits_first() -> None:
    params = {"format": "f", "a9": "x", "customerId": "c", "a10": "y", "A1": "z", "_u": "u", "9k": "d"}
    # Byte order: '9' (0x39) < 'A' (0x41) < '_' (0x5F) < 'a' (0x61); "a10" < "a9" because '1' < '9';
    # "customerId" before "format" because 'c' < 'f' — no case folding, no natural number order.
    text = "S" + "9kd" + "A1z" + "_uu" + "a10y" + "a9x" + "customerIdc" + "formatf" + "<b/>" + "S"
    expected = hashlib.md5(text.encode("utf-8")).hexdigest().upper()
    inp = SignInput(params, "<b/>")
    assert QIMEN_MD5.text(inp, "S") == text
    assert QIMEN_MD5.sign(inp, secret("S")) == expected
    # The order the parameters arrive in does not matter.
    assert QIMEN_MD5.sign(SignInput(dict(reversed(list(params.items()))), "<b/>"), secret("S")) == expected


def test_qimen_skips_empty_parameters() -> None:
    base = SignInput(qimen_params(), QIMEN_BODY)
    with_empty = SignInput({**qimen_params(), "buyerNick": "", "": "orphan"}, QIMEN_BODY)
    for signer in (QIMEN_MD5, QIMEN_HMAC, QIMEN_HMAC_SHA256):
        assert signer.sign(with_empty, secret(QIMEN_SECRET)) == signer.sign(base, secret(QIMEN_SECRET))
        assert "buyerNick" not in signer.describe(with_empty) and "orphan" not in signer.describe(with_empty)
    assert QIMEN_MD5.sign(with_empty, secret(QIMEN_SECRET)) == PIN_QIMEN_MD5


def test_qimen_compares_case_sensitively() -> None:
    inp = SignInput(qimen_params(), QIMEN_BODY)
    QIMEN_MD5.verify(inp, PIN_QIMEN_MD5, secret(QIMEN_SECRET))
    with pytest.raises(SignatureError):
        QIMEN_MD5.verify(inp, PIN_QIMEN_MD5.lower(), secret(QIMEN_SECRET))


def test_sf_vector_with_cjk_star_tilde_and_spaces() -> None:
    raw = SF_MSGDATA + "1699632000000" + SF_CHECKWORD
    # URLEncoder.encode(raw, "UTF-8"), typed out: { " : , } and ~ percent-encoded, * kept, space → +,
    # 顺 丰 到 付 as their UTF-8 bytes, the checkWord's hyphens kept.
    encoded = ("%7B%22orderId%22%3A%22DY-001%22%2C%22remark%22%3A%22"
               "%E9%A1%BA%E4%B8%B0+*%7E+%E5%88%B0%E4%BB%98%22%7D" "1699632000000" "TEST-ONLY-checkword")
    assert java_urlencode(raw) == encoded
    digest = hashlib.md5(encoded.encode("utf-8")).digest()
    expected = base64.b64encode(digest).decode("ascii")
    assert expected == PIN_SF and len(expected) == 24
    inp = SignInput({"partnerID": "P1", "requestID": "r-1", "serviceCode": "EXP_RECE_CREATE_ORDER",
                     "timestamp": "1699632000000", "msgData": SF_MSGDATA}, SF_MSGDATA)
    assert SF_MSGDIGEST.text(inp, SF_CHECKWORD) == raw  # before URL-encoding
    assert SF_MSGDIGEST.sign(inp, secret(SF_CHECKWORD)) == expected
    # What Python's quote_plus would give is a different (wrong) digest.
    wrong = base64.b64encode(hashlib.md5(quote_plus(raw).encode("utf-8")).digest()).decode("ascii")
    assert wrong != expected
    described = SF_MSGDIGEST.describe(inp)
    assert encoded.replace(SF_CHECKWORD, MASK) in described and "URL" in described


def test_sf_timestamp_param_option() -> None:
    inp = SignInput({"ts": "1699632000"}, "x", {"timestamp_param": "ts"})
    text = "x" + "1699632000" + "k-ey"
    expected = base64.b64encode(hashlib.md5(text.encode("utf-8")).digest()).decode("ascii")  # nothing to encode
    assert SF_MSGDIGEST.sign(inp, secret("k-ey")) == expected
    with pytest.raises(SignInputError, match="timestamp"):
        SF_MSGDIGEST.sign(SignInput({"partnerID": "P1"}, "x"), secret("k-ey"))


def test_jd_jos_vector() -> None:
    # '3' (0x33) sorts before every letter: 360buy_param_json comes first.
    pairs = ("360buy_param_json" + JOS_JSON + "access_tokenTOK" "app_keyKEY1" "methodjingdong.eclp.order.addOrder"
             "timestamp2023-11-11 00:00:00" "v2.0")
    text = JOS_SECRET + pairs + JOS_SECRET
    expected = hashlib.md5(text.encode("utf-8")).hexdigest().upper()
    assert expected == PIN_JOS
    inp = SignInput(jos_params(), "")
    assert JD_JOS.text(inp, JOS_SECRET) == text
    assert JD_JOS.sign(inp, secret(JOS_SECRET)) == expected


def test_jd_jos_body_travels_as_360buy_param_json() -> None:
    without = {k: v for k, v in jos_params().items() if k != "360buy_param_json"}
    assert JD_JOS.sign(SignInput(without, JOS_JSON), secret(JOS_SECRET)) == PIN_JOS
    # An explicit parameter is what is sent, so it wins over the body.
    assert JD_JOS.sign(SignInput(jos_params(), "ignored"), secret(JOS_SECRET)) == PIN_JOS


def test_jd_lop_md5_salt_vector() -> None:
    content = ("access_tokenTOK" "app_keyKEY1" "method/ecap/v1/orders/create" "param_json" + LOP_BODY
               + "timestamp2023-11-11 00:00:00.123" "v2.0")
    text = LOP_SECRET + content + LOP_SECRET
    expected = hashlib.md5(text.encode("utf-8")).hexdigest()
    assert expected == PIN_LOP_MD5
    inp = SignInput(lop_params(), LOP_BODY)
    assert JD_LOP_MD5_SALT.text(inp, LOP_SECRET) == text
    assert JD_LOP_MD5_SALT.sign(inp, secret(LOP_SECRET)) == expected  # lowercase by default
    upper = SignInput(lop_params(), LOP_BODY, {"case": "upper"})
    assert JD_LOP_MD5_SALT.sign(upper, secret(LOP_SECRET)) == expected.upper()


def test_jd_lop_path_option_instead_of_a_method_parameter() -> None:
    params = {k: v for k, v in lop_params().items() if k != "method"}
    inp = SignInput(params, LOP_BODY, {"path": "/ecap/v1/orders/create"})
    assert JD_LOP_MD5_SALT.sign(inp, secret(LOP_SECRET)) == PIN_LOP_MD5
    with pytest.raises(SignInputError, match="'method'"):
        JD_LOP_MD5_SALT.sign(SignInput(params, LOP_BODY), secret(LOP_SECRET))


@pytest.mark.parametrize(("signer", "algorithm"), [
    (JD_LOP_HMAC_SHA256, "sha256"), (JD_LOP_HMAC_MD5, "md5"), (JD_LOP_HMAC_SHA1, "sha1"),
    (JD_LOP_HMAC_SHA512, "sha512"),
], ids=["sha256", "md5", "sha1", "sha512"])
def test_jd_lop_hmac_vectors(signer: Signer, algorithm: str) -> None:
    content = ("access_tokenTOK" "app_keyKEY1" "method/ecap/v1/orders/create" "param_json" + LOP_BODY
               + "timestamp2023-11-11 00:00:00.123" "v2.0")
    text = LOP_SECRET + content + LOP_SECRET  # the md5-salt text, secret on both ends
    mac = hmac.new(LOP_SECRET.encode("utf-8"), text.encode("utf-8"), algorithm)
    expected = base64.b64encode(mac.digest()).decode("ascii")
    assert expected == PIN_LOP_HMAC[algorithm]
    inp = SignInput(lop_params(algorithm="HMacSHA256"), LOP_BODY)
    assert signer.text(inp, LOP_SECRET) == text == JD_LOP_MD5_SALT.text(inp, LOP_SECRET)
    assert signer.sign(inp, secret(LOP_SECRET)) == expected
    assert signer.sign(inp, secret(LOP_SECRET)) != UNWRAPPED_LOP_HMAC_SHA256
    signer.verify(inp, expected, secret(LOP_SECRET))
    with pytest.raises(SignatureError):
        signer.verify(inp, UNWRAPPED_LOP_HMAC_SHA256, secret(LOP_SECRET))
    assert "<secret> + " in signer.describe(inp) and LOP_SECRET not in signer.describe(inp)


def test_jd_lop_requires_its_fields() -> None:
    params = lop_params()
    del params["access_token"]
    with pytest.raises(SignInputError, match="access_token"):
        JD_LOP_HMAC_SHA256.sign(SignInput(params, LOP_BODY), secret(LOP_SECRET))
    # On the receiving side the same gap is a signature that cannot be checked.
    with pytest.raises(SignatureError, match="access_token"):
        JD_LOP_HMAC_SHA256.verify(SignInput(params, LOP_BODY), "x", secret(LOP_SECRET))


def test_cainiao_raw_and_hex_digests_differ_and_both_verify() -> None:
    text = CAINIAO_BODY + CAINIAO_SECRET
    raw = base64.b64encode(hashlib.md5(text.encode("utf-8")).digest()).decode("ascii")
    hex_text = hashlib.md5(text.encode("utf-8")).hexdigest()  # 32 lowercase hex characters
    hexed = base64.b64encode(hex_text.encode("ascii")).decode("ascii")
    assert (raw, hexed) == (PIN_CAINIAO_RAW, PIN_CAINIAO_HEX)
    assert raw != hexed and len(raw) == 24 and len(hexed) == 44
    raw_inp = SignInput({"msg_type": "WMS_CONSIGN_ORDER_NOTIFY"}, CAINIAO_BODY)
    hex_inp = SignInput({"msg_type": "WMS_CONSIGN_ORDER_NOTIFY"}, CAINIAO_BODY, {"digest": "hex"})
    assert CAINIAO_LINK.sign(raw_inp, secret(CAINIAO_SECRET)) == raw
    assert CAINIAO_LINK.sign(hex_inp, secret(CAINIAO_SECRET)) == hexed
    CAINIAO_LINK.verify(raw_inp, raw, secret(CAINIAO_SECRET))
    CAINIAO_LINK.verify(hex_inp, hexed, secret(CAINIAO_SECRET))
    with pytest.raises(SignatureError):
        CAINIAO_LINK.verify(raw_inp, hexed, secret(CAINIAO_SECRET))
    with pytest.raises(SignatureError):
        CAINIAO_LINK.verify(hex_inp, raw, secret(CAINIAO_SECRET))


def test_hmac_sha256_header_vector_hex_and_base64() -> None:
    params = {"timestamp": "1699632000", "nonce": "N-1"}
    text = "nonceN-1" "timestamp1699632000" + HEADER_BODY
    mac = hmac.new(HEADER_SECRET.encode("utf-8"), text.encode("utf-8"), hashlib.sha256)
    assert (mac.hexdigest(), base64.b64encode(mac.digest()).decode("ascii")) == (PIN_HEADER_HEX, PIN_HEADER_B64)
    assert HMAC_SHA256_HEADER.text(SignInput(params, HEADER_BODY), HEADER_SECRET) == text
    assert HMAC_SHA256_HEADER.sign(SignInput(params, HEADER_BODY), secret(HEADER_SECRET)) == PIN_HEADER_HEX
    b64 = SignInput(params, HEADER_BODY, {"encoding": "base64"})
    assert HMAC_SHA256_HEADER.sign(b64, secret(HEADER_SECRET)) == PIN_HEADER_B64
    # Unlike QIMEN, nothing is skipped: an empty parameter is still signed.
    assert HMAC_SHA256_HEADER.sign(SignInput({**params, "x": ""}, HEADER_BODY), secret(HEADER_SECRET)) != PIN_HEADER_HEX


# ---------------------------------------------------------------------------------------------
# Every scheme: sign → verify, tampering, wrong secret, replay window

SECRETS = {name: f"TEST-ONLY-{name}-secret" for name in SIGNERS}


def make_input(name: str, when: datetime) -> SignInput:
    """A valid input for scheme `name` whose signed timestamp is `when` (in each scheme's format)."""
    wall = when.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S")
    if name.startswith("qimen"):
        return SignInput(qimen_params(wall, name.removeprefix("qimen-")), QIMEN_BODY)
    if name == "sf-msgdigest":
        millis = str(int(when.timestamp() * 1000))
        return SignInput({"partnerID": "P1", "requestID": "r-1", "serviceCode": "EXP_RECE_CREATE_ORDER",
                          "timestamp": millis, "msgData": SF_MSGDATA}, SF_MSGDATA)
    if name == "jd-jos":
        params = jos_params(wall)
        del params["360buy_param_json"]  # carried as the body, so that tampering with the body shows
        return SignInput(params, JOS_JSON)
    if name.startswith("jd-lop"):
        return SignInput(lop_params(wall + ".250"), LOP_BODY)
    if name == "cainiao-link":
        return SignInput({"msg_type": "WMS_CONSIGN_ORDER_NOTIFY", "logistic_provider_id": "LP1", "to_code": "W1"},
                         CAINIAO_BODY)
    assert name == "hmac-sha256-header"
    return SignInput({"timestamp": str(int(when.timestamp())), "nonce": "N-1"}, HEADER_BODY)


# A parameter each scheme signs (Cainiao signs none: its digest covers logistics_interface only).
SIGNED_PARAM = {
    "qimen-md5": "customerId", "qimen-hmac": "customerId", "qimen-hmac-sha256": "customerId",
    "sf-msgdigest": "timestamp", "jd-jos": "app_key", "jd-lop-md5-salt": "access_token",
    "jd-lop-hmac-sha256": "access_token", "jd-lop-hmac-md5": "app_key", "jd-lop-hmac-sha1": "v",
    "jd-lop-hmac-sha512": "method", "cainiao-link": None, "hmac-sha256-header": "nonce",
}
NAMES = sorted(SIGNERS)


def replace(inp: SignInput, *, params: dict[str, str] | None = None, body: str | None = None) -> SignInput:
    return SignInput(inp.params if params is None else params, inp.body if body is None else body, inp.options)


def test_the_built_ins_are_all_here() -> None:
    assert set(SIGNERS) == set(SIGNED_PARAM) == {
        "qimen-md5", "qimen-hmac", "qimen-hmac-sha256", "sf-msgdigest", "jd-jos", "jd-lop-md5-salt",
        "jd-lop-hmac-sha256", "jd-lop-hmac-md5", "jd-lop-hmac-sha1", "jd-lop-hmac-sha512", "cainiao-link",
        "hmac-sha256-header"}
    assert all(signer.name == name for name, signer in SIGNERS.items())


@pytest.mark.parametrize("name", NAMES)
def test_sign_then_verify(name: str) -> None:
    signer, key = SIGNERS[name], secret(SECRETS[name])
    inp = make_input(name, NOW)
    signer.verify(inp, signer.sign(inp, key), key)
    signer.verify(inp, signer.sign(inp, key), key, now=NOW)
    signer.verify(inp, signer.sign(inp, key), key, now=NOW + timedelta(minutes=4, seconds=59))


@pytest.mark.parametrize("name", NAMES)
def test_tampering_fails(name: str) -> None:
    signer, key = SIGNERS[name], secret(SECRETS[name])
    inp = make_input(name, NOW)
    signature = signer.sign(inp, key)
    with pytest.raises(SignatureError, match=name):
        tampered = inp.body.replace("DY-001", "DY-002").replace("不要", "要")
        assert tampered != inp.body
        signer.verify(replace(inp, body=tampered), signature, key)
    param = SIGNED_PARAM[name]
    if param is not None:
        with pytest.raises(SignatureError, match=name):
            signer.verify(replace(inp, params={**inp.params, param: inp.params[param] + "0"}), signature, key)
    else:
        # Cainiao's digest covers logistics_interface only: the other form fields are not protected.
        signer.verify(replace(inp, params={**inp.params, "msg_type": "WMS_ORDER_CANCEL_NOTIFY"}), signature, key)
    with pytest.raises(SignatureError, match=name):
        signer.verify(inp, signature, secret(SECRETS[name] + "-wrong"))
    with pytest.raises(SignatureError):
        signer.verify(inp, "", key)
    with pytest.raises(SignatureError):
        signer.verify(inp, "签名\ud800", key)  # untrusted text that is not even valid UTF-8


@pytest.mark.parametrize("name", NAMES)
def test_replay_window(name: str) -> None:
    signer, key = SIGNERS[name], secret(SECRETS[name])
    stale = make_input(name, NOW - timedelta(minutes=10))
    future = make_input(name, NOW + timedelta(minutes=10))
    fresh = make_input(name, NOW - timedelta(minutes=1))
    signer.verify(fresh, signer.sign(fresh, key), key, now=NOW)
    if not signer.signs_timestamp:
        # Cainiao signs no timestamp: verify checks the digest only; dedupe is the replay guard.
        assert signer.timestamp(stale) is None
        signer.verify(stale, signer.sign(stale, key), key, now=NOW)
        return
    for old in (stale, future):
        with pytest.raises(ReplayError, match=name):
            signer.verify(old, signer.sign(old, key), key, now=NOW)
        # Without `now`, only the digest is checked.
        signer.verify(old, signer.sign(old, key), key)
    # A wider window takes the stale message.
    signer.verify(stale, signer.sign(stale, key), key, now=NOW, window=timedelta(minutes=11))


@pytest.mark.parametrize("name", [n for n in NAMES if SIGNERS[n].signs_timestamp])
def test_missing_or_unreadable_timestamp_is_a_replay_error(name: str) -> None:
    signer, key = SIGNERS[name], secret(SECRETS[name])
    inp = make_input(name, NOW)
    if name.startswith("jd-lop") or name == "sf-msgdigest":
        # These sign the timestamp field itself: without it there is nothing to check.
        missing = replace(inp, params={k: v for k, v in inp.params.items() if k != "timestamp"})
        with pytest.raises(SignatureError, match="timestamp"):
            signer.verify(missing, "x", key, now=NOW)
    else:
        missing = replace(inp, params={k: v for k, v in inp.params.items() if k != "timestamp"})
        assert signer.timestamp(missing) is None
        with pytest.raises(ReplayError, match="no timestamp"):
            signer.verify(missing, signer.sign(missing, key), key, now=NOW)
    garbled = replace(inp, params={**inp.params, "timestamp": "yesterday"})
    with pytest.raises(ReplayError, match="yesterday"):
        signer.verify(garbled, signer.sign(garbled, key), key, now=NOW)


@pytest.mark.parametrize("name", NAMES)
def test_messages_and_descriptions_never_hold_the_secret(name: str) -> None:
    signer, value = SIGNERS[name], SECRETS[name]
    inp = make_input(name, NOW - timedelta(hours=1))
    signature = signer.sign(inp, secret(value))
    messages: list[str] = []
    attempts = [
        (replace(inp, body=inp.body + " "), signature, secret(value), None),
        (inp, signature, secret("TEST-ONLY-other"), None),
        (inp, signature, secret(value), NOW),
        (inp, "AAAA", secret(value), None),
    ]
    for candidate, sig, key, now in attempts:
        try:
            signer.verify(candidate, sig, key, now=now)
        except SignatureError as exc:
            messages.append(str(exc))
    assert len(messages) == (3 if name == "cainiao-link" else 4)
    described = signer.describe(inp)
    assert MASK in described and signer.text(inp, MASK) in described
    for text in [*messages, described, repr(signer)]:
        assert value not in text
        assert signature not in text  # nor the signature a receiver expected
        assert value.removeprefix("TEST-ONLY-") not in text


@pytest.mark.parametrize("name", NAMES)
def test_placement(name: str) -> None:
    expected = {"sf-msgdigest": ("form", "msgDigest"), "cainiao-link": ("form", "data_digest"),
                "hmac-sha256-header": ("header", "X-Signature")}.get(name, ("query", "sign"))
    assert SIGNERS[name].placement == expected


def test_get_signer_loads_each_built_in_by_entry_point() -> None:
    registered = set(available("dockyard.crypto"))
    for name, signer in SIGNERS.items():
        assert name in registered
        assert get_signer(name) is signer
    assert set(SIGNERS) <= set(signer_names())
    with pytest.raises(PluginError, match="nope"):
        get_signer("nope")


# ---------------------------------------------------------------------------------------------
# Timestamps and options


def test_timestamp_formats() -> None:
    utc = datetime(2023, 11, 10, 16, 0, 0, tzinfo=UTC)
    qimen = SignInput({"timestamp": "2023-11-11 00:00:00"})
    assert QIMEN_MD5.timestamp(qimen) == utc  # read in Asia/Shanghai by default
    assert JD_JOS.timestamp(qimen) == utc
    in_utc = SignInput({"timestamp": "2023-11-10 16:00:00"}, "", {"timezone": "UTC"})
    assert QIMEN_MD5.timestamp(in_utc) == utc
    assert JD_LOP_MD5_SALT.timestamp(SignInput({"timestamp": "2023-11-11 00:00:00.250"})) == utc + timedelta(
        milliseconds=250)
    assert JD_LOP_MD5_SALT.timestamp(qimen) == utc
    assert SF_MSGDIGEST.timestamp(SignInput({"timestamp": "1699632000000"})) == utc
    assert SF_MSGDIGEST.timestamp(SignInput({"timestamp": "1699632000"})) == utc
    for text in ("1699632000", "1699632000000", "2023-11-10T16:00:00Z", "2023-11-11T00:00:00+08:00",
                 "2023-11-11 00:00:00"):
        assert HMAC_SHA256_HEADER.timestamp(SignInput({"timestamp": text})) == utc, text
    assert HMAC_SHA256_HEADER.timestamp(SignInput({"ts": "1699632000"}, "", {"timestamp_param": "ts"})) == utc


@pytest.mark.parametrize(("signer", "text"), [
    (QIMEN_MD5, "2023-11-11 00:00:00.000"),  # QIMEN sends no millis
    (QIMEN_MD5, "2023-1-1 0:0:0"),
    (QIMEN_MD5, "2023-02-30 00:00:00"),
    (JD_LOP_MD5_SALT, "2023-11-11T00:00:00"),
    (SF_MSGDIGEST, "169963200000"),  # 12 digits: neither seconds nor milliseconds
    (SF_MSGDIGEST, "2023-11-11 00:00:00"),
    (SF_MSGDIGEST, "١٦٩٩٦٣٢٠٠٠"),  # ten Arabic-Indic digits: not what any sender means
    (HMAC_SHA256_HEADER, "١٦٩٩٦٣٢٠٠٠"),
    (HMAC_SHA256_HEADER, "soon"),
])
def test_unreadable_timestamps(signer: Signer, text: str) -> None:
    with pytest.raises(ReplayError):
        signer.timestamp(SignInput({"timestamp": text}))


def test_now_must_be_timezone_aware() -> None:
    inp = make_input("qimen-md5", NOW)
    signature = QIMEN_MD5.sign(inp, secret("k"))
    with pytest.raises(ValueError, match="timezone-aware"):
        QIMEN_MD5.verify(inp, signature, secret("k"), now=datetime(2023, 11, 11))


def test_options_are_checked() -> None:
    inp = make_input("qimen-md5", NOW)
    with pytest.raises(SignInputError, match="unknown option 'encodng'"):
        HMAC_SHA256_HEADER.sign(SignInput(inp.params, "", {"encodng": "base64"}), secret("k"))
    with pytest.raises(SignInputError, match="case"):
        JD_LOP_MD5_SALT.sign(SignInput(lop_params(), LOP_BODY, {"case": "mixed"}), secret("k"))
    with pytest.raises(SignInputError, match="digest"):
        CAINIAO_LINK.sign(SignInput({}, "x", {"digest": "b64"}), secret("k"))
    with pytest.raises(SignInputError, match="time zone"):
        QIMEN_MD5.timestamp(SignInput(inp.params, "", {"timezone": "Mars/Base"}))
    with pytest.raises(TypeError):
        SignInput({"a": 1}, "")  # type: ignore[dict-item]


def test_text_that_cannot_be_sent_as_utf8_is_refused() -> None:
    # A lone surrogate (json.loads accepts "\\ud800") has no UTF-8 form: it could not be sent, so
    # it is refused up front instead of failing half-way through a digest.
    with pytest.raises(SignInputError, match="body"):
        SignInput({}, "a\ud800")
    with pytest.raises(SignInputError, match="'k'"):
        SignInput({"k": "\udfff"}, "")
    # all of the text is tried at once first: the part that fails is still the one named, and two
    # halves of a pair in two parts are two lone surrogates, not a character
    with pytest.raises(SignInputError, match=r"parameter 'b' holds '\\udc00'"):
        SignInput({"a": "x", "b": "\udc00", "c": "y"}, "fine")
    with pytest.raises(SignInputError, match=r"parameter 'a' holds '\\ud83d'"):
        SignInput({"a": "\ud83d", "b": "\ude00"}, "")
    with pytest.raises(SignInputError, match=r"the body holds '\\ude00'"):
        SignInput({"a": "x\ud83d"[:1]}, "\ude00")
    assert SignInput({"a": "顺丰", "b": "😀"}, "é").params == {"a": "顺丰", "b": "😀"}


# ---------------------------------------------------------------------------------------------
# Properties

# Any character that can be sent as UTF-8 (no lone surrogates), with CJK and URL-special ones boosted.
CHARS = st.one_of(st.characters(codec="utf-8"), st.sampled_from("顺丰不要发票<>&=*~ %+"))
TEXT = st.text(alphabet=CHARS, max_size=30)
NONEMPTY = st.text(alphabet=CHARS, min_size=1, max_size=20)


@st.composite
def inputs(draw: st.DrawFn, name: str) -> SignInput:
    body = draw(TEXT)
    if name.startswith("jd-lop"):
        params = {key: draw(NONEMPTY) for key in ("access_token", "app_key", "method", "timestamp", "v")}
    elif name == "sf-msgdigest":
        params = {"timestamp": draw(NONEMPTY), **draw(st.dictionaries(NONEMPTY, TEXT, max_size=3))}
    else:
        keys = NONEMPTY.filter(lambda k: k != "sign")
        params = draw(st.dictionaries(keys, NONEMPTY, max_size=6))
    return SignInput(params, body)


def signed_keys(name: str, inp: SignInput) -> list[str]:
    if name.startswith("jd-lop"):
        return ["access_token", "app_key", "method", "timestamp", "v"]
    if name == "sf-msgdigest":
        return ["timestamp"]
    if name == "cainiao-link":
        return []
    return sorted(inp.params)


@PROPERTY
@given(st.data())
def test_property_verify_sign_and_any_changed_value_fails(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(NAMES))
    signer = SIGNERS[name]
    key = secret(data.draw(NONEMPTY))
    inp = data.draw(inputs(name))
    signature = signer.sign(inp, key)
    signer.verify(inp, signature, key)
    keys = signed_keys(name, inp)
    if keys:
        changed = data.draw(st.sampled_from(keys))
        value = data.draw(NONEMPTY.filter(lambda v: v != inp.params[changed]))
        with pytest.raises(SignatureError):
            signer.verify(replace(inp, params={**inp.params, changed: value}), signature, key)
    else:  # Cainiao: the body is all that is signed
        body = data.draw(TEXT.filter(lambda b: b != inp.body))
        with pytest.raises(SignatureError):
            signer.verify(replace(inp, body=body), signature, key)


# ---------------------------------------------------------------------------------------------
# The command line

VAR = "DOCKYARD_TEST_SIGN_SECRET"


@click.group()
def g() -> None:
    pass


g.add_command(sign)


def invoke(args: list[str], value: str | None = QIMEN_SECRET) -> Result:
    return CliRunner().invoke(g, ["sign", *args], env={VAR: value})


QIMEN_ARGS = ["qimen-md5", *(a for k, v in qimen_params().items() for a in ("--param", f"{k}={v}")),
              "--secret-env", VAR]


def test_cli_prints_the_signature_last() -> None:
    result = invoke([*QIMEN_ARGS, "--body", QIMEN_BODY])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == PIN_QIMEN_MD5


def test_cli_show_string_masks_the_secret() -> None:
    result = invoke([*QIMEN_ARGS, "--body", QIMEN_BODY, "--show-string"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == PIN_QIMEN_MD5
    shown = "\n".join(lines[:-1])
    assert MASK in shown and "不要发票" in shown
    assert QIMEN_SECRET not in result.output


def test_cli_body_file_is_read_exactly(tmp_path: Path) -> None:
    path = tmp_path / "body.xml"
    path.write_bytes(QIMEN_BODY.encode("utf-8"))
    result = invoke([*QIMEN_ARGS, "--body-file", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == PIN_QIMEN_MD5
    path.write_bytes(QIMEN_BODY.encode("utf-8") + b"\n")  # a trailing newline is part of the body
    assert invoke([*QIMEN_ARGS, "--body-file", str(path)]).stdout.splitlines()[-1] != PIN_QIMEN_MD5


def test_cli_options_and_values_holding_equals() -> None:
    result = invoke(["cainiao-link", "--body", CAINIAO_BODY, "--option", "digest=hex", "--secret-env", VAR],
                    CAINIAO_SECRET)
    assert result.stdout.splitlines()[-1] == PIN_CAINIAO_HEX
    result = invoke(["hmac-sha256-header", "--param", "a=b=c", "--secret-env", VAR], "k")
    expected = hmac.new(b"k", b"ab=c", hashlib.sha256).hexdigest()
    assert result.stdout.splitlines()[-1] == expected


@pytest.mark.parametrize(("args", "value", "needle"), [
    (["nope", "--secret-env", VAR], QIMEN_SECRET, "qimen-md5"),  # lists the known schemes
    (["qimen-md5", "--secret-env", VAR], None, VAR),
    (["qimen-md5", "--secret-env", VAR], "", VAR),
    (["qimen-md5", "--body", "x", "--body-file", __file__, "--secret-env", VAR], QIMEN_SECRET, "--body-file"),
    (["qimen-md5", "--param", "method", "--secret-env", VAR], QIMEN_SECRET, "KEY=VALUE"),
    (["qimen-md5", "--option", "timezone", "--secret-env", VAR], QIMEN_SECRET, "KEY=VALUE"),
    (["qimen-md5", "--param", "a=1", "--param", "a=2", "--secret-env", VAR], QIMEN_SECRET, "twice"),
    (["qimen-md5", "--param", "a=1"], QIMEN_SECRET, "secret-env"),
], ids=["unknown-scheme", "unset-env", "empty-env", "two-bodies", "param-without-eq", "option-without-eq",
        "duplicate-param", "no-secret-env"])
def test_cli_usage_errors_exit_2(args: list[str], value: str | None, needle: str) -> None:
    result = invoke(args, value)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr
    assert result.stdout == ""
    assert QIMEN_SECRET not in result.output


def test_cli_scheme_errors_exit_1_without_the_secret() -> None:
    result = invoke(["jd-lop-md5-salt", "--param", "app_key=K", "--secret-env", VAR])
    assert result.exit_code == 1
    assert "access_token" in result.stderr and QIMEN_SECRET not in result.output
    result = invoke(["jd-lop-md5-salt", *(a for k, v in lop_params().items() for a in ("--param", f"{k}={v}")),
                     "--option", "case=mixed", "--secret-env", VAR])
    assert result.exit_code == 1 and "case" in result.stderr and QIMEN_SECRET not in result.output
