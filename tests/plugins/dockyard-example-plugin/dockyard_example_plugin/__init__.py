"""A warehouse signature scheme that Dockyard does not ship: upper-hex SHA-1 of
secret + sorted key+value pairs + body. Installed by a test to show that a plugin package is
enough to add a scheme, with no change to Dockyard."""

from __future__ import annotations

import hashlib

from dockyard.runtime.secrets import Secret
from dockyard.runtime.signing import Signer, SignInput


class ExampleSha1Upper(Signer):
    name = "example-sha1-upper"
    placement = ("header", "X-Example-Sign")

    def text(self, inp: SignInput, secret: str) -> str:
        pairs = "".join(k + v for k, v in sorted(inp.params.items()) if k and v)
        return secret + pairs + inp.body

    def describe(self, inp: SignInput) -> str:
        return f"upper-hex SHA-1 of: {self.text(inp, '<secret>')}"

    def sign(self, inp: SignInput, secret: Secret) -> str:
        return hashlib.sha1(self.text(inp, secret.reveal()).encode("utf-8")).hexdigest().upper()


EXAMPLE_SHA1_UPPER = ExampleSha1Upper()
