"""What makes two callbacks the same event: a dedupe identity that rests on signed content only.

A signature covers what its scheme signs, which is not always all of the message. A Cainiao LINK
digest covers `logistics_interface` only: not `msg_id`, not `msg_type`. Had the dedupe key been
`msg_id` (order-status-upload's event id), a captured callback re-sent with a new or absent
`msg_id` would pass the signature check and be applied, and forwarded, again.

`signed_input` computes what a callback's scheme signs, by the same rule as `feedback.verify`
(which uses it). `dedupe_identity` then keeps the mapping's event id only when that id is made of
signed content; otherwise the identity is a hash of the signed content itself:

1. the source fields the event id is computed from come from the mapping's lineage (compiled into
   every module); an id read from the clock (`now()`) is never signed;
2. a field is signed when changing it changes the text the scheme signs (found out on the first
   verified message of a callback flow, then remembered: a form field is changed, or the raw body;
   no secret is involved, the secret is masked);
3. identity = the event id, when every field it comes from is signed (QIMEN's outBizCode inside
   the signed XML; Cainiao's outBizCode inside the signed logistics_interface): a redelivery the
   warehouse signs again (a new timestamp) is still the same event;
   identity = `sha256:` + sha256 of the signed body, when the event id is not signed or absent
   and the body is signed (Cainiao's status upload: its logistics_interface; QIMEN's process
   report: its XML body, the key it had before);
   identity = `sha256:` + sha256 of the whole signed text, when not even the body is signed.

A flow with `verify: none` has no signed content: its identity is the event id (or a hash of the
body), as before; its guard (guards.py) is what keeps strangers from sending it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from dockyard.runtime.errors import DockyardError, InputError
from dockyard.runtime.inputs import read_form
from dockyard.runtime.mapping import CompiledMapping
from dockyard.runtime.request import sign_body
from dockyard.runtime.signing import MASK, Signer, SignInput, get_signer
from dockyard.service.config import CallbackConfig, VerifyConfig

__all__ = ["SignedInput", "dedupe_identity", "event_id_sources", "signed_input"]


def form_fields(body: bytes) -> dict[str, str]:
    """A form body's fields (the first value of a repeated one wins for the signature too). A body
    the strict reader takes gives the same fields either way, and its reading is kept for the
    mapping (runtime.inputs.read_form); anything else is read leniently, as before."""
    try:
        return read_form(body)
    except InputError:
        pass
    try:
        return dict(reversed(parse_qsl(body.decode("utf-8"), keep_blank_values=True)))
    except UnicodeDecodeError:
        return {}


@dataclass(frozen=True)
class SignedInput:
    """What a callback's scheme reads, and where its signature is."""

    signer: Signer
    inp: SignInput
    signature: str | None  # None: the callback carries none
    where: str  # "query 'sign'", for messages


def signed_input(v: VerifyConfig, query: Mapping[str, str], headers: Mapping[str, str], body: bytes,
                 form: Mapping[str, str] | None = None) -> SignedInput:
    """The parameters, the signed body and the signature of a callback, by the same rule as when we
    sign (runtime.request.sign_body). `form` replaces the body's form fields (for `covers`)."""
    signer = get_signer(v.scheme)
    section, name = signer.placement
    if section == "header" and "header" in v.options:
        name = v.options["header"]
    needs_form = section == "form" or v.params == "form" or v.body.startswith("form.")
    fields = dict(form if form is not None else (form_fields(body) if needs_form else {}))
    if section == "query":
        signature = query.get(name)
    elif section == "form":
        signature = fields.get(name)
    else:
        signature = headers.get(name)
    params_from = v.params or ("form" if section == "form" else "query")
    params = dict(fields if params_from == "form" else query)
    params.pop(name, None)
    signed_body = sign_body(v.body, section, fields, query, body.decode("utf-8", errors="replace"))
    return SignedInput(signer, SignInput(params, signed_body, dict(v.options)), signature, f"{section} {name!r}")


def _text(s: SignedInput) -> str | None:
    try:
        return s.signer.text(s.inp, MASK)
    except (DockyardError, TypeError, ValueError):
        return None


@functools.cache
def event_id_sources(mapping: CompiledMapping) -> frozenset[str] | None:
    """The top-level source fields the mapping's `event_id` is computed from; None when it has
    none or depends on the clock (then it is never signed content)."""
    module = mapping.module
    lineage: Mapping[str, Mapping[str, Any]] = getattr(module, "__dockyard_lineage__", {})
    for _file, line, col, path in getattr(module, "__dockyard_fields__", ()):
        if path.rsplit(".", 1)[-1] != "event_id":  # event_id, or events[].event_id of status-events
            continue
        info = lineage.get(f"{line}:{col}")
        if info is None or info.get("clock"):
            return None
        fields = {str(p).split(".", 1)[0].split("[", 1)[0] for p in info.get("paths", ())}
        return frozenset(f for f in fields if f)
    return None


def _covers(v: VerifyConfig, query: Mapping[str, str], headers: Mapping[str, str], body: bytes, source_format: str,
            fields: frozenset[str], signed_text: str | None) -> bool:
    """Whether every one of `fields` of the document is signed: changing it changes the signed text."""
    if source_format != "form":  # the document is the body: signed when the body is
        return _text(signed_input(v, query, headers, body + b" \x01")) != signed_text
    form = form_fields(body)
    for name in fields:
        changed = dict(form)
        changed[name] = form.get(name, "") + "\x01"
        # a raw body that is signed as a whole covers every field: change the raw text too
        if _text(signed_input(v, query, headers, body + b"&\x01", changed)) == signed_text:
            return False
    return True


def dedupe_identity(cfg: CallbackConfig, mapping: CompiledMapping, query: Mapping[str, str],
                    headers: Mapping[str, str], body: bytes, event: Mapping[str, Any], index: int = 0,
                    signed: SignedInput | None = None) -> str:
    """The identity under which a (verified) callback's event is recorded once; see the module.
    `index`: the event's place in the message, for a mapping that makes several events (a hash
    of the message alone would make them one). `signed`: what verifying the callback read
    (signed_input of the same callback), so that it is not read again."""
    event_id = event.get("event_id")
    given = str(event_id) if event_id not in (None, "") else None
    place = f"#{index}" if index else ""
    v = cfg.verify
    if v is None:
        return given or "sha256:" + hashlib.sha256(body).hexdigest() + place
    source_format = str(mapping.meta.get("source_format", "json"))
    sources = event_id_sources(mapping)
    if given is not None and sources and _known(cfg, ("covers", source_format, sources), lambda: _covers(
            v, query, headers, body, source_format, sources,
            _text(signed if signed is not None else signed_input(v, query, headers, body)))):
        return given
    read = signed if signed is not None else signed_input(v, query, headers, body)
    # The whole signed text (masked) is built only when it is needed: to find out, on a flow's first
    # message, whether the body is signed, and as the content when the body is not. When `signed`
    # comes from verifying, the scheme has just read this input (so the text can be built), and for
    # a flow whose body is signed (QIMEN's XML, Cainiao's logistics_interface) the identity is the
    # body's hash: no second text per callback.
    text = None if signed is not None else _text(read)
    if signed is None and text is None:  # pragma: no cover - a caller that did not verify, unreadable
        return "sha256:" + hashlib.sha256(body).hexdigest() + place
    body_signed = _known(cfg, ("body",), lambda: _text(signed_input(v, query, headers, body + b" \x01",
                                                                    _changed_body_field(v, body))) != _text(read))
    if body_signed and read.inp.body:
        content = read.inp.body
    else:
        text = text if text is not None else _text(read)
        if text is None:  # pragma: no cover - verify() passed, so the scheme could read its input
            return "sha256:" + hashlib.sha256(body).hexdigest() + place
        content = text
    # the same text as the hash of a raw body before (sha256:…), so keys recorded then still match
    return "sha256:" + hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest() + place


# Whether a field (or the body) is signed is a property of the callback's scheme and config, not of
# one message: found out on the first verified message (by changing the field), then remembered.
_KNOWN: dict[tuple[int, tuple[Any, ...]], tuple[CallbackConfig, bool]] = {}


def _known(cfg: CallbackConfig, what: tuple[Any, ...], find: Callable[[], bool]) -> bool:
    hit = _KNOWN.get((id(cfg), what))
    if hit is not None and hit[0] is cfg:
        return hit[1]
    found = find()
    _KNOWN[(id(cfg), what)] = (cfg, found)
    return found


def _changed_body_field(v: VerifyConfig, body: bytes) -> dict[str, str] | None:
    """The form with the field that carries the signed body changed (for `verify.body: form.NAME`)."""
    if not v.body.startswith("form."):
        return None
    form = form_fields(body)
    name = v.body.split(".", 1)[1]
    form[name] = form.get(name, "") + "\x01"
    return form
