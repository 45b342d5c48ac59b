"""Per-warehouse wire settings: the signing options and field encryption a warehouse's config sets,
within what a spec allows.

A spec fixes how its request is built; a few things about it differ between warehouses that share
the spec (one 3PL wants the receiver's mobile SM4-encrypted, a JD gateway wants the md5-salt sign in
upper case, a Cainiao-style gateway digests the hex MD5). The spec declares what a warehouse may
change — `request.sign.configurable` (options of its signing scheme) and `request.encryptable`
(output fields, optionally with the ciphers allowed) — and the warehouse's config file says what it
wants, under `wire:`:

```yaml
wire:
  sign: {case: upper}
  encrypt:
    - {path: deliveryOrder.receiverInfo.mobile, scheme: sm4-ecb, key: QIMEN_SM4_KEY, options: {encoding: base64}}
```

This module owns reading that section (`WireSettings.parse`), splitting a config file into its
context values and its wire settings (`split_config`), and applying the settings to one compiled
mapping's request (`WireSettings.apply`): the result is the request section as if the spec had
been written for that warehouse, which is what the request builder then uses. Every problem is
reported at once, naming the spec, the setting and what the spec allows. A setting the spec does
not mention is refused, except an `encrypt` entry for a field the spec does not have (a warehouse's
config serves all its flows: the receiver's mobile is in the create, not in the cancel); whether
every entry is used by at least one of a warehouse's flows is checked over all of them
(`unused_encryption`). No secret value is read here: `key` is a secret's NAME.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from dockyard.runtime.errors import DockyardError

__all__ = ["WIRE_KEY", "AppliedWire", "FieldEncryption", "WireError", "WireSettings", "split_config",
           "unused_encryption"]

WIRE_KEY = "wire"  # the key of a warehouse config file that holds the wire settings
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_PATH = re.compile(r"[^.\[\]\s]+(\[\])?(\.[^.\[\]\s]+(\[\])?)*")


class WireError(DockyardError):
    """Wire settings that are malformed or that a spec does not allow. The message lists every
    problem, one per line."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class FieldEncryption:
    """One output field a warehouse wants encrypted: the path as in the spec's output tree, the
    cipher scheme, the NAME of the key's secret, and the cipher's options."""

    path: str
    scheme: str
    key: str
    options: tuple[tuple[str, str], ...] = ()

    def as_meta(self) -> dict[str, Any]:
        """The form of one entry of a compiled request's `encrypt` list."""
        return {"path": self.path, "scheme": self.scheme, "key": self.key, "options": dict(self.options)}


@dataclass(frozen=True)
class AppliedWire:
    """A request section with a warehouse's wire settings applied, and what they did."""

    meta: Mapping[str, Any]  # the request section to build with (the spec's, when nothing applies)
    notes: tuple[str, ...] = ()  # one line per setting applied or left aside, for dry-run


@dataclass(frozen=True)
class WireSettings:
    """What one warehouse's config sets on the wire. Frozen and hashable, so that what it does to a
    mapping is worked out once per mapping, not once per order."""

    sign: tuple[tuple[str, str], ...] = ()
    encrypt: tuple[FieldEncryption, ...] = ()
    _applied: dict[int, tuple[Mapping[str, Any], AppliedWire]] = field(
        default_factory=dict, init=False, compare=False, hash=False, repr=False)

    def __bool__(self) -> bool:
        return bool(self.sign or self.encrypt)

    @classmethod
    def parse(cls, data: object, where: str = WIRE_KEY) -> WireSettings:
        """The settings from a config file's `wire:` value (plain YAML data). Raises WireError
        listing every problem; `where` prefixes each (e.g. the file's name)."""
        if data is None:
            return cls()
        problems: list[str] = []
        if not isinstance(data, Mapping):
            raise WireError([f"{where}: must be a mapping with sign: and/or encrypt:"])
        for key in data:
            if key not in ("sign", "encrypt"):
                problems.append(f"{where}: unknown setting {key!r} (known: sign, encrypt)")
        sign = _options(data.get("sign"), f"{where}.sign", problems)
        encrypt: list[FieldEncryption] = []
        items = data.get("encrypt")
        if items is not None and not isinstance(items, list):
            problems.append(f"{where}.encrypt: must be a list of {{path, scheme, key, options}}")
            items = []
        seen: set[str] = set()
        for i, item in enumerate(items or ()):
            at = f"{where}.encrypt[{i}]"
            if not isinstance(item, Mapping):
                problems.append(f"{at}: must be a mapping with path, scheme and key")
                continue
            for key in item:
                if key not in ("path", "scheme", "key", "options"):
                    problems.append(f"{at}: unknown setting {key!r} (known: path, scheme, key, options)")
            values = {k: item.get(k) for k in ("path", "scheme", "key")}
            for k, v in values.items():
                if not isinstance(v, str) or not v:
                    problems.append(f"{at}.{k}: required, a text")
            path, scheme, key = (str(values[k] or "") for k in ("path", "scheme", "key"))
            if path and not _PATH.fullmatch(path):
                problems.append(f"{at}.path: {path!r} is not an output path (a.b.c, [] after a list)")
            if key and not _NAME.fullmatch(key):
                problems.append(f"{at}.key: {key!r} is not a secret name (the NAME of the key's secret, "
                                "never its value)")
            if path in seen:
                problems.append(f"{at}.path: {path!r} is listed twice")
            seen.add(path)
            options = _options(item.get("options"), f"{at}.options", problems)
            encrypt.append(FieldEncryption(path, scheme, key, options))
        if problems:
            raise WireError(problems)
        return cls(sign, tuple(encrypt))

    def describe(self) -> list[str]:
        """The settings as lines for a person (no secret values: keys are names)."""
        lines = [f"sign option {k}={v}" for k, v in self.sign]
        lines += [f"encrypt {e.path} with {e.scheme} (key {e.key})" for e in self.encrypt]
        return lines

    # -- against one spec -----------------------------------------------------------------------

    def apply(self, request_meta: Mapping[str, Any], mapping: str) -> AppliedWire:
        """The request section of mapping `mapping` with these settings applied. Raises WireError
        for a setting the spec does not allow or a value its scheme or cipher refuses."""
        cached = self._applied.get(id(request_meta))
        if cached is not None and cached[0] is request_meta:
            return cached[1]
        applied = self._apply(request_meta, mapping)
        if len(self._applied) > 256:  # a handful of mappings per warehouse; never grows without bound
            self._applied.clear()
        self._applied[id(request_meta)] = (request_meta, applied)
        return applied

    def _apply(self, request_meta: Mapping[str, Any], mapping: str) -> AppliedWire:
        from dockyard.runtime.fieldcrypto import CipherError, get_cipher
        from dockyard.runtime.plugins import PluginError
        from dockyard.runtime.signing import SignInput, SignInputError, get_signer

        problems: list[str] = []
        notes: list[str] = []
        meta = dict(request_meta)
        sign = request_meta.get("sign")
        if self.sign:
            if not isinstance(sign, Mapping):
                problems.append(f"{mapping}: wire.sign: the spec signs nothing, so there is no option to set")
            else:
                allowed = list(sign.get("configurable") or ())
                options = dict(sign.get("options") or {})
                for key, value in self.sign:
                    if key not in allowed:
                        problems.append(f"{mapping}: wire.sign.{key}: the spec does not let a warehouse set this "
                                        f"option of {sign['scheme']} (it allows: {', '.join(allowed) or 'none'})")
                    else:
                        options[key] = value
                        notes.append(f"sign option {key}={value} (from the warehouse config)")
                try:
                    get_signer(str(sign["scheme"])).check_options(SignInput({}, "", options))
                except (SignInputError, PluginError) as exc:
                    problems.append(f"{mapping}: wire.sign: {exc}")
                meta["sign"] = {**sign, "options": options}
        if self.encrypt:
            encryptable = {str(e["path"]): e for e in request_meta.get("encryptable") or ()}
            fixed = {str(e["path"]) for e in request_meta.get("encrypt") or ()}
            added: list[dict[str, Any]] = []
            for enc in self.encrypt:
                at = f"{mapping}: wire.encrypt {enc.path}"
                if enc.path in fixed:
                    problems.append(f"{at}: the spec already encrypts this field itself")
                    continue
                allowed_field = encryptable.get(enc.path)
                if allowed_field is None:
                    offered = ", ".join(sorted(encryptable)) or "none"
                    notes.append(f"encrypt {enc.path}: not applied, the spec does not offer it "
                                 f"(it lets a warehouse encrypt: {offered})")
                    continue
                schemes = list(allowed_field.get("schemes") or ())
                if schemes and enc.scheme not in schemes:
                    problems.append(f"{at}: the spec allows the ciphers {', '.join(schemes)}, not {enc.scheme!r}")
                    continue
                try:
                    get_cipher(enc.scheme).parse_options(dict(enc.options))
                except (PluginError, CipherError) as exc:
                    problems.append(f"{at}: {exc}")
                    continue
                added.append(enc.as_meta())
                notes.append(f"encrypt {enc.path} with {enc.scheme} (key {enc.key}; from the warehouse config)")
            meta["encrypt"] = [*(request_meta.get("encrypt") or ()), *added]
        if problems:
            raise WireError(problems)
        return AppliedWire(meta, tuple(notes))


def unused_encryption(wire: WireSettings, request_metas: Iterable[Mapping[str, Any]]) -> list[str]:
    """The `encrypt` paths of `wire` that none of the given request sections lets a warehouse
    encrypt: a typo, or a field of another integration. The caller reports them with its context."""
    offered = {str(e["path"]) for meta in request_metas for e in meta.get("encryptable") or ()}
    return [enc.path for enc in wire.encrypt if enc.path not in offered]


def split_config(data: Mapping[str, Any], where: str) -> tuple[dict[str, Any], WireSettings]:
    """A warehouse config file's values: its context values (everything but `wire:`) and its wire
    settings. Raises WireError for a malformed `wire:`."""
    context = {str(k): v for k, v in data.items() if k != WIRE_KEY}
    return context, WireSettings.parse(data.get(WIRE_KEY), f"{where}: wire")


def _options(data: object, where: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    """Scheme or cipher options: name → text (numbers and booleans written as YAML reads them are
    turned into the text they stand for, as in a spec's options)."""
    if data is None:
        return ()
    if not isinstance(data, Mapping):
        problems.append(f"{where}: must be a mapping of name: value")
        return ()
    out: list[tuple[str, str]] = []
    for key, value in data.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str | int | float | Decimal):
            text = str(value)
        else:
            problems.append(f"{where}.{key}: must be text, a number or true/false")
            continue
        out.append((str(key), text))
    return tuple(out)
