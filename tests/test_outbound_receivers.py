"""Every outbound flow in the warehouse library, dry-run as it would be sent, is accepted by a
receiver that implements the published algorithm. The receivers (in `dockyard.simulate.protocols`,
where the simulated warehouses use them too) are written from the protocol notes alone and share
no code with `dockyard.runtime.signing`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

import dockyard
from dockyard.runtime.request import PreparedRequest, build_request
from dockyard.runtime.secrets import MappingSecrets, Secrets, marked_test_secrets
from dockyard.simulate.protocols import cainiao_receiver, jd_lop_receiver, qimen_receiver, sf_receiver

ROOT = Path(__file__).resolve().parents[1]
ORDER = json.loads((ROOT / "examples" / "orders" / "hostile-remark.json").read_text(encoding="utf-8"))
NOW = datetime(2023, 11, 10, 16, 5, tzinfo=UTC)


def prepared_for(spec: Path) -> tuple[PreparedRequest, dict[str, str]]:
    mapping = dockyard.compile_file(spec.relative_to(ROOT).as_posix() if spec.is_relative_to(ROOT) else spec)
    secrets = marked_test_secrets(mapping.meta["request"])
    ctx = dict(mapping.meta.get("examples", {}))
    prepared = build_request(mapping, ORDER, context=ctx, clock=NOW, secrets=Secrets([MappingSecrets(secrets)]),
                             request_id="receiver-test", validate=True)
    return prepared, secrets


def outbound_specs() -> list[Path]:
    specs = []
    for path in sorted((ROOT / "mappings").rglob("*.yaml")):
        if path.name.endswith(".test.yaml") or "sign:" not in path.read_text(encoding="utf-8"):
            continue
        specs.append(path)
    return specs


RECEIVERS: dict[str, Callable[[PreparedRequest, str, dict[str, object]], bool]] = {
    "qimen-md5": lambda p, s, o: qimen_receiver(dict(parse_qsl(urlsplit(p.request.url).query)),
                                                p.request.body.decode(p.body_encoding), s),
    "sf-msgdigest": lambda p, s, o: sf_receiver(dict(parse_qsl(p.request.body.decode())), s),
    "jd-lop-md5-salt": lambda p, s, o: jd_lop_receiver(dict(parse_qsl(urlsplit(p.request.url).query)),
                                                       p.request.body.decode(), s,
                                                       str(o.get("path") or urlsplit(p.request.url).path)),
    "cainiao-link": lambda p, s, o: cainiao_receiver(dict(parse_qsl(p.request.body.decode())), s,
                                                     o.get("digest") == "hex"),
}


def test_the_library_has_outbound_flows_for_every_scheme() -> None:
    schemes = set()
    for spec in outbound_specs():
        schemes.add(dockyard.compile_file(spec).meta["request"]["sign"]["scheme"])
    assert schemes >= set(RECEIVERS)


@pytest.mark.parametrize("spec", outbound_specs(), ids=lambda p: p.relative_to(ROOT / "mappings").as_posix())
def test_an_independent_receiver_accepts_the_request(spec: Path) -> None:
    prepared, secrets = prepared_for(spec)
    sign = dockyard.compile_file(spec).meta["request"]["sign"]
    receiver = RECEIVERS[sign["scheme"]]
    assert receiver(prepared, secrets[sign["secret"]], dict(sign["options"]))
    # And a receiver holding another secret refuses it: the check is not vacuous.
    assert not receiver(prepared, secrets[sign["secret"]] + "x", dict(sign["options"]))
