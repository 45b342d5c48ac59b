"""Request signatures: the exact text each warehouse signs, the digest over it, and checking one.

This module owns the signing schemes Dockyard ships (QIMEN md5/hmac/hmac-sha256, SF msgDigest,
JD JOS, JD LOP md5-salt and HMAC, Cainiao LINK, a generic HMAC-SHA256 header), the `Signer` base
that plugin schemes subclass, Java's `URLEncoder` semantics (`java_urlencode`), replay-window
checks on received timestamps, and the lookup of a scheme by name through the `dockyard.crypto`
entry-point group. It never decides *which* parameters go on the wire: the request builder hands
over exactly what will be sent, and the signer signs exactly that.

The secret is only ever read with `Secret.reveal()` inside `sign`; everything that is shown
(`describe`, error messages) is built with the placeholder `<secret>` instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dockyard.runtime import percent
from dockyard.runtime.errors import DockyardError
from dockyard.runtime.plugins import PluginError, available, load, load_as
from dockyard.runtime.secrets import Secret

__all__ = [
    "CAINIAO_LINK",
    "HMAC_SHA256_HEADER",
    "JD_JOS",
    "JD_LOP_HMAC_MD5",
    "JD_LOP_HMAC_SHA1",
    "JD_LOP_HMAC_SHA256",
    "JD_LOP_HMAC_SHA512",
    "JD_LOP_MD5_SALT",
    "MASK",
    "QIMEN_HMAC",
    "QIMEN_HMAC_SHA256",
    "QIMEN_MD5",
    "SF_MSGDIGEST",
    "SIGNERS",
    "CainiaoSigner",
    "HmacHeaderSigner",
    "JosSigner",
    "LopSigner",
    "QimenSigner",
    "ReplayError",
    "SfSigner",
    "SignInput",
    "SignInputError",
    "SignatureError",
    "Signer",
    "get_signer",
    "java_urlencode",
    "signer_names",
    "sorted_pairs",
]

# What `describe` shows in place of the secret (and what `text` is given to build the masked form).
MASK = "<secret>"
DEFAULT_ZONE = "Asia/Shanghai"  # QIMEN, JOS and LOP send wall-clock Beijing time without an offset
DEFAULT_WINDOW = timedelta(minutes=5)  # the QIMEN reference receiver's window


class SignatureError(DockyardError):
    """A signature does not match (or cannot be checked). The message names the scheme, never the
    secret or the signature that was expected."""


class ReplayError(SignatureError):
    """The signed timestamp is missing, unreadable, or outside the accepted window."""


class SignInputError(DockyardError):
    """What a scheme needs is missing or unusable: a required parameter (JD LOP's `app_key`, SF's
    `timestamp`), an unknown option, an option value the scheme does not know."""


@dataclass(frozen=True)
class SignInput:
    """What a signer reads: the parameters (system parameters or form fields, in the order they are
    sent, never the signature itself), the body text the scheme covers ("" when none), and the
    scheme's options from the spec's `request.sign.options`."""

    params: Mapping[str, str]
    body: str = ""
    options: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A number slipping in as a value would be signed as its repr on one side and as the wire
        # text on the other; refuse it here, where the mistake is made.
        for what, mapping in (("parameter", self.params), ("option", self.options)):
            for key, value in mapping.items():
                if not isinstance(key, str) or not isinstance(value, str):
                    raise TypeError(f"sign {what} {key!r}: keys and values must be text, not {type(value).__name__}")
        if not isinstance(self.body, str):
            raise TypeError(f"the sign body must be text, not {type(self.body).__name__}")
        # A lone surrogate (json.loads lets one through) has no UTF-8 form and could not be sent;
        # say so here rather than fail half-way through a digest. All of the text is encoded at
        # once (Python never pairs two surrogates of adjacent strings, so the whole fails exactly
        # when a part does); only then is each part tried, to name the one that holds it.
        try:
            "".join((self.body, *(k + v for k, v in self.params.items()))).encode("utf-8")
        except UnicodeEncodeError:
            for where, text in (("the body", self.body),
                                *((f"parameter {k!r}", k + v) for k, v in self.params.items())):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise SignInputError(f"{where} holds {text[exc.start]!r}, which has no UTF-8 form") from None


# ---------------------------------------------------------------------------------------------
# Building blocks


def java_urlencode(text: str) -> str:
    """`java.net.URLEncoder.encode(text, "UTF-8")`: ASCII letters, digits and `.-*_` stay, a space
    becomes `+`, every other character becomes `%XX` (uppercase) for each of its UTF-8 bytes.

    Python's `quote_plus` differs on `*` (it encodes it) and `~` (it keeps it); SF's server runs
    Java, so its digest is over Java's form and ours must match byte for byte."""
    return percent.encode(text, percent.JAVA_URLENCODER)


def sorted_pairs(params: Mapping[str, str], *, skip_empty: bool = False, exclude: tuple[str, ...] = ()) -> str:
    """Σsorted(k+v): keys sorted in plain byte order of their UTF-8 (case-sensitive, so `customerId`
    sorts before `format` and `A1` before `a10` before `a9`), each key directly followed by its
    value, no separators. `skip_empty` drops pairs whose key or value is empty (the TOP/QIMEN rule)."""
    # UTF-8 byte order, not Python's code-point order: the two agree for every BMP character, and
    # byte order is what the notes specify (Java's String order differs only above U+FFFF).
    keys = sorted((k for k in params if k not in exclude), key=lambda k: k.encode("utf-8"))
    return "".join(k + params[k] for k in keys if not (skip_empty and (not k or not params[k])))


def _utf8(text: str) -> bytes:
    return text.encode("utf-8")


def _hex(digest: bytes, *, upper: bool) -> str:
    text = digest.hex()
    return text.upper() if upper else text


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _hmac(algorithm: str, key: str, text: str) -> bytes:
    return hmac.new(_utf8(key), _utf8(text), algorithm).digest()


def _shown(value: str, limit: int = 60) -> str:
    """A received value quoted for an error message: it comes from outside, so keep it short."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


# ---------------------------------------------------------------------------------------------
# Timestamps

# ASCII digits only: `\d` would also take Arabic-Indic and other digits that no sender means.
_WALL = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{3}))?")
_EPOCH = re.compile(r"[0-9]{10}|[0-9]{13}")


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SignInputError(f"option timezone: unknown time zone {name!r}") from None


def _parse_wall(scheme: str, text: str, zone: tzinfo, *, millis: bool) -> datetime:
    """`yyyy-MM-dd HH:mm:ss` (and `.SSS` when `millis`) as wall-clock time in `zone`. Matched by a
    strict pattern first, because `strptime` would also take one-digit months and hours."""
    m = _WALL.fullmatch(text)
    if m is None or (m.group(7) is not None and not millis):
        shape = "yyyy-MM-dd HH:mm:ss[.SSS]" if millis else "yyyy-MM-dd HH:mm:ss"
        raise ReplayError(f"{scheme}: timestamp {_shown(text)} is not {shape}")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    ms = int(m.group(7) or 0)
    try:
        return datetime(y, mo, d, h, mi, s, ms * 1000, tzinfo=zone)
    except ValueError:
        raise ReplayError(f"{scheme}: timestamp {_shown(text)} is not a valid date and time") from None


def _parse_epoch(scheme: str, text: str) -> datetime:
    """Epoch seconds (10 digits) or milliseconds (13 digits); any other length is refused rather
    than guessed, so a value in the wrong unit never lands decades away and passes unnoticed."""
    if not _EPOCH.fullmatch(text):
        raise ReplayError(f"{scheme}: timestamp {_shown(text)} is not epoch seconds (10 digits) "
                          "or milliseconds (13 digits)")
    value = int(text)
    return datetime.fromtimestamp(value / 1000 if len(text) == 13 else value, UTC)


def _parse_any(scheme: str, text: str, zone: tzinfo) -> datetime:
    """Epoch seconds/millis, or ISO-8601 (a text without an offset is read in `zone`)."""
    if text.isascii() and text.isdigit():
        return _parse_epoch(scheme, text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ReplayError(f"{scheme}: timestamp {_shown(text)} is neither epoch seconds/milliseconds "
                          "nor ISO-8601") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)


# ---------------------------------------------------------------------------------------------
# The base


class Signer(ABC):
    """A signing scheme. Built-ins are instances of the subclasses below; a plugin subclasses this,
    implements `text` and `sign` (and usually `describe`), and registers an instance under the
    `dockyard.crypto` entry-point group."""

    name: str
    # Where the signature goes by default: ("query" | "form" | "header", field name).
    placement: tuple[str, str]
    # False for schemes whose signed text carries no timestamp (Cainiao): `verify` then checks the
    # digest only and replay protection relies on the receiver's dedupe.
    signs_timestamp: bool = True
    # The options a scheme reads, each with its allowed values (None: any text). None as a whole
    # means "not declared": options are then passed through unchecked (the plugin's choice).
    known_options: Mapping[str, tuple[str, ...] | None] | None = None
    # An option that, when a spec leaves it out, is the request URL's path (as sent, before any
    # endpoint rewrite): JD LOP signs the API path, and a spec whose path is a config value
    # (url: "https://{host}{queryPath}") cannot write it as a constant option.
    url_path_option: str | None = None

    @abstractmethod
    def text(self, inp: SignInput, secret: str) -> str:
        """The exact text that is digested or HMAC'd, with `secret` where the scheme puts it (HMAC
        schemes leave it out: it is the key). Called with `MASK` to show the text safely."""

    @abstractmethod
    def sign(self, inp: SignInput, secret: Secret) -> str:
        """The signature as it is sent."""

    def describe(self, inp: SignInput) -> str:
        """How the signed text was built, for an engineer, with the secret shown as `<secret>`."""
        return f"{self.name}\nsigned text:\n{self.text(inp, MASK)}"

    def verify(self, inp: SignInput, signature: str, secret: Secret, *, now: datetime | None = None,
               window: timedelta = DEFAULT_WINDOW) -> None:
        """Raise SignatureError unless `signature` is what `sign` gives for `inp`. With `now`
        (timezone-aware), the signed timestamp must also lie within ±`window` of it, else
        ReplayError. The comparison is constant-time and exact: QIMEN receivers compare the
        uppercase hex case-sensitively, and for Base64 the case is the value."""
        try:
            expected = self.sign(inp, secret)
        except SignInputError as exc:
            raise SignatureError(f"{self.name}: cannot check the signature: {exc}") from exc
        # A received signature is untrusted text: one that cannot be UTF-8 encoded simply differs.
        if not hmac.compare_digest(_utf8(expected), signature.encode("utf-8", "replace")):
            raise SignatureError(f"{self.name}: the signature does not match")
        if now is None:
            return
        if now.tzinfo is None:
            raise ValueError("verify(now=…) must be timezone-aware")
        if not self.signs_timestamp:
            return
        when = self.timestamp(inp)
        if when is None:
            raise ReplayError(f"{self.name}: the message carries no timestamp "
                              f"(parameter {self._timestamp_param(inp)!r})")
        skew = when - now
        if abs(skew) > window:
            direction = "old" if skew < timedelta(0) else "in the future"
            raise ReplayError(f"{self.name}: the timestamp {when.isoformat()} is {abs(skew).total_seconds():.0f}s "
                              f"{direction}; accepted: ±{window.total_seconds():.0f}s")

    def timestamp(self, inp: SignInput) -> datetime | None:
        """The signed timestamp, or None when the parameter is absent. Raises ReplayError when it is
        present but unreadable. This default reads option `timestamp_param` (default `timestamp`)
        as epoch seconds/millis, `yyyy-MM-dd HH:mm:ss[.SSS]` or ISO-8601 in option `timezone`."""
        text = inp.params.get(self._timestamp_param(inp))
        if text is None:
            return None
        zone = self._zone(inp)
        if _WALL.fullmatch(text):
            return _parse_wall(self.name, text, zone, millis=True)
        return _parse_any(self.name, text, zone)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'name', '?')}>"

    # Helpers for subclasses --------------------------------------------------------------------

    def check_options(self, inp: SignInput) -> None:
        """Refuse options the scheme does not read (a typo must not silently change nothing)."""
        if self.known_options is None:
            return
        for key, value in inp.options.items():
            if key not in self.known_options:
                known = ", ".join(sorted(self.known_options)) or "none"
                raise SignInputError(f"{self.name}: unknown option {key!r} (known: {known})")
            allowed = self.known_options[key]
            if allowed is not None and value not in allowed:
                raise SignInputError(f"{self.name}: option {key}={value!r} must be one of {', '.join(allowed)}")

    def option(self, inp: SignInput, key: str, default: str) -> str:
        self.check_options(inp)
        return inp.options.get(key, default)

    def _timestamp_param(self, inp: SignInput) -> str:
        return inp.options.get("timestamp_param", "timestamp")

    def _zone(self, inp: SignInput) -> tzinfo:
        return _zone(self.option(inp, "timezone", DEFAULT_ZONE))

    def _require(self, inp: SignInput, key: str) -> str:
        value = inp.params.get(key)
        if value is None:
            raise SignInputError(f"{self.name}: the parameter {key!r} is missing; the scheme signs it")
        return value


# ---------------------------------------------------------------------------------------------
# QIMEN / TOP


class QimenSigner(Signer):
    """QIMEN (TOP) `sign_method` md5, hmac or hmac-sha256, over Σsorted(k+v) of the query
    parameters (empty keys and values skipped, as the TOP SDK does) followed by the XML body."""

    placement = ("query", "sign")
    known_options: Mapping[str, tuple[str, ...] | None] = {"timezone": None, "timestamp_param": None}
    # sign_method → (hashlib name, label shown by describe)
    _METHODS: ClassVar[Mapping[str, tuple[str, str]]] = {
        "md5": ("md5", "MD5"), "hmac": ("md5", "HMAC-MD5"), "hmac-sha256": ("sha256", "HMAC-SHA256"),
    }

    def __init__(self, name: str, method: str) -> None:
        if method not in self._METHODS:
            raise ValueError(f"unknown QIMEN sign_method {method!r}")
        self.name = name
        self.method = method

    def _content(self, inp: SignInput) -> str:
        self.check_options(inp)
        # Receivers keep empty values in their sign string while senders skip them, so an empty
        # parameter must never be sent at all (the request builder drops them); skipping them here
        # keeps the signature right for what is sent.
        return sorted_pairs(inp.params, skip_empty=True, exclude=("sign",)) + inp.body

    def text(self, inp: SignInput, secret: str) -> str:
        content = self._content(inp)
        return secret + content + secret if self.method == "md5" else content

    def describe(self, inp: SignInput) -> str:
        algorithm, label = self._METHODS[self.method]
        width = hashlib.new(algorithm).digest_size * 2
        if self.method == "md5":
            how = "<secret> + sorted parameters (key+value, empty ones skipped) + body + <secret>"
            digest = f"MD5 of the UTF-8 bytes, {width} hex UPPERCASE"
        else:
            how = "sorted parameters (key+value, empty ones skipped) + body; the secret is the HMAC key"
            digest = f"{label}(key=<secret>, UTF-8 bytes), {width} hex UPPERCASE"
        return f"{self.name} ({how})\nsigned text:\n{self.text(inp, MASK)}\ndigest: {digest}"

    def sign(self, inp: SignInput, secret: Secret) -> str:
        key = secret.reveal()
        if self.method == "md5":
            return _hex(hashlib.md5(_utf8(self.text(inp, key))).digest(), upper=True)
        return _hex(_hmac(self._METHODS[self.method][0], key, self.text(inp, key)), upper=True)

    def timestamp(self, inp: SignInput) -> datetime | None:
        text = inp.params.get(self._timestamp_param(inp))
        return None if text is None else _parse_wall(self.name, text, self._zone(inp), millis=False)


# ---------------------------------------------------------------------------------------------
# SF Express


class SfSigner(Signer):
    """SF open platform `msgDigest`: Base64(raw MD5(UTF-8(URLENC(msgData + timestamp + checkWord))))
    with Java's URLEncoder. msgData is the body; timestamp is the form field (same string as sent)."""

    placement = ("form", "msgDigest")
    known_options: Mapping[str, tuple[str, ...] | None] = {"timestamp_param": None}

    def __init__(self, name: str = "sf-msgdigest") -> None:
        self.name = name

    def _head(self, inp: SignInput) -> str:
        self.check_options(inp)
        # Seconds or milliseconds is unconfirmed for SF: whatever string is sent is what is signed.
        return inp.body + self._require(inp, self._timestamp_param(inp))

    def text(self, inp: SignInput, secret: str) -> str:
        """The text BEFORE URL-encoding (`describe` shows the encoded form too)."""
        return self._head(inp) + secret

    def describe(self, inp: SignInput) -> str:
        # URL-encoding works character by character, so encoding the known part and appending the
        # mask shows exactly the encoded text with the checkWord's encoding hidden.
        return (f"{self.name} (msgData + timestamp + checkWord)\n"
                f"text before URL-encoding:\n{self.text(inp, MASK)}\n"
                "URL-encoded as Java's URLEncoder.encode(…, \"UTF-8\"), checkWord encoded in place\n"
                "(letters, digits and .-*_ kept, space → +, everything else %XX of its UTF-8 bytes):\n"
                f"{java_urlencode(self._head(inp))}{MASK}\n"
                "digest: Base64(raw MD5 of the UTF-8 bytes of the URL-encoded text), 24 characters")

    def sign(self, inp: SignInput, secret: Secret) -> str:
        encoded = java_urlencode(self.text(inp, secret.reveal()))
        return _b64(hashlib.md5(_utf8(encoded)).digest())

    def timestamp(self, inp: SignInput) -> datetime | None:
        self.check_options(inp)
        text = inp.params.get(self._timestamp_param(inp))
        return None if text is None else _parse_epoch(self.name, text)


# ---------------------------------------------------------------------------------------------
# JD JOS


class JosSigner(Signer):
    """JD JOS (`routerjson`): upper-hex MD5(appSecret + Σsorted(k+v) + appSecret) over every
    parameter but `sign`; the business JSON is the parameter `360buy_param_json`."""

    placement = ("query", "sign")
    known_options: Mapping[str, tuple[str, ...] | None] = {"timezone": None, "timestamp_param": None}
    PARAM_JSON = "360buy_param_json"

    def __init__(self, name: str = "jd-jos") -> None:
        self.name = name

    def _params(self, inp: SignInput) -> dict[str, str]:
        self.check_options(inp)
        params = dict(inp.params)
        # The business JSON travels as a parameter; a spec that hands it over as the body means the
        # same parameter. An explicit parameter wins (it is what is sent).
        if inp.body and self.PARAM_JSON not in params:
            params[self.PARAM_JSON] = inp.body
        return params

    def text(self, inp: SignInput, secret: str) -> str:
        return secret + sorted_pairs(self._params(inp), exclude=("sign",)) + secret

    def describe(self, inp: SignInput) -> str:
        return (f"{self.name} (<secret> + every parameter but sign, sorted, key+value + <secret>; "
                f"the body travels as {self.PARAM_JSON})\nsigned text:\n{self.text(inp, MASK)}\n"
                "digest: MD5 of the UTF-8 bytes, 32 hex UPPERCASE")

    def sign(self, inp: SignInput, secret: Secret) -> str:
        return _hex(hashlib.md5(_utf8(self.text(inp, secret.reveal()))).digest(), upper=True)

    def timestamp(self, inp: SignInput) -> datetime | None:
        text = inp.params.get(self._timestamp_param(inp))
        return None if text is None else _parse_wall(self.name, text, self._zone(inp), millis=False)


# ---------------------------------------------------------------------------------------------
# JD Logistics LOP


class LopSigner(Signer):
    """JD Logistics (LOP) gateway: a fixed sequence of named fields with the app secret wrapped around
    it, then MD5 of that text (`md5-salt`) or Base64(HMAC(key=appSecret)) of the SAME text for the
    HMacXXX algorithms. JD's SDK builds the content once and hands it to whichever algorithm is
    chosen (docs/signing.md, "JD LOP: what the HMAC variants sign", cites the sources)."""

    placement = ("query", "sign")
    url_path_option = "path"
    # (label in the signed text, parameter it comes from); `method` is the API path and
    # `param_json` the raw JSON body. The order is fixed by the gateway, not sorted.
    FIELDS = (("access_token", "access_token"), ("app_key", "app_key"), ("method", "method"),
              ("param_json", None), ("timestamp", "timestamp"), ("v", "v"))
    # hashlib name → LOP's `algorithm` value
    _HMACS: ClassVar[Mapping[str, str]] = {
        "md5": "HMacMD5", "sha1": "HMacSHA1", "sha256": "HMacSHA256", "sha512": "HMacSHA512",
    }

    def __init__(self, name: str, algorithm: str) -> None:
        if algorithm != "md5-salt" and algorithm not in self._HMACS:
            raise ValueError(f"unknown LOP algorithm {algorithm!r}")
        self.name = name
        self.algorithm = algorithm
        options: dict[str, tuple[str, ...] | None] = {"timezone": None, "path": None}
        if algorithm == "md5-salt":
            options["case"] = ("lower", "upper")
        self.known_options = options

    def _content(self, inp: SignInput) -> str:
        self.check_options(inp)
        parts: list[str] = []
        for label, param in self.FIELDS:
            if param is None:
                value = inp.body
            elif param == "method" and "method" not in inp.params and "path" in inp.options:
                # The path is in the URL, not the query; option `path` names it without sending a
                # `method` parameter the gateway does not expect.
                value = inp.options["path"]
            else:
                value = self._require(inp, param)
            parts.append(label + value)
        return "".join(parts)

    def text(self, inp: SignInput, secret: str) -> str:
        # The same wrapped text for every algorithm: with HMAC the secret is also the key.
        return secret + self._content(inp) + secret

    def describe(self, inp: SignInput) -> str:
        order = " + ".join(f'"{label}"+{param or "body"}' for label, param in self.FIELDS)
        how = f"<secret> + {order} + <secret>"
        if self.algorithm == "md5-salt":
            case = self.option(inp, "case", "lower")
            digest = f"MD5 of the UTF-8 bytes, 32 hex {case}case"
        else:
            how += "; the secret is also the HMAC key"
            digest = f"Base64({self._HMACS[self.algorithm]}(key=<secret>, UTF-8 bytes))"
        return f"{self.name} ({how})\nsigned text:\n{self.text(inp, MASK)}\ndigest: {digest}"

    def sign(self, inp: SignInput, secret: Secret) -> str:
        key = secret.reveal()
        if self.algorithm == "md5-salt":
            # The official demo sends uppercase, another JD sample lowercase; which case the server
            # requires is unconfirmed, so it is an option (default lower) and both are tested.
            upper = self.option(inp, "case", "lower") == "upper"
            return _hex(hashlib.md5(_utf8(self.text(inp, key))).digest(), upper=upper)
        return _b64(_hmac(self.algorithm, key, self.text(inp, key)))

    def timestamp(self, inp: SignInput) -> datetime | None:
        text = inp.params.get("timestamp")
        return None if text is None else _parse_wall(self.name, text, self._zone(inp), millis=True)


# ---------------------------------------------------------------------------------------------
# Cainiao LINK


class CainiaoSigner(Signer):
    """Cainiao LINK `data_digest`: Base64(MD5(UTF-8(logistics_interface + secretKey))). Option
    `digest=hex` Base64-encodes the lowercase hex text instead of the raw 16 bytes, as some
    Cainiao-style gateways do. Nothing else is signed: not msg_type, not a timestamp, so replay
    protection for LINK messages relies on dedupe (the order code, the idempotency store)."""

    placement = ("form", "data_digest")
    signs_timestamp = False
    known_options: Mapping[str, tuple[str, ...] | None] = {"digest": ("raw", "hex")}

    def __init__(self, name: str = "cainiao-link") -> None:
        self.name = name

    def text(self, inp: SignInput, secret: str) -> str:
        self.check_options(inp)
        return inp.body + secret

    def describe(self, inp: SignInput) -> str:
        raw = self.option(inp, "digest", "raw") == "raw"
        digest = ("Base64(raw 16-byte MD5 of the UTF-8 bytes)" if raw
                  else "Base64(the 32-character lowercase hex MD5 of the UTF-8 bytes)")
        return (f"{self.name} (logistics_interface + <secret>; no timestamp is signed)\nsigned text:\n"
                f"{self.text(inp, MASK)}\ndigest: {digest}")

    def sign(self, inp: SignInput, secret: Secret) -> str:
        digest = hashlib.md5(_utf8(self.text(inp, secret.reveal())))
        if self.option(inp, "digest", "raw") == "raw":
            return _b64(digest.digest())
        return _b64(digest.hexdigest().encode("ascii"))

    def timestamp(self, inp: SignInput) -> datetime | None:
        self.check_options(inp)
        return None


# ---------------------------------------------------------------------------------------------
# Generic HMAC-SHA256 in a header


class HmacHeaderSigner(Signer):
    """HMAC-SHA256(key=secret, Σsorted(k+v) + body) in a header (default `X-Signature`, option
    `header`), lowercase hex or Base64 (option `encoding`). Every parameter is signed, empty or
    not: nothing is skipped, so nothing sent goes unsigned."""

    placement = ("header", "X-Signature")
    known_options: Mapping[str, tuple[str, ...] | None] = {
        "encoding": ("hex", "base64"), "header": None, "timestamp_param": None, "timezone": None,
    }

    def __init__(self, name: str = "hmac-sha256-header") -> None:
        self.name = name

    def text(self, inp: SignInput, secret: str) -> str:
        self.check_options(inp)
        return sorted_pairs(inp.params) + inp.body

    def describe(self, inp: SignInput) -> str:
        encoding = self.option(inp, "encoding", "hex")
        shown = "64 hex lowercase" if encoding == "hex" else "Base64"
        return (f"{self.name} (sorted parameters key+value + body; the secret is the HMAC key)\n"
                f"signed text:\n{self.text(inp, MASK)}\ndigest: HMAC-SHA256(key=<secret>, UTF-8 bytes), {shown}")

    def sign(self, inp: SignInput, secret: Secret) -> str:
        digest = _hmac("sha256", secret.reveal(), self.text(inp, secret.reveal()))
        return digest.hex() if self.option(inp, "encoding", "hex") == "hex" else _b64(digest)

    def timestamp(self, inp: SignInput) -> datetime | None:
        text = inp.params.get(self._timestamp_param(inp))
        return None if text is None else _parse_any(self.name, text, self._zone(inp))


# ---------------------------------------------------------------------------------------------
# The built-ins, by the names pyproject.toml registers under `dockyard.crypto`

QIMEN_MD5 = QimenSigner("qimen-md5", "md5")
QIMEN_HMAC = QimenSigner("qimen-hmac", "hmac")
QIMEN_HMAC_SHA256 = QimenSigner("qimen-hmac-sha256", "hmac-sha256")
SF_MSGDIGEST = SfSigner("sf-msgdigest")
JD_JOS = JosSigner("jd-jos")
JD_LOP_MD5_SALT = LopSigner("jd-lop-md5-salt", "md5-salt")
JD_LOP_HMAC_SHA256 = LopSigner("jd-lop-hmac-sha256", "sha256")
JD_LOP_HMAC_MD5 = LopSigner("jd-lop-hmac-md5", "md5")
JD_LOP_HMAC_SHA1 = LopSigner("jd-lop-hmac-sha1", "sha1")
JD_LOP_HMAC_SHA512 = LopSigner("jd-lop-hmac-sha512", "sha512")
CAINIAO_LINK = CainiaoSigner("cainiao-link")
HMAC_SHA256_HEADER = HmacHeaderSigner("hmac-sha256-header")

SIGNERS: dict[str, Signer] = {s.name: s for s in (
    QIMEN_MD5, QIMEN_HMAC, QIMEN_HMAC_SHA256, SF_MSGDIGEST, JD_JOS, JD_LOP_MD5_SALT, JD_LOP_HMAC_SHA256,
    JD_LOP_HMAC_MD5, JD_LOP_HMAC_SHA1, JD_LOP_HMAC_SHA512, CAINIAO_LINK, HMAC_SHA256_HEADER,
)}


def get_signer(name: str) -> Signer:
    """The signing scheme registered under `name` in `dockyard.crypto` (built-in or plugin). Raises
    PluginError for an unknown name or an entry that is not a Signer (e.g. a field cipher)."""
    signer: Signer = load_as("dockyard.crypto", name, Signer, "signing scheme")
    return signer


def signer_names() -> list[str]:
    """Every signing scheme's name: the built-ins plus each `dockyard.crypto` entry that loads as a
    Signer (the group also holds field ciphers; entries that fail to load are left out)."""
    names = set(SIGNERS)
    for name in available("dockyard.crypto"):
        if name in names:
            continue
        try:
            found = load("dockyard.crypto", name)
        except PluginError:
            continue
        if isinstance(found, Signer):
            names.add(name)
    return sorted(names)
