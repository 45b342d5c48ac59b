"""The `dockyard sign` command: compute one signature by hand, to check a scheme against a
warehouse's example or a failing request.

This module owns only the command line: parsing `KEY=VALUE` arguments, reading the secret from the
environment variable the user names, and turning problems into messages on stderr with exit codes
(2 usage, 1 a scheme refusing its input). What is signed and how lives in
`dockyard.runtime.signing`. The secret's value is never echoed: not with `--show-string` (the
signed text shows `<secret>`), not in any error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from dockyard.runtime.errors import DockyardError
from dockyard.runtime.plugins import PluginError, available
from dockyard.runtime.secrets import Secret
from dockyard.runtime.signing import Signer, SignInput, get_signer, signer_names

__all__ = ["sign"]

EXIT_ERRORS = 1
EXIT_USAGE = 2


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    """`KEY=VALUE` arguments in the order given; split at the first `=`, so values may hold `=`."""
    out: dict[str, str] = {}
    for item in values:
        key, eq, value = item.partition("=")
        if not eq:
            _fail(f"--{what} {item!r}: expected KEY=VALUE", EXIT_USAGE)
        if key in out:
            # A mapping holds one value per key; silently keeping the last would sign something
            # other than what the user typed.
            _fail(f"--{what} {key!r} is given twice", EXIT_USAGE)
        out[key] = value
    return out


def _body(body: str | None, body_file: str | None) -> str:
    if body is not None and body_file is not None:
        _fail("give --body or --body-file, not both", EXIT_USAGE)
    if body_file is None:
        return body or ""
    try:
        # The exact bytes, trailing newline included: the signature covers exactly what is sent.
        return Path(body_file).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        _fail(f"--body-file {body_file}: not UTF-8 text", EXIT_USAGE)
    except OSError as exc:
        _fail(f"--body-file {body_file}: {exc.strerror}", EXIT_USAGE)


def _signer(scheme: str) -> Signer:
    try:
        return get_signer(scheme)
    except PluginError as exc:
        # The registry's own message would list the field ciphers too: name only signing schemes.
        problem = str(exc) if scheme in available("dockyard.crypto") else f"unknown signing scheme {scheme!r}"
        _fail(f"{problem}\nknown signing schemes: {', '.join(signer_names())}", EXIT_USAGE)


def _secret(variable: str) -> Secret:
    value = os.environ.get(variable)
    if not value:
        state = "is not set" if value is None else "is empty"
        _fail(f"the environment variable {variable} {state}; it must hold the signing secret", EXIT_USAGE)
    return Secret(variable, value)


@click.command("sign")
@click.argument("scheme")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter (query parameter or form field) as sent; repeat, in order.")
@click.option("--body", default=None, help="The body text the scheme signs (XML body, msgData, param_json…).")
@click.option("--body-file", default=None, type=click.Path(dir_okay=False),
              help="Read the body from a file, exactly (UTF-8, trailing newline included).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A scheme option, as under request.sign.options in a spec; repeat.")
@click.option("--secret-env", "secret_env", required=True, metavar="VAR",
              help="The environment variable that holds the secret (the value is never printed).")
@click.option("--show-string", is_flag=True,
              help="Print how the signed text was built, with the secret shown as <secret>.")
def sign(scheme: str, params: tuple[str, ...], body: str | None, body_file: str | None, options: tuple[str, ...],
         secret_env: str, show_string: bool) -> None:
    """Compute the SCHEME signature of the given parameters and body; the signature is the last line."""
    inp = SignInput(_pairs(params, "param"), _body(body, body_file), _pairs(options, "option"))
    signer = _signer(scheme)
    secret = _secret(secret_env)
    try:
        signature = signer.sign(inp, secret)
        described = signer.describe(inp) if show_string else None
    except DockyardError as exc:
        _fail(_scrub(str(exc), secret), EXIT_ERRORS)
    except Exception as exc:  # a plugin's own bug: report it as one line, never a traceback with locals
        _fail(_scrub(f"{scheme} failed: {type(exc).__name__}: {exc}", secret), EXIT_ERRORS)
    if described is not None:
        click.echo(_scrub(described, secret))
    click.echo(signature)


def _scrub(text: str, secret: Secret) -> str:
    """Built-in messages and descriptions never hold the secret; a plugin's might, so remove it
    whatever they say (as `Secrets.redact` does: values under 4 characters are not worth hunting)."""
    value = secret.reveal()
    return text.replace(value, "***") if len(value) >= 4 else text
