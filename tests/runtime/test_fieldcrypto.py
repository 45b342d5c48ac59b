"""Field ciphers: published vectors (GB/T 32907-2016 SM4, NIST SP 800-38A AES-CBC, the GCM spec,
RFC 8998 SM4-GCM) checked through the `cryptography` primitive and through the schemes, round trips
over every scheme, encoding and key encoding, and the errors: tampering, wrong keys, bad options,
malformed ciphertexts, and never the key or the plaintext in a message."""

from __future__ import annotations

import base64
import itertools
import pickle
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from dockyard.runtime.errors import DockyardError
from dockyard.runtime.fieldcrypto import (
    AES_CBC,
    AES_GCM,
    CIPHERS,
    SM4_CBC,
    SM4_ECB,
    SM4_GCM,
    CipherError,
    FieldCipher,
    GcmCipher,
    get_cipher,
)
from dockyard.runtime.plugins import PluginError, load
from dockyard.runtime.secrets import Secret

h = bytes.fromhex

SCHEMES = sorted(CIPHERS)
CHINESE = "收件人：张三，北京市朝阳区建国路88号，电话13912340366"
ASCII_15 = "139123403661234"
TEXTS = ["", CHINESE, "手机号", ASCII_15, ASCII_15 + "5", ASCII_15 + "56",
         "中文abc" + "x" * 6, "中文abc" + "x" * 7, "中文abc" + "x" * 8]  # the last three are 15/16/17 bytes


def test_texts_cover_block_boundaries() -> None:
    assert [len(t.encode()) for t in TEXTS[3:]] == [15, 16, 17, 15, 16, 17]


def key_for(cipher: FieldCipher, key_encoding: str, size: int = 16) -> Secret:
    """A test key of `size` bytes written in `key_encoding`."""
    raw = ("TEST-ONLY-" + "k" * 32)[:size].encode()
    text = {"raw": raw.decode(), "hex": raw.hex(), "base64": base64.b64encode(raw).decode()}[key_encoding]
    return Secret(f"{cipher.name.upper()}_KEY", text)


def ecb_block(algorithm: BlockCipherAlgorithm, block: bytes) -> bytes:
    enc = Cipher(algorithm, modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


PAD_BLOCK = b"\x10" * 16  # PKCS7 of a whole number of blocks: one more block of 0x10


# -- published vectors ---------------------------------------------------------------------------

SM4_KEY = h("0123456789abcdeffedcba9876543210")
SM4_PLAIN = SM4_KEY
SM4_CIPHER = h("681edf34d206965e86b3e94f536e4246")  # GB/T 32907-2016 Appendix A, example 1


def test_sm4_primitive_matches_gbt_32907() -> None:
    assert ecb_block(algorithms.SM4(SM4_KEY), SM4_PLAIN) == SM4_CIPHER


def test_sm4_ecb_scheme_first_block_is_the_gbt_32907_vector() -> None:
    key = Secret("SM4_KEY", SM4_KEY.hex())
    options = {"key_encoding": "hex", "encoding": "hex"}
    out = h(SM4_ECB.encrypt_bytes(SM4_PLAIN, key, options))
    # PKCS7 pads a whole block with a second block of 0x10 bytes.
    assert len(out) == 32
    assert out[:16] == SM4_CIPHER
    assert out[16:] == ecb_block(algorithms.SM4(SM4_KEY), PAD_BLOCK)
    assert SM4_ECB.decrypt_bytes(out.hex(), key, options) == SM4_PLAIN
    # The vector's plaintext is not UTF-8, so the text API refuses it rather than return mojibake.
    with pytest.raises(CipherError, match="not UTF-8"):
        SM4_ECB.decrypt(out.hex(), key, options)


def test_sm4_ecb_decrypts_a_hand_built_ciphertext_to_text() -> None:
    key = Secret("SM4_KEY", SM4_KEY.hex())
    plain = b"0123456789abcdef"
    blob = ecb_block(algorithms.SM4(SM4_KEY), plain) + ecb_block(algorithms.SM4(SM4_KEY), PAD_BLOCK)
    assert SM4_ECB.decrypt(base64.b64encode(blob).decode(), key, {"key_encoding": "hex"}) == "0123456789abcdef"


# NIST SP 800-38A F.2.1, CBC-AES128.Encrypt
AES_KEY = h("2b7e151628aed2a6abf7158809cf4f3c")
AES_IV = h("000102030405060708090a0b0c0d0e0f")
AES_PLAIN = h("6bc1bee22e409f96e93d7e117393172a" "ae2d8a571e03ac9c9eb76fac45af8e51"
              "30c81c46a35ce411e5fbc1191a0a52ef" "f69f2445df4f9b17ad2b417be66c3710")
AES_CIPHER = h("7649abac8119b246cee98e9b12e9197d" "5086cb9b507219ee95db113a917678b2"
               "73bed6b8e3c1743b7116e69e22229516" "3ff1caa1681fac09120eca307586e1a7")


def test_aes_cbc_primitive_matches_sp800_38a() -> None:
    enc = Cipher(algorithms.AES(AES_KEY), modes.CBC(AES_IV)).encryptor()
    assert enc.update(AES_PLAIN) + enc.finalize() == AES_CIPHER


def test_aes_cbc_scheme_with_fixed_iv_matches_sp800_38a() -> None:
    key = Secret("AES_KEY", AES_KEY.hex())
    options = {"key_encoding": "hex", "encoding": "hex", "iv": AES_IV.hex()}
    first = h(AES_CBC.encrypt_bytes(AES_PLAIN[:16], key, options))
    assert first[:16] == AES_CIPHER[:16]  # F.2.1 first block; the fixed IV is not sent
    assert len(first) == 32
    out = h(AES_CBC.encrypt_bytes(AES_PLAIN, key, options))
    assert out[:64] == AES_CIPHER
    assert out[64:] == ecb_block(algorithms.AES(AES_KEY), bytes(a ^ b for a, b in zip(AES_CIPHER[48:], PAD_BLOCK,
                                                                                          strict=True)))
    assert AES_CBC.decrypt_bytes(out.hex(), key, options) == AES_PLAIN


def test_aes_cbc_scheme_decrypts_a_hand_built_ciphertext() -> None:
    """IV || C1..C4 || the padding block, in the random-IV layout, decrypts to the vector's plaintext;
    and an IV chosen so that C1 decrypts to ASCII shows the text API reading the vector's block."""
    key = Secret("AES_KEY", AES_KEY.hex())
    pad = ecb_block(algorithms.AES(AES_KEY), bytes(a ^ b for a, b in zip(AES_CIPHER[48:], PAD_BLOCK, strict=True)))
    blob = AES_IV + AES_CIPHER + pad
    assert AES_CBC.decrypt_bytes(base64.b64encode(blob).decode(), key, {"key_encoding": "hex"}) == AES_PLAIN

    target = b"Dockyard F.2.1 !"
    iv = bytes(p ^ v ^ t for p, v, t in zip(AES_PLAIN[:16], AES_IV, target, strict=True))
    pad1 = ecb_block(algorithms.AES(AES_KEY), bytes(a ^ b for a, b in zip(AES_CIPHER[:16], PAD_BLOCK, strict=True)))
    text = (iv + AES_CIPHER[:16] + pad1).hex()
    assert AES_CBC.decrypt(text, key, {"key_encoding": "hex", "encoding": "hex"}) == target.decode()
    fixed = {"key_encoding": "hex", "encoding": "hex", "iv": iv.hex()}
    assert h(AES_CBC.encrypt(target.decode(), key, fixed))[:16] == AES_CIPHER[:16]


# The GCM spec (McGrew & Viega), test cases 2, 3 and 4.
GCM2 = {"key": bytes(16), "iv": bytes(12), "plain": bytes(16), "aad": b"",
        "cipher": h("0388dace60b6a392f328c2b971b2fe78"), "tag": h("ab6e47d42cec13bdf53a67b21257bddf")}
_GCM3_PLAIN = h("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255")
_GCM3_CIPHER = h("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
                 "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985")
GCM3 = {"key": h("feffe9928665731c6d6a8f9467308308"), "iv": h("cafebabefacedbaddecaf888"),
        "plain": _GCM3_PLAIN, "aad": b"", "cipher": _GCM3_CIPHER, "tag": h("4d5c2af327cd64a62cf35abd2ba6fab4")}
GCM4 = {**GCM3, "plain": _GCM3_PLAIN[:60], "cipher": _GCM3_CIPHER[:60],
        "aad": h("feedfacedeadbeeffeedfacedeadbeefabaddad2"), "tag": h("5bc94fbc3221a5db94fae95ae7121a47")}
# RFC 8998 Appendix A.1, SM4-GCM
SM4_GCM_VECTOR = {
    "key": h("0123456789ABCDEFFEDCBA9876543210"), "iv": h("00001234567800000000ABCD"),
    "aad": h("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2"),
    "plain": h("AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
               "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"),
    "cipher": h("17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
                "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"),
    "tag": h("83DE3541E4C2B58177E065A9BF7B62EC"),
}


@pytest.mark.parametrize(("algorithm", "vector"), [
    (algorithms.AES, GCM2), (algorithms.AES, GCM3), (algorithms.AES, GCM4), (algorithms.SM4, SM4_GCM_VECTOR),
], ids=["aes-gcm-2", "aes-gcm-3", "aes-gcm-4", "sm4-gcm-rfc8998"])
def test_gcm_primitive_matches_published_vectors(algorithm: Callable[[bytes], BlockCipherAlgorithm],
                                                 vector: dict[str, bytes]) -> None:
    enc = Cipher(algorithm(vector["key"]), modes.GCM(vector["iv"])).encryptor()
    enc.authenticate_additional_data(vector["aad"])
    assert enc.update(vector["plain"]) + enc.finalize() == vector["cipher"]
    assert enc.tag == vector["tag"]


def test_aes_gcm_scheme_decrypts_the_spec_vectors() -> None:
    key2 = Secret("AES_KEY", GCM2["key"].hex())
    blob2 = GCM2["iv"] + GCM2["cipher"] + GCM2["tag"]
    assert AES_GCM.decrypt(base64.b64encode(blob2).decode(), key2, {"key_encoding": "hex"}) == "\x00" * 16
    key3 = Secret("AES_KEY", base64.b64encode(GCM3["key"]).decode())
    blob3 = GCM3["iv"] + GCM3["cipher"] + GCM3["tag"]
    options = {"key_encoding": "base64", "encoding": "hex"}
    assert AES_GCM.decrypt_bytes(blob3.hex(), key3, options) == GCM3["plain"]
    with pytest.raises(CipherError, match="not UTF-8"):  # the vector's plaintext is binary
        AES_GCM.decrypt(blob3.hex(), key3, options)


def test_sm4_gcm_scheme_reads_the_nonce_ciphertext_tag_layout() -> None:
    vector = SM4_GCM_VECTOR
    enc = Cipher(algorithms.SM4(vector["key"]), modes.GCM(vector["iv"])).encryptor()
    body = enc.update(CHINESE.encode()) + enc.finalize()
    key = Secret("SM4_KEY", vector["key"].hex())
    blob = vector["iv"] + body + enc.tag
    assert SM4_GCM.decrypt(base64.b64encode(blob).decode(), key, {"key_encoding": "hex"}) == CHINESE


# -- round trips ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "encoding", "key_encoding"),
                         list(itertools.product(SCHEMES, ["base64", "hex"], ["raw", "hex", "base64"])))
def test_round_trip(name: str, encoding: str, key_encoding: str) -> None:
    cipher = CIPHERS[name]
    for size in cipher.key_sizes:
        key = key_for(cipher, key_encoding, size)
        options = {"encoding": encoding, "key_encoding": key_encoding}
        for text in TEXTS:
            out = cipher.encrypt(text, key, options)
            assert out.isascii()
            if encoding == "hex":
                assert all(c in "0123456789abcdef" for c in out)
            else:
                base64.b64decode(out, validate=True)
            assert cipher.decrypt(out, key, options) == text


@pytest.mark.parametrize("cipher", [AES_CBC, SM4_CBC], ids=lambda c: c.name)
@pytest.mark.parametrize("encoding", ["base64", "hex"])
def test_round_trip_with_fixed_iv(cipher: FieldCipher, encoding: str) -> None:
    key = key_for(cipher, "raw")
    options = {"encoding": encoding, "iv": "00112233445566778899aabbccddeeff"}
    for text in TEXTS:
        assert cipher.decrypt(cipher.encrypt(text, key, options), key, options) == text


@pytest.mark.parametrize("cipher", [AES_GCM, SM4_GCM], ids=lambda c: c.name)
def test_round_trip_with_aad(cipher: FieldCipher) -> None:
    key = key_for(cipher, "raw")
    out = cipher.encrypt(CHINESE, key, {"aad": "订单 SO-1"})
    assert cipher.decrypt(out, key, {"aad": "订单 SO-1"}) == CHINESE
    for options in ({"aad": "订单 SO-2"}, {}):
        with pytest.raises(CipherError, match="authentication failed"):
            cipher.decrypt(out, key, options)


@pytest.mark.parametrize(("cipher", "size"), [(SM4_ECB, 16), (AES_CBC, 32), (SM4_CBC, 32), (AES_GCM, 28),
                                              (SM4_GCM, 28)], ids=lambda v: getattr(v, "name", str(v)))
def test_empty_value_layout(cipher: FieldCipher, size: int) -> None:
    """ECB: one padding block; CBC: IV + one padding block; GCM: nonce + tag."""
    out = cipher.encrypt("", key_for(cipher, "raw"), {"encoding": "hex"})
    assert len(h(out)) == size


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(SCHEMES), text=st.text(), encoding=st.sampled_from(["base64", "hex"]),
       key_encoding=st.sampled_from(["raw", "hex", "base64"]))
def test_round_trip_arbitrary_text(name: str, text: str, encoding: str, key_encoding: str) -> None:
    cipher = CIPHERS[name]
    key = key_for(cipher, key_encoding, cipher.key_sizes[-1])
    options = {"encoding": encoding, "key_encoding": key_encoding}
    assert cipher.decrypt(cipher.encrypt(text, key, options), key, options) == text


def test_decrypt_accepts_uppercase_hex_and_wrapped_base64() -> None:
    key = key_for(AES_CBC, "raw")
    text = CHINESE * 4
    hexed = AES_CBC.encrypt(text, key, {"encoding": "hex"})
    assert AES_CBC.decrypt(hexed.upper(), key, {"encoding": "hex"}) == text
    b64 = AES_CBC.encrypt(text, key)
    wrapped = "\r\n".join(b64[i:i + 76] for i in range(0, len(b64), 76))  # as Java's MIME encoder writes it
    assert "\n" in wrapped
    assert AES_CBC.decrypt(wrapped, key) == text


# -- randomness ----------------------------------------------------------------------------------

@pytest.mark.parametrize("cipher", [AES_CBC, SM4_CBC, AES_GCM, SM4_GCM], ids=lambda c: c.name)
def test_random_iv_or_nonce_gives_different_ciphertexts(cipher: FieldCipher) -> None:
    key = key_for(cipher, "raw")
    outs = {cipher.encrypt("13912340366", key) for _ in range(8)}
    assert len(outs) == 8
    assert {cipher.decrypt(o, key) for o in outs} == {"13912340366"}


@pytest.mark.parametrize("cipher", [AES_CBC, SM4_CBC], ids=lambda c: c.name)
def test_fixed_iv_gives_the_same_ciphertext(cipher: FieldCipher) -> None:
    key = key_for(cipher, "raw")
    options = {"iv": "000102030405060708090a0b0c0d0e0f"}
    assert len({cipher.encrypt("13912340366", key, options) for _ in range(4)}) == 1
    # ...and it is not the random-IV layout: no IV in front.
    assert len(base64.b64decode(cipher.encrypt("13912340366", key, options))) == 16


def test_ecb_is_deterministic() -> None:
    key = key_for(SM4_ECB, "raw")
    assert SM4_ECB.encrypt("13912340366", key) == SM4_ECB.encrypt("13912340366", key)


# -- failures ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cipher", [AES_GCM, SM4_GCM], ids=lambda c: c.name)
def test_gcm_tampering_is_detected(cipher: FieldCipher) -> None:
    key = key_for(cipher, "raw")
    blob = bytearray(h(cipher.encrypt("张三 13912340366", key, {"encoding": "hex"})))
    for i in range(len(blob)):  # nonce, body and tag alike
        tampered = bytearray(blob)
        tampered[i] ^= 0x01
        with pytest.raises(CipherError, match=f"{cipher.name}: authentication failed"):
            cipher.decrypt(tampered.hex(), key, {"encoding": "hex"})
    for cut in (blob[:-1], blob[1:]):
        with pytest.raises(CipherError):
            cipher.decrypt(bytes(cut).hex(), key, {"encoding": "hex"})


@pytest.mark.parametrize("name", SCHEMES)
def test_wrong_key_never_raises_anything_but_cipher_error(name: str) -> None:
    cipher = CIPHERS[name]
    right, wrong = Secret("K", "TEST-ONLY-right!"), Secret("K", "TEST-ONLY-wrong!")
    for i in range(40):
        value = f"张三 1391234{i:04d}"
        try:
            got = cipher.decrypt(cipher.encrypt(value, right), wrong)
        except CipherError:
            continue
        assert got != value  # padding that happened to be valid and bytes that happened to be UTF-8


@pytest.mark.parametrize("name", SCHEMES)
def test_wrong_key_is_a_cipher_error(name: str) -> None:
    cipher = CIPHERS[name]
    right, wrong = Secret("K", "TEST-ONLY-right!"), Secret("K", "TEST-ONLY-wrong!")
    options = {"iv": "000102030405060708090a0b0c0d0e0f"} if "cbc" in name else {}
    # A fixed IV makes the CBC outcome deterministic; this value's garbage fails the padding check.
    with pytest.raises(CipherError, match=f"^{name}: (bad padding|authentication failed)"):
        cipher.decrypt(cipher.encrypt("13912340366", right, options), wrong, options)


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize(("key_encoding", "key_text", "size"), [
    ("raw", "TEST-ONLY-short", 15), ("raw", "TEST-ONLY-seventee", 18), ("raw", "密钥TEST-ONLY-", 16),
    ("hex", "00" * 17, 17), ("base64", base64.b64encode(bytes(8)).decode(), 8),
])
def test_wrong_key_length_names_the_expected_sizes(name: str, key_encoding: str, key_text: str, size: int) -> None:
    cipher = CIPHERS[name]
    key = Secret("FIELD_KEY", key_text)
    if size in cipher.key_sizes:  # "密钥TEST-ONLY-" is 16 bytes of UTF-8, but only 12 characters
        assert cipher.decrypt(cipher.encrypt("x", key, {"key_encoding": key_encoding}), key,
                              {"key_encoding": key_encoding}) == "x"
        return
    expected = "16, 24 or 32" if name.startswith("aes") else "16"
    with pytest.raises(CipherError) as info:
        cipher.encrypt("x", key, {"key_encoding": key_encoding})
    message = str(info.value)
    assert message.startswith(f"{name}: ")
    assert f"is {size} bytes" in message
    assert f"expected {expected} bytes" in message
    assert "FIELD_KEY" in message  # the secret's name helps; its value never appears


@pytest.mark.parametrize(("key_encoding", "key_text"), [("hex", "zz" * 16), ("hex", "abc"),
                                                        ("base64", "not base64!!"), ("raw", "\ud800" * 16)])
def test_undecodable_key(key_encoding: str, key_text: str) -> None:
    with pytest.raises(CipherError, match=f"not valid {key_encoding}"):
        AES_GCM.encrypt("x", Secret("FIELD_KEY", key_text), {"key_encoding": key_encoding})


@pytest.mark.parametrize(("cipher", "options", "match"), [
    (SM4_ECB, {"iv": "00" * 16}, "unknown option 'iv' \\(known: encoding, key_encoding\\)"),
    (AES_GCM, {"iv": "00" * 16}, "unknown option 'iv'"),
    (AES_CBC, {"aad": "x"}, "unknown option 'aad'"),
    (AES_GCM, {"nonce": "00" * 12}, "unknown option 'nonce'"),
    (AES_GCM, {"padding": "pkcs5"}, "unknown option 'padding'"),
    (AES_GCM, {"encoding": "b64"}, "option encoding must be one of base64, hex, not 'b64'"),
    (SM4_ECB, {"key_encoding": "utf8"}, "option key_encoding must be one of raw, hex, base64, not 'utf8'"),
    (AES_CBC, {"iv": "00" * 15}, "option iv must be 32 hex digits"),
    (SM4_CBC, {"iv": "zz" * 16}, "option iv must be 32 hex digits"),
], ids=lambda v: getattr(v, "name", None))
def test_bad_options(cipher: FieldCipher, options: dict[str, str], match: str) -> None:
    key = key_for(cipher, "raw")
    with pytest.raises(CipherError, match=f"^{cipher.name}: {match}"):
        cipher.encrypt("x", key, options)
    with pytest.raises(CipherError, match=f"^{cipher.name}: {match}"):
        cipher.decrypt("AAAA", key, options)


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize(("text", "encoding", "match"), [
    ("", "base64", "ciphertext is 0 bytes"),
    ("not base64!", "base64", "not valid base64"),
    ("QUJD", "base64", "ciphertext is 3 bytes"),
    ("QUJ", "base64", "not valid base64"),
    ("密文", "base64", "not valid base64"),
    ("0g", "hex", "not valid hex"),
    ("00" * 20, "hex", "ciphertext is 20 bytes"),
])
def test_malformed_ciphertext(name: str, text: str, encoding: str, match: str) -> None:
    cipher = CIPHERS[name]
    with pytest.raises(CipherError, match=match):
        cipher.decrypt(text, key_for(cipher, "raw"), {"encoding": encoding})


def test_lone_surrogate_plaintext() -> None:
    with pytest.raises(CipherError, match="cannot be encoded as UTF-8"):
        AES_GCM.encrypt("\ud83d", key_for(AES_GCM, "raw"))


def test_unsupported_algorithm_is_a_cipher_error() -> None:
    """What SM4-GCM (or SM4 at all) does on an OpenSSL without it: a CipherError at first use."""

    class Missing(BlockCipherAlgorithm):
        name = "MISSING"
        block_size = 128
        key_sizes = frozenset({128})

        def __init__(self, key: bytes) -> None:
            self.key = key

        @property
        def key_size(self) -> int:
            return 128

    cipher = GcmCipher("missing-gcm", Missing, (16,))
    with pytest.raises(CipherError, match=r"^missing-gcm: not supported by the installed cryptography"):
        cipher.encrypt("x", Secret("K", "TEST-ONLY-abcdef"))


# -- secrecy of messages -------------------------------------------------------------------------

PLANTED = "TEST-ONLY-PLANT!"  # 16 characters: a valid raw key for every scheme
PLAINTEXT = "PLAINTEXT-MARK-张三-13912340366"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _planted_failures(cipher: FieldCipher) -> Iterator[tuple[str, Callable[[], object]]]:
    """(label, call) for every way a call with the planted key can fail."""
    good = Secret("FIELD_KEY", PLANTED)
    long_key = Secret("FIELD_KEY", PLANTED + "-EXTRA")
    other = Secret("OTHER_KEY", "TEST-ONLY-other!")
    sealed = cipher.encrypt(PLAINTEXT, good)
    tampered = base64.b64encode(bytes(b ^ 0xFF for b in base64.b64decode(sealed))).decode()
    yield "wrong length", lambda: cipher.encrypt(PLAINTEXT, long_key)
    yield "not hex", lambda: cipher.encrypt(PLAINTEXT, good, {"key_encoding": "hex"})
    yield "not base64", lambda: cipher.encrypt(PLAINTEXT, good, {"key_encoding": "base64"})
    yield "bad option", lambda: cipher.encrypt(PLAINTEXT, good, {"bogus": "1"})
    yield "wrong key", lambda: cipher.decrypt(cipher.encrypt(PLAINTEXT, other), good)
    yield "tampered", lambda: cipher.decrypt(tampered, good)
    yield "truncated", lambda: cipher.decrypt(sealed[:8], good)
    yield "binary plaintext", lambda: cipher.decrypt(cipher.encrypt_bytes(b"\xff" * 20, good), good)


@pytest.mark.parametrize("name", SCHEMES)
def test_key_and_plaintext_never_appear_in_errors(name: str) -> None:
    cipher = CIPHERS[name]
    failures = 0
    for label, call in _planted_failures(cipher):
        try:
            call()
        except CipherError as exc:
            failures += 1
            for e in _chain(exc):  # the chained exceptions too: a logger prints those
                for shown in (str(e), repr(e), repr(e.args)):
                    assert "PLANT" not in shown, (label, shown)
                    assert "PLAINTEXT-MARK" not in shown, (label, shown)
        else:
            # Only a wrong CBC/ECB key can slip through the padding check, and then not with this plaintext.
            assert label == "wrong key"
    assert failures >= 7


def test_cipher_error_is_a_dockyard_error_and_pickles() -> None:
    err = CipherError("aes-gcm: authentication failed")
    assert isinstance(err, DockyardError)
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


# -- registry ------------------------------------------------------------------------------------

def test_ciphers_are_registered_under_their_names() -> None:
    assert set(CIPHERS) == {"aes-gcm", "aes-cbc", "sm4-ecb", "sm4-cbc", "sm4-gcm"}
    for name, cipher in CIPHERS.items():
        assert cipher.name == name
        assert get_cipher(name) is cipher
        assert load("dockyard.crypto", name) is cipher
        assert repr(cipher).endswith(f"({name!r})")


def test_get_cipher_rejects_other_policies() -> None:
    with pytest.raises(PluginError, match="no crypto policy named 'aes-ecb'"):
        get_cipher("aes-ecb")
    with pytest.raises(PluginError, match="'qimen-md5' is not a field encryption scheme"):
        get_cipher("qimen-md5")
