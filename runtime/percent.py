"""Percent-encoding of text, each encoder a 256-entry table.

Form bodies carry whole JSON documents (SF's msgData, Cainiao's logistics_interface), and SF
signs them URL-encoded too, so every outbound order and every signed callback percent-encodes a
kilobyte or so of text. A regular expression with a Python callback per run of unsafe characters
costs a Python call for each `"`, `:` and `,` of the JSON; `str.translate` does the whole text in C.

An encoder's table maps each byte value to what stands for it: the byte's own character where it
is safe, `%XX` (uppercase hex) otherwise, and the encoder's choice for a space. Text that is not
ASCII is first turned into its UTF-8 bytes, each held as the character of the same value
(latin-1), so that one lookup per byte gives `%XX` for every byte of a multi-byte character. A lone
surrogate has no UTF-8 form: encoding it raises `UnicodeEncodeError`, as `quote_plus` does.
"""

from __future__ import annotations

__all__ = ["JAVA_URLENCODER", "QUOTE", "QUOTE_PLUS", "encode", "table"]

_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def table(safe: bytes, space: str) -> list[str]:
    """The table of an encoder that keeps the bytes of `safe` and writes a space as `space`."""
    out = [f"%{byte:02X}" for byte in range(256)]
    for byte in safe:
        out[byte] = chr(byte)
    out[0x20] = space
    return out


# `urllib.parse.quote_plus` and `quote(text, safe="")`: letters, digits and `_.-~` stay.
QUOTE_PLUS = table(_ALNUM + b"_.-~", "+")
QUOTE = table(_ALNUM + b"_.-~", "%20")
# `java.net.URLEncoder.encode(text, "UTF-8")`: letters, digits and `.-*_` stay (`~` does not).
JAVA_URLENCODER = table(_ALNUM + b".-*_", "+")


def encode(text: str, codes: list[str]) -> str:
    """`text` percent-encoded by the table `codes` (one of the tables above, or from `table`)."""
    if not text.isascii():
        text = text.encode("utf-8").decode("latin-1")
    return text.translate(codes)
