"""The wire request: a compiled mapping's document turned into exactly what a warehouse receives.

Order of work, which is what makes the signature right: transform → fingerprint the document →
encrypt the fields the spec names → serialize → compute the request fields (they may use `$body`)
→ sign over exactly the parameters and body text that will be sent → place the signature → encode
the URL and the body. Secrets are resolved by name here and never leave as text.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from dockyard.runtime.errors import DockyardError
from dockyard.runtime.mapping import Clock, CompiledMapping, _as_clock, system_clock
from dockyard.runtime.secrets import Secrets
from dockyard.runtime.serialize import form_pairs, scalar_text, serialize, to_form_bytes, to_json_bytes, url_quote
from dockyard.runtime.wire import WireError, WireSettings

__all__ = ["PreparedRequest", "RequestError", "WireRequest", "build_request", "encrypt_fields", "fill_url",
           "sign_body"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RequestError(DockyardError):
    """The request cannot be built: a config value is missing or unusable, a field is malformed."""


@dataclass(frozen=True)
class WireRequest:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass(frozen=True)
class PreparedRequest:
    """A request ready to send, with what the policies decided about it."""

    request: WireRequest
    document: dict[str, Any]  # the document as sent (after field encryption)
    fingerprint: str  # sha256 of the document before encryption: what "the same payload" means
    request_id: str
    idempotency_key: str | None
    idempotency_rule: str | None
    signature: str | None
    sign_scheme: str | None
    signed_string: str | None  # how the signature was computed, with the secret masked
    body_encoding: str = "utf-8"
    notes: tuple[str, ...] = field(default=())  # what the warehouse's wire settings did (dry-run shows them)

    def as_dict(self) -> dict[str, Any]:
        """The request as JSON-ready data (dry-run --json)."""
        try:
            body: str = self.request.body.decode(self.body_encoding)
        except UnicodeDecodeError:  # pragma: no cover - every target writes text
            body = self.request.body.hex()
        return {
            "method": self.request.method, "url": self.request.url,
            "headers": {k: v for k, v in self.request.headers}, "body": body,
            "idempotency_key": self.idempotency_key, "idempotency_rule": self.idempotency_rule,
            "request_id": self.request_id, "fingerprint": self.fingerprint,
            "signature": self.signature, "sign_scheme": self.sign_scheme,
            **({"wire": list(self.notes)} if self.notes else {}),
        }


def fill_url(template: str, context: Mapping[str, Any]) -> str:
    """Fill {name} placeholders from context values. Done by hand, never with str.format, so a
    template cannot reach attributes; a value that would change the URL's shape is refused."""
    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if context.get(name) is None:
            raise RequestError(f"the URL needs the config value {name!r}")
        text = str(context[name])
        if not text or any(ch.isspace() or ord(ch) < 32 for ch in text):
            raise RequestError(f"config value {name!r} cannot be used in a URL (empty, or holds spaces "
                               "or control characters)")
        return text
    return _PLACEHOLDER.sub(value, template)


def encrypt_fields(document: dict[str, Any], path: str, encrypt: Any) -> int:
    """Replace every value at `path` (with [] for list elements) by `encrypt(text)`; returns the
    count. A missing optional field is left out as it was."""
    parts = [p for p in path.replace("[]", ".[]").split(".") if p]

    def walk(node: Any, i: int) -> int:
        if i == len(parts) - 1:
            if isinstance(node, dict) and node.get(parts[i]) is not None:
                node[parts[i]] = encrypt(scalar_text(node[parts[i]], path))
                return 1
            return 0
        part = parts[i]
        if part == "[]":
            return sum(walk(item, i + 1) for item in node) if isinstance(node, list) else 0
        return walk(node.get(part), i + 1) if isinstance(node, dict) else 0

    return walk(document, 0)


def _texts(values: Mapping[str, Any] | None, where: str, drop_empty: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (values or {}).items():
        if value is None:
            continue
        text = scalar_text(value, f"{where}.{key}")
        if drop_empty and text == "":
            continue  # receivers keep empty values in their sign string, senders skip them: never send one
        out[key] = text
    return out


def build_request(mapping: CompiledMapping, order: Mapping[str, Any], *, context: Mapping[str, Any] | None = None,
                  clock: Clock | datetime | None = None, secrets: Secrets | None = None,
                  request_id: str | None = None, validate: bool = False, describe: bool = True,
                  wire: WireSettings | None = None) -> PreparedRequest:
    """The request for one order. `describe=False` skips writing out how the signature was made
    (`signed_string`), which only a person reading a dry run needs. `wire` is the warehouse's wire
    settings (signing options, fields to encrypt), applied within what the spec allows; the notes
    of the result say what they did."""
    meta = mapping.meta.get("request")
    notes: tuple[str, ...] = ()
    if wire and meta is not None:
        try:
            applied = wire.apply(meta, mapping.name)
        except WireError as exc:
            raise RequestError(f"the warehouse's wire settings do not fit {mapping.name}:\n{exc}") from None
        meta, notes = applied.meta, applied.notes
    clk = system_clock if clock is None else _as_clock(clock)
    ctx = mapping.check_context(context)
    document = mapping.transform(order, ctx, clk, validate=validate)
    plain = mapping.json_plain(document)  # encryption below only replaces text with text
    fingerprint = hashlib.sha256(to_json_bytes(document, plain=plain)).hexdigest()
    target = mapping.target
    encoding = target.xml.encoding if target.xml is not None else "utf-8"
    if meta is None:  # a mapping without a request section: the document is the body
        body = serialize(document, target, plain=plain)
        bare = WireRequest("POST", "", (("Content-Type", target.content_type),), body)
        return PreparedRequest(bare, document, fingerprint, request_id or "", None, None, None, None, None, encoding)

    secrets = secrets if secrets is not None else Secrets([])
    for enc in meta["encrypt"]:
        from dockyard.runtime.fieldcrypto import get_cipher

        cipher = get_cipher(enc["scheme"])
        key = secrets.get(enc["key"])
        options = enc["options"]
        encrypt_fields(document, enc["path"], lambda text, c=cipher, k=key, o=options: c.encrypt(text, k, o))

    document_bytes = serialize(document, target, plain=plain)
    body_text = document_bytes.decode(encoding)
    rid = request_id or uuid.uuid4().hex
    fields = mapping.call(mapping.module.request_fields, order, ctx, clk, body_text, rid)
    query = _texts(fields["query"], "request.query", drop_empty=True)
    headers = _texts(fields["headers"], "request.headers", drop_empty=False)
    form = _texts(fields["form"], "request.form", drop_empty=False) if fields["form"] is not None else None
    if form is None and target.format == "form":
        form = dict(form_pairs(document))
    key = fields["key"]
    key_text = None if key is None else scalar_text(key, "request.idempotency.key")

    signature = signed_string = scheme = None
    sign = meta["sign"]
    if sign is not None:
        from dockyard.runtime.signing import SignInput, get_signer

        signer = get_signer(sign["scheme"])
        section, name = sign["into"] if sign["into"][0] else signer.placement
        if section == "header" and "header" in sign["options"]:
            name = sign["options"]["header"]
        params_from = sign["params"] or ("form" if section == "form" else "query")
        params = dict(form or {}) if params_from == "form" else dict(query)
        options = dict(sign["options"])
        if signer.url_path_option and signer.url_path_option not in options:
            options[signer.url_path_option] = urlsplit(fill_url(meta["url"], ctx)).path
        inp = SignInput(params, sign_body(sign["body"], section, form, query, body_text), options)
        secret = secrets.get(sign["secret"])
        signature = signer.sign(inp, secret)
        signed_string = signer.describe(inp) if describe else None
        scheme = sign["scheme"]
        if section == "query":
            query[name] = signature
        elif section == "form":
            if form is None:
                raise RequestError(f"{scheme} puts its signature into the form, but the request has no form")
            form[name] = signature
        else:
            headers[name] = signature

    if form is not None:
        body = to_form_bytes(form)
        content_type = "application/x-www-form-urlencoded;charset=utf-8"
    else:
        body = document_bytes
        content_type = target.content_type
    if not any(k.lower() == "content-type" for k in headers):
        headers = {"Content-Type": content_type, **headers}
    url = fill_url(meta["url"], ctx)
    if query:
        url += ("&" if "?" in url else "?") + "&".join(f"{url_quote(k)}={url_quote(v)}" for k, v in query.items())
    wire_request = WireRequest(meta["method"], url, tuple(headers.items()), body)
    idem = meta["idempotency"]
    rule = _rule(idem["rule"], ctx) if idem else None
    return PreparedRequest(wire_request, document, fingerprint, rid, key_text, rule,
                           signature, scheme, signed_string, encoding if form is None else "utf-8", notes)


def _rule(rule: str, ctx: Mapping[str, Any]) -> str:
    """A duplicate rule written as {name} is per-warehouse config."""
    m = _PLACEHOLDER.fullmatch(rule)
    if m is None:
        return rule
    value = ctx.get(m.group(1))
    if value not in ("skip", "resend", "query"):
        raise RequestError(f"config value {m.group(1)!r} must be skip, resend or query, not {value!r}")
    return str(value)


def sign_body(spec: str, section: str, form: Mapping[str, str] | None, query: Mapping[str, str],
               body_text: str) -> str:
    """What the signer reads as its body. Default: the HTTP body when the signature goes in the
    query or a header; for form-placed signatures, the form field that carries the document."""
    if spec == "none":
        return ""
    if spec.startswith("form."):
        return (form or {}).get(spec[5:], "")
    if spec.startswith("query."):
        return query.get(spec[6:], "")
    if spec == "body" or section != "form":
        return body_text
    return body_text if body_text in (form or {}).values() else ""
