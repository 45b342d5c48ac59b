"""Field encryption: single document values encrypted before a request is sent, and decrypted in callbacks.

This module owns the field-cipher schemes Dockyard ships (AES-GCM, AES-CBC, SM4-ECB, SM4-CBC,
SM4-GCM), the `FieldCipher` base that plugin schemes subclass, the options every scheme reads
(`encoding`, `key_encoding`, and per mode `iv` or `aad`), the wire layout of each scheme's
ciphertext, and the lookup of a scheme by name through the `dockyard.crypto` entry-point group.
It never decides *which* fields are encrypted: the request builder hands over one value at a time.

Wire layouts (before the `encoding` turns the bytes into text):

- GCM: 12-byte random nonce || ciphertext || 16-byte tag (what Java's `AES/GCM/NoPadding` emits
  after the nonce). `aad` is authenticated, not sent: both sides must name the same text.
- CBC: 16-byte random IV || PKCS7-padded ciphertext. With the `iv` option the IV is fixed and is
  *not* sent (the Taobao SDK pattern); that is weak (equal values give equal ciphertexts, and the
  first block leaks equal prefixes) and exists only for warehouses that demand it.
- ECB: PKCS7-padded ciphertext (the common Chinese API pattern `SM4/ECB/PKCS5Padding` → Base64);
  weak for the same reason, and only for compatibility.

All block-cipher work is done by the `cryptography` library. The key is read with
`Secret.reveal()` only inside `encrypt_bytes`/`decrypt_bytes`; no message names the key, the
plaintext or a ciphertext, and no `CipherError` is raised while an exception that holds one of them
is being handled (so none hangs on as `__context__` for a logger to print).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import cryptography
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes

from dockyard.runtime.errors import DockyardError
from dockyard.runtime.plugins import load_as
from dockyard.runtime.secrets import Secret

__all__ = [
    "AES_CBC",
    "AES_GCM",
    "CIPHERS",
    "SM4_CBC",
    "SM4_ECB",
    "SM4_GCM",
    "CbcCipher",
    "CipherError",
    "CipherOptions",
    "EcbCipher",
    "FieldCipher",
    "GcmCipher",
    "get_cipher",
]

ENCODINGS = ("base64", "hex")
KEY_ENCODINGS = ("raw", "hex", "base64")
BLOCK = 16  # AES and SM4 both have 128-bit blocks
GCM_NONCE = 12  # the 96-bit nonce GCM is specified for; other lengths go through GHASH and are rarely interoperable
GCM_TAG = 16
_T = TypeVar("_T")
_SPACE = re.compile(r"\s+")

# A factory the `cryptography` algorithm classes satisfy: key bytes in, algorithm out.
Algorithm = Callable[[bytes], BlockCipherAlgorithm]


class CipherError(DockyardError):
    """A value cannot be encrypted or decrypted: a key of the wrong size or encoding, an unknown
    option, a ciphertext that is malformed, fails authentication or has bad padding, a plaintext
    that is not UTF-8. The message names the scheme and the problem, never the key or the plaintext."""


@dataclass(frozen=True)
class CipherOptions:
    """The options of one call, validated. `iv` and `aad` are only accepted by the modes that use them."""

    encoding: str = "base64"
    key_encoding: str = "raw"
    iv: bytes | None = None
    aad: bytes = b""


class FieldCipher(ABC):
    """A field encryption scheme: text in, text out, keyed by a `Secret`.

    Subclasses (plugins included) set `name`, `key_sizes` and `option_names`, and implement `seal`
    and `open` over bytes; the base validates options, decodes the key, checks its size, and turns
    bytes into text and back. `encrypt_bytes`/`decrypt_bytes` are there for values (and published
    test vectors) that are not UTF-8 text.
    """

    name: str
    key_sizes: tuple[int, ...]
    # The options this scheme accepts; anything else is a CipherError naming it.
    option_names: ClassVar[frozenset[str]] = frozenset({"encoding", "key_encoding"})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # -- text API -------------------------------------------------------------------------------

    def encrypt(self, plaintext: str, key: Secret, options: Mapping[str, str] | None = None) -> str:
        """The ciphertext of `plaintext` (UTF-8 encoded) as base64 or hex text."""
        try:
            data = plaintext.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate; the error would carry the plaintext
            data = None
        if data is None:
            raise self.error("the plaintext cannot be encoded as UTF-8 (it holds a lone surrogate)")
        return self.encrypt_bytes(data, key, options)

    def decrypt(self, text: str, key: Secret, options: Mapping[str, str] | None = None) -> str:
        """The exact string `encrypt` was given."""
        data = self.decrypt_bytes(text, key, options)
        try:
            plaintext = data.decode("utf-8")
        except UnicodeDecodeError:  # the error's `.object` is the decrypted bytes: let it go first
            plaintext = None
        if plaintext is None:
            raise self.error("the decrypted value is not UTF-8 text (wrong key or corrupted ciphertext?)")
        return plaintext

    # -- bytes API ------------------------------------------------------------------------------

    def encrypt_bytes(self, data: bytes, key: Secret, options: Mapping[str, str] | None = None) -> str:
        opts = self.parse_options(options)
        return self._to_text(self.seal(data, self.key_bytes(key, opts), opts), opts)

    def decrypt_bytes(self, text: str, key: Secret, options: Mapping[str, str] | None = None) -> bytes:
        opts = self.parse_options(options)
        blob = self._from_text(text, opts)
        return self.open(blob, self.key_bytes(key, opts), opts)

    @abstractmethod
    def seal(self, data: bytes, key: bytes, options: CipherOptions) -> bytes:
        """The wire bytes for `data` (nonce or IV included where the scheme sends one)."""

    @abstractmethod
    def open(self, blob: bytes, key: bytes, options: CipherOptions) -> bytes:
        """The plaintext bytes of `blob`; a CipherError when it is malformed or does not authenticate."""

    # -- shared pieces --------------------------------------------------------------------------

    def error(self, problem: str) -> CipherError:
        return CipherError(f"{self.name}: {problem}")

    def parse_options(self, options: Mapping[str, str] | None) -> CipherOptions:
        given = dict(options or {})
        unknown = sorted(set(given) - self.option_names)
        if unknown:
            raise self.error(f"unknown option {unknown[0]!r} (known: {', '.join(sorted(self.option_names))})")
        encoding = given.get("encoding", "base64")
        if encoding not in ENCODINGS:
            raise self.error(f"option encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
        key_encoding = given.get("key_encoding", "raw")
        if key_encoding not in KEY_ENCODINGS:
            raise self.error(f"option key_encoding must be one of {', '.join(KEY_ENCODINGS)}, not {key_encoding!r}")
        iv = None
        if "iv" in given:
            # The IV is public (it is in the spec), but it is not echoed: the message says what is wanted.
            iv = _hex_or_none(given["iv"])
            if iv is None or len(iv) != BLOCK:
                raise self.error(f"option iv must be {BLOCK * 2} hex digits ({BLOCK} bytes)")
        return CipherOptions(encoding, key_encoding, iv, given.get("aad", "").encode("utf-8"))

    def key_bytes(self, key: Secret, options: CipherOptions) -> bytes:
        """The key the secret's text encodes, checked against `key_sizes`."""
        raw = _decode_key(key.reveal(), options.key_encoding)
        if raw is None:
            raise self.error(f"the key (secret {key.name!r}) is not valid {options.key_encoding}")
        if len(raw) not in self.key_sizes:
            sizes = " or ".join(", ".join(map(str, self.key_sizes)).rsplit(", ", 1))
            raise self.error(f"the key (secret {key.name!r}) is {len(raw)} bytes with key_encoding "
                             f"{options.key_encoding}; expected {sizes} bytes")
        return raw

    def _to_text(self, blob: bytes, options: CipherOptions) -> str:
        return blob.hex() if options.encoding == "hex" else base64.b64encode(blob).decode("ascii")

    def _from_text(self, text: str, options: CipherOptions) -> bytes:
        # Whitespace is dropped: Java's MIME encoders (and some gateways) wrap Base64 at 76 columns.
        compact = _SPACE.sub("", text)
        blob: bytes | None
        if options.encoding == "hex":
            blob = _hex_or_none(compact)
        else:
            try:
                blob = base64.b64decode(compact, validate=True)
            except (binascii.Error, ValueError):
                blob = None
        if blob is None:
            raise self.error(f"the ciphertext is not valid {options.encoding}")
        return blob


def _hex_or_none(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _decode_key(text: str, key_encoding: str) -> bytes | None:
    """The key bytes, or None when the text is not in `key_encoding`. Returns instead of raising so
    that no exception holding the key text is ever in flight."""
    try:
        if key_encoding == "hex":
            return bytes.fromhex(text)
        if key_encoding == "base64":
            return base64.b64decode(_SPACE.sub("", text), validate=True)
        return text.encode("utf-8")
    except (ValueError, UnicodeError):
        return None


class _BlockFieldCipher(FieldCipher):
    """A scheme over one of `cryptography`'s 128-bit block ciphers (AES, SM4)."""

    def __init__(self, name: str, algorithm: Algorithm, key_sizes: tuple[int, ...]) -> None:
        self.name = name
        self.algorithm = algorithm
        self.key_sizes = key_sizes

    def _supported(self, make: Callable[[], _T]) -> _T:
        """`make()` (which builds a cipher context), or a CipherError when this OpenSSL lacks the
        algorithm or mode (SM4 is missing from some FIPS and LibreSSL builds, SM4-GCM from older ones)."""
        try:
            return make()
        except UnsupportedAlgorithm:
            pass
        # Raised after the handler, like every CipherError here, so nothing else is chained to it.
        raise self.error(f"not supported by the installed cryptography {cryptography.__version__} "
                         "and its OpenSSL")

    def _pad(self, data: bytes) -> bytes:
        padder = padding.PKCS7(BLOCK * 8).padder()
        return padder.update(data) + padder.finalize()

    def _unpad(self, data: bytes) -> bytes:
        unpadder = padding.PKCS7(BLOCK * 8).unpadder()
        try:
            return unpadder.update(data) + unpadder.finalize()
        except ValueError:
            pass
        raise self.error("bad padding (wrong key, wrong IV or corrupted ciphertext)")

    def _check_blocks(self, body: bytes) -> None:
        if not body or len(body) % BLOCK:
            raise self.error(f"the ciphertext is {len(body)} bytes; expected a non-empty multiple of {BLOCK}")


class EcbCipher(_BlockFieldCipher):
    """ECB with PKCS7 padding. Weak (equal blocks give equal ciphertext); for warehouses that demand it."""

    def seal(self, data: bytes, key: bytes, options: CipherOptions) -> bytes:
        enc = self._supported(lambda: Cipher(self.algorithm(key), modes.ECB()).encryptor())
        return enc.update(self._pad(data)) + enc.finalize()

    def open(self, blob: bytes, key: bytes, options: CipherOptions) -> bytes:
        self._check_blocks(blob)
        dec = self._supported(lambda: Cipher(self.algorithm(key), modes.ECB()).decryptor())
        return self._unpad(dec.update(blob) + dec.finalize())


class CbcCipher(_BlockFieldCipher):
    """CBC with PKCS7 padding: a random IV per value, sent in front; or a fixed `iv` option, not sent."""

    option_names: ClassVar[frozenset[str]] = FieldCipher.option_names | {"iv"}

    def seal(self, data: bytes, key: bytes, options: CipherOptions) -> bytes:
        iv = options.iv if options.iv is not None else os.urandom(BLOCK)
        enc = self._supported(lambda: Cipher(self.algorithm(key), modes.CBC(iv)).encryptor())
        body = enc.update(self._pad(data)) + enc.finalize()
        return body if options.iv is not None else iv + body

    def open(self, blob: bytes, key: bytes, options: CipherOptions) -> bytes:
        if options.iv is not None:
            iv, body = options.iv, blob
        else:
            if len(blob) < 2 * BLOCK:
                raise self.error(f"the ciphertext is {len(blob)} bytes; expected a {BLOCK}-byte IV and "
                                 "at least one block")
            iv, body = blob[:BLOCK], blob[BLOCK:]
        self._check_blocks(body)
        dec = self._supported(lambda: Cipher(self.algorithm(key), modes.CBC(iv)).decryptor())
        return self._unpad(dec.update(body) + dec.finalize())


class GcmCipher(_BlockFieldCipher):
    """GCM: a random 12-byte nonce per value, sent in front, and a 16-byte tag at the end; optional `aad`.

    There is deliberately no fixed-nonce option: reusing a GCM nonce under one key gives away the
    authentication key and the XOR of the plaintexts.
    """

    option_names: ClassVar[frozenset[str]] = FieldCipher.option_names | {"aad"}

    def seal(self, data: bytes, key: bytes, options: CipherOptions) -> bytes:
        nonce = os.urandom(GCM_NONCE)
        enc = self._supported(lambda: Cipher(self.algorithm(key), modes.GCM(nonce)).encryptor())
        if options.aad:
            enc.authenticate_additional_data(options.aad)
        body = enc.update(data) + enc.finalize()
        return nonce + body + enc.tag

    def open(self, blob: bytes, key: bytes, options: CipherOptions) -> bytes:
        if len(blob) < GCM_NONCE + GCM_TAG:
            raise self.error(f"the ciphertext is {len(blob)} bytes; expected at least "
                             f"{GCM_NONCE + GCM_TAG} (a {GCM_NONCE}-byte nonce and a {GCM_TAG}-byte tag)")
        nonce, body, tag = blob[:GCM_NONCE], blob[GCM_NONCE:-GCM_TAG], blob[-GCM_TAG:]
        dec = self._supported(lambda: Cipher(self.algorithm(key), modes.GCM(nonce, tag)).decryptor())
        if options.aad:
            dec.authenticate_additional_data(options.aad)
        try:
            return dec.update(body) + dec.finalize()
        except InvalidTag:
            pass
        raise self.error("authentication failed (wrong key, wrong aad or tampered ciphertext)")


AES_KEY_SIZES = (16, 24, 32)
SM4_KEY_SIZES = (16,)

AES_GCM = GcmCipher("aes-gcm", algorithms.AES, AES_KEY_SIZES)
AES_CBC = CbcCipher("aes-cbc", algorithms.AES, AES_KEY_SIZES)
SM4_ECB = EcbCipher("sm4-ecb", algorithms.SM4, SM4_KEY_SIZES)
SM4_CBC = CbcCipher("sm4-cbc", algorithms.SM4, SM4_KEY_SIZES)
# cryptography runs SM4-GCM when its OpenSSL has it (OpenSSL 3.x does); otherwise the first use
# raises a CipherError saying so, through `_cipher`.
SM4_GCM = GcmCipher("sm4-gcm", algorithms.SM4, SM4_KEY_SIZES)

CIPHERS: dict[str, FieldCipher] = {c.name: c for c in (AES_GCM, AES_CBC, SM4_ECB, SM4_CBC, SM4_GCM)}


def get_cipher(name: str) -> FieldCipher:
    """The field cipher registered under `name` in `dockyard.crypto` (built-in or plugin). Raises
    PluginError for an unknown name or an entry that is not a FieldCipher (e.g. a signing scheme)."""
    cipher: FieldCipher = load_as("dockyard.crypto", name, FieldCipher, "field encryption scheme")
    return cipher
