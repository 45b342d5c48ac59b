"""The service configuration: every problem at once with exact locations, the published schema and
its reference, the example config, overrides, and the start-up check against real bundles."""

from __future__ import annotations

import re
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from dockyard.compiler.bundle import build_bundle
from dockyard.dsl.diagnostics import DiagnosticsError
from dockyard.runtime.bundle import load_bundle
from dockyard.runtime.mapping import CompiledMapping
from dockyard.runtime.secrets import MappingSecrets, Secrets
from dockyard.runtime.wire import WireSettings
from dockyard.service.config import (
    GuardConfig,
    RateLimitConfig,
    RetryConfig,
    ServiceConfig,
    TokenConfig,
    check_against,
    config_schema,
    load_config,
)
from dockyard.service.guards import unguarded

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "service" / "dockyard.yaml"
LIBRARY_SPECS = [
    *(f"mappings/qimen/{n}.yaml" for n in ("deliveryorder.create", "order.cancel", "deliveryorder.query",
                                            "response", "query-response", "deliveryorder.confirm",
                                            "orderprocess.report", "ack")),
    *(f"mappings/sf/{n}.yaml" for n in ("create-order", "cancel-order", "search-order", "response",
                                         "search-response", "route-push", "route-push.ack")),
    *(f"mappings/jd/{n}.yaml" for n in ("create-order", "cancel-order", "query-order", "response",
                                         "query-response")),
    *(f"mappings/cainiao/{n}.yaml" for n in ("consign-order-notify", "order-cancel-notify", "response",
                                              "consign-order-confirm", "order-status-upload", "ack")),
]
SECRET_VALUES = {
    "QIMEN_APP_SECRET": "qimen-secret-value-1", "SF_CHECK_WORD": "sf-check-word-value-2",
    "JD_LOP_APP_SECRET": "jd-secret-value-3", "CAINIAO_SECRET_KEY": "cainiao-secret-value-4",
    "UPSTREAM_WEBHOOK_SECRET": "upstream-secret-value-5",
}
OPERATOR_TOKEN = "operator-token-from-the-environment-0123456789"


def write(folder: Path, text: str, name: str = "dockyard.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def problems(path: Path, overrides: dict[str, Any] | None = None) -> list[tuple[str, int, int, str, str]]:
    """(file name, line, col, code, message + hint) of every diagnostic, in order."""
    with pytest.raises(DiagnosticsError) as info:
        load_config(path, overrides)
    return [(Path(d.span.file).name, d.span.line, d.span.col, d.code, d.message + (f" ({d.hint})" if d.hint else ""))
            for d in info.value.diagnostics]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "build.dybundle").mkdir()
    return tmp_path


MINIMAL = textwrap.dedent("""\
    dockyard: 1
    bundles: [build.dybundle]
    warehouses:
      wh:
        flows:
          create: {request: qimen.deliveryorder.create, response: qimen.response}
    """)


def top(block: str) -> str:
    """Top-level keys to add after MINIMAL."""
    return textwrap.dedent(block).lstrip("\n")


def in_wh(block: str) -> str:
    """Keys to add to the warehouse `wh` of MINIMAL."""
    return textwrap.indent(top(block), "    ")


# -- loading: defaults, paths, overrides -----------------------------------------------------


def test_minimal_config_gets_the_documented_defaults(folder: Path) -> None:
    config = load_config(write(folder, MINIMAL))
    assert config.path == (folder / "dockyard.yaml").resolve()
    assert config.store == f"sqlite:///{folder.resolve() / 'dockyard-state.db'}"
    assert (config.host, config.port, config.workers, config.on_change) == ("127.0.0.1", 8080, 1, "reject")
    assert config.bundles == (folder.resolve() / "build.dybundle",)
    assert config.secrets_dir is None and config.secrets_env_prefix == "DOCKYARD_SECRET_"
    assert config.upstream is None and config.routes == () and config.tokens == {}
    wh = config.warehouses["wh"]
    assert (wh.name, wh.endpoint, dict(wh.context), wh.secrets) == ("wh", None, {}, ())
    assert (wh.concurrency, wh.connect_timeout, wh.timeout, wh.retry) == (32, 3.0, 10.0, RetryConfig())
    assert wh.flows["create"].request == "qimen.deliveryorder.create"
    assert wh.flows["create"].response == "qimen.response"


def test_a_warehouse_rate_limit_is_read_with_its_default_burst(folder: Path) -> None:
    assert load_config(write(folder, MINIMAL)).warehouses["wh"].rate_limit is None
    text = MINIMAL.replace("    flows:\n", "    rate_limit: {per_second: 40, burst: 60}\n    flows:\n", 1)
    assert load_config(write(folder, text)).warehouses["wh"].rate_limit == RateLimitConfig(40.0, 60)
    for given, burst in (("2.5", 3), ("0.5", 1), ("40", 40)):
        text = MINIMAL.replace("    flows:\n", f"    rate_limit: {{per_second: {given}}}\n    flows:\n", 1)
        assert load_config(write(folder, text)).warehouses["wh"].rate_limit == RateLimitConfig(float(given), burst)


@pytest.mark.parametrize(("block", "at", "code", "message"), [
    ("{per_second: 0}", "0", "config-bad-value", "warehouses.wh.rate_limit.per_second must be more than 0"),
    ("{per_second: -3, burst: 2}", "-3", "config-bad-value",
     "warehouses.wh.rate_limit.per_second must be more than 0"),
    ("{per_second: 5, burst: 0}", "0", "config-bad-value", "warehouses.wh.rate_limit.burst must be at least 1"),
    ("{per_second: 5, burst: 1.5}", "1.5", "config-bad-type", "warehouses.wh.rate_limit.burst must be an integer"),
    ("{per_second: fast}", "fast", "config-bad-type", "warehouses.wh.rate_limit.per_second must be a number"),
    ("{burst: 5}", "rate_limit", "config-missing-key", "warehouses.wh.rate_limit needs the key 'per_second'"),
    ("{per_second: 5, brust: 9}", "brust", "config-unknown-key",
     "unknown key 'brust' in warehouses.wh.rate_limit (did you mean 'burst'?)"),
    ("50", "50", "config-bad-type", "warehouses.wh.rate_limit must be a mapping"),
])
def test_a_bad_rate_limit_is_reported_where_it_is(folder: Path, block: str, at: str, code: str,
                                                  message: str) -> None:
    line = f"    rate_limit: {block}"
    text = MINIMAL.replace("    flows:\n", f"{line}\n    flows:\n", 1)
    col = line.index(at, 4 if at == "rate_limit" else len("    rate_limit: ")) + 1
    assert problems(write(folder, text)) == [("dockyard.yaml", 5, col, code, message)]


def test_relative_paths_are_relative_to_the_config_file_not_the_working_directory(
        folder: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / "conf").mkdir()
    (folder / "conf" / "wh.yaml").write_text("customerId: C-1\nrate: 0.10\nlimit: 3\nstrict: true\n", "utf-8")
    (folder / "secrets").mkdir()
    path = write(folder, """
        dockyard: 1
        store: sqlite:///state/db.sqlite?timeout=5
        bundles: [build.dybundle]
        secrets: {dir: secrets, env_prefix: MY_}
        warehouses:
          wh:
            config_file: conf/wh.yaml
            config: {ownerCode: O-1, customerId: C-2, strict: null}
            flows: {create: {request: a, response: b}}
        """)
    (folder / "state").mkdir()
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    config = load_config(path)
    base = folder.resolve()
    assert config.store == f"sqlite:///{base / 'state' / 'db.sqlite'}?timeout=5"
    assert config.secrets_dir == base / "secrets" and config.secrets_env_prefix == "MY_"
    # config is merged over config_file; null removes a value; a number with a point is exact
    assert config.warehouses["wh"].context == {"customerId": "C-2", "rate": Decimal("0.10"), "limit": 3,
                                               "ownerCode": "O-1"}


def test_overrides_replace_top_level_keys_and_are_checked_like_the_file(folder: Path) -> None:
    path = write(folder, MINIMAL + "listen: {host: 0.0.0.0, port: 80}\nworkers: 2\n")
    state = folder / "other" / "state.db"
    state.parent.mkdir()
    config = load_config(path, {"store": f"sqlite:///{state}", "listen": {"port": 0}, "workers": None})
    assert config.store == f"sqlite:///{state}"
    assert (config.host, config.port) == ("127.0.0.1", 0)  # listen is replaced as a whole
    assert config.workers == 1  # None removes the key: the default applies
    assert problems(path, {"listen": {"port": "eighty"}, "bogus": 1}) == [
        ("<overrides>", 1, 1, "config-bad-type", "listen.port must be an integer"),
        ("<overrides>", 1, 1, "config-unknown-key",
         "unknown key 'bogus' in the configuration (expected one of: bundles, dashboard, dockyard, ingest, "
         "limits, listen, orders, readers, retention, routing, secrets, store, time_zone, trusted_proxies, upstream, "
         "warehouses, workers)"),
    ]


def test_postgres_store_is_kept_as_given(folder: Path) -> None:
    path = write(folder, MINIMAL)
    url = "postgresql://dockyard@db.internal:5432/dockyard"
    assert load_config(path, {"store": url}).store == url


# -- every problem at once, located ----------------------------------------------------------


def test_every_problem_is_reported_at_once_with_its_exact_location(folder: Path) -> None:
    path = write(folder, """
        dockyard: 2
        bundles: [build.dybundle, missing.dybundle]
        listen: {host: 0.0.0.0, prot: 8080}
        workers: 0
        warehouses:
          qimen-std:
            endpoint: http://wms.example.com/api?x=1
            config_file: nowhere.yaml
            flows:
              create: {request: qimen.deliveryorder.create}
              cancle: {request: qimen.order.cancel}
            callbacks:
              confirm: {mapping: qimen.deliveryorder.confirm}
              report: {mapping: qimen.orderprocess.report, verify: nothing}
            retry: {base_delay: 5, max_delay: 1}
          Bad Name:
            flows: {create: {request: x}}
        routing:
          - {warehouse: qimen-std, default: true}
          - {warehouse: qimen-sdt, shop: 12}
          - {warehouse: qimen-std}
        """)
    found = problems(path)
    assert [(line, col, code) for _, line, col, code, _ in found] == [
        (1, 11, "config-bad-value"),
        (2, 27, "config-missing-file"),
        (3, 25, "config-unknown-key"),
        (4, 10, "config-bad-value"),
        (7, 15, "config-url"),
        (8, 18, "config-missing-file"),
        (11, 7, "config-unknown-key"),
        (13, 7, "config-verify-missing"),
        (14, 60, "config-bad-value"),
        (15, 39, "config-bad-value"),
        (16, 3, "config-bad-name"),
        (19, 28, "config-route"),
        (20, 17, "config-unknown-warehouse"),
        (20, 34, "config-bad-type"),
        (21, 5, "config-route"),
    ]
    messages = {(line, col): message for _, line, col, _, message in found}
    assert messages[(1, 11)] == "dockyard must be 1"
    assert messages[(3, 25)] == "unknown key 'prot' in listen (did you mean 'port'?)"
    assert messages[(11, 7)] == "unknown key 'cancle' in warehouses.qimen-std.flows (did you mean 'cancel'?)"
    assert messages[(7, 15)].startswith("the endpoint of 'qimen-std' 'http://wms.example.com/api?x=1' may not "
                                        "have a query")
    assert messages[(13, 7)].startswith("callback 'confirm' has no `verify` (")
    assert "`verify: none`" in messages[(13, 7)]
    assert messages[(15, 39)] == "max_delay (1) is shorter than base_delay (5)"
    assert messages[(19, 28)].startswith("the default rule routing[0] must be the last rule")
    assert messages[(20, 17)] == ("routing[1] names the warehouse 'qimen-sdt', which is not under `warehouses:` "
                                  "(did you mean 'qimen-std'?)")
    assert messages[(20, 34)] == "routing[1].shop must be a string or a list (quote it)"
    assert messages[(21, 5)].startswith("routing[2] has no criteria")


def test_diagnostics_render_with_the_source_line_and_a_caret(folder: Path) -> None:
    path = write(folder, MINIMAL.replace("create:", "creat:"))
    with pytest.raises(DiagnosticsError) as info:
        load_config(path)
    text = str(info.value)
    assert re.search(r"dockyard\.yaml:6:7: error: unknown key 'creat' in warehouses\.wh\.flows", text)
    assert "\n          creat: {request:" in text and "\n          ^~~~~\n    hint: did you mean 'create'?" in text
    assert re.search(r"dockyard\.yaml:5:5: error: warehouses\.wh\.flows needs the key 'create'", text)


def test_missing_required_keys_and_a_duplicate_warehouse(folder: Path) -> None:
    path = write(folder, """
        dockyard: 1
        warehouses:
          wh:
            flows: {create: {request: a, response: b}}
            callbacks:
              push: {verify: none}
          wh:
            flows: {create: {request: c}}
        """)
    assert [(line, col, code, msg) for _, line, col, code, msg in problems(path)] == [
        (1, 1, "config-missing-key", "the configuration needs the key 'bundles'"),
        (6, 7, "config-missing-key", "warehouses.wh.callbacks.push needs the key 'mapping'"),
        (7, 3, "yaml-duplicate-key", "duplicate key 'wh' (first at line 3)"),
    ]


def test_problems_in_a_config_file_are_located_in_that_file(folder: Path) -> None:
    (folder / "wh.yaml").write_text("host: a.example.com\nlist: [1, 2]\n", "utf-8")
    (folder / "broken.yaml").write_text("host: [unclosed\n", "utf-8")
    path = write(folder, """
        dockyard: 1
        bundles: [build.dybundle]
        warehouses:
          one:
            config_file: wh.yaml
            flows: {create: {request: a, response: b}}
          two:
            config_file: broken.yaml
            config: {nested: {no: 1}}
            flows: {create: {request: a, response: b}}
        """)
    found = problems(path)
    assert [(name, line, col, code) for name, line, col, code, _ in found] == [
        ("broken.yaml", 2, 1, "yaml-syntax"),
        ("dockyard.yaml", 9, 22, "config-bad-type"),
        ("wh.yaml", 2, 7, "config-file"),
    ]
    assert found[2][4] == "config value 'list' must be text, a number or true/false"


def test_a_yaml_syntax_error_and_a_file_that_is_not_a_mapping(folder: Path) -> None:
    assert problems(write(folder, "dockyard: 1\nbundles: [a\n"))[0][3] == "yaml-syntax"
    assert problems(write(folder, "- dockyard\n")) == [
        ("dockyard.yaml", 1, 1, "config-structure",
         "the configuration must be a YAML mapping (dockyard: 1, bundles:, warehouses:, …)")]
    assert problems(folder / "absent.yaml")[0][3] == "config-read"


def test_verify_none_must_be_explicit_and_verify_options_become_text(folder: Path) -> None:
    path = write(folder, MINIMAL + in_wh("""
          callbacks:
            push: {mapping: m, verify: none}
            signed:
              mapping: m
              ack: a
              verify: {scheme: cainiao-link, secret: CAINIAO_SECRET_KEY, params: form,
                       body: form.logistics_interface, window: 60, options: {digest: hex, strict: true}}
              decrypt: [{path: receiver.mobile, scheme: sm4-ecb, key: SM4_KEY, options: {encoding: base64}}]
        """))
    callbacks = load_config(path).warehouses["wh"].callbacks
    assert callbacks["push"].verify is None and callbacks["push"].name == "push"
    verify = callbacks["signed"].verify
    assert verify is not None
    assert (verify.scheme, verify.secret, verify.params, verify.body, verify.window) == (
        "cainiao-link", "CAINIAO_SECRET_KEY", "form", "form.logistics_interface", 60.0)
    assert verify.options == {"digest": "hex", "strict": "true"}
    assert callbacks["signed"].decrypt == ({"path": "receiver.mobile", "scheme": "sm4-ecb", "key": "SM4_KEY",
                                            "options": {"encoding": "base64"}},)


def test_dashboard_tokens_literal_and_from_the_environment(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = MINIMAL + top("""
        dashboard:
          tokens:
            a-literal-read-token-0123456789: read
            ops: {env: DY_TEST_OPS_TOKEN, role: operator}
        """)
    path = write(folder, text)
    monkeypatch.delenv("DY_TEST_OPS_TOKEN", raising=False)
    assert [(line, col, code) for _, line, col, code, _ in problems(path)] == [(10, 16, "config-token")]
    monkeypatch.setenv("DY_TEST_OPS_TOKEN", OPERATOR_TOKEN)
    assert load_config(path).tokens == {"a-literal-read-token-0123456789": "read", OPERATOR_TOKEN: "operator"}
    bad = write(folder, MINIMAL + "dashboard: {tokens: {t0k3n-0123456789: admin, x: {env: A}}}\n")
    assert [(line, col, code, msg) for _, line, col, code, msg in problems(bad)] == [
        (7, 40, "config-bad-value", "dashboard.tokens.t0k3n-0123456789 must be 'read' or 'operator'"),
        (7, 47, "config-missing-key", "dashboard.tokens.x needs the key 'role'"),
        (7, 56, "config-token", "the environment variable 'A' (dashboard token 'x') is not set"),
    ]


def test_routing_rules_become_routes(folder: Path) -> None:
    path = write(folder, MINIMAL + top("""
          sf:
            flows: {create: {request: sf.create-order, response: sf.response}}
        routing:
          - {warehouse: sf, shop: SHOP-A, channel: [tmall, taobao], province: [广东省], sku_prefix: ["SF-"]}
          - {warehouse: wh, default: true}
        """))
    routes = load_config(path).routes
    assert routes[0].warehouse == "sf" and routes[0].shops == ("SHOP-A",)
    assert routes[0].channels == ("tmall", "taobao") and routes[0].provinces == ("广东省",)
    assert routes[0].sku_prefixes == ("SF-",) and not routes[0].default
    assert routes[1].warehouse == "wh" and routes[1].default and routes[1].shops == ()


# -- guards ---------------------------------------------------------------------------------


def test_guards_are_read_and_checked(folder: Path) -> None:
    path = write(folder, MINIMAL + top("""
        trusted_proxies: [10.0.0.5, 10.1.0.0/16]
        ingest: {networks: [192.0.2.0/24], token: {secret: INGEST_TOKEN}}
        """))
    config = load_config(path)
    assert config.trusted_proxies == ("10.0.0.5", "10.1.0.0/16")
    assert config.ingest == GuardConfig(networks=("192.0.2.0/24",),
                                        token=TokenConfig("INGEST_TOKEN", "header", "Authorization"))
    bad = write(folder, """\
        dockyard: 1
        bundles: [build.dybundle]
        trusted_proxies: [not-a-network]
        ingest: {token: {secret: T, in: path}}
        warehouses:
          wh:
            flows:
              create: {request: qimen.deliveryorder.create, response: qimen.response}
            callbacks:
              push: {mapping: m, verify: none, guard: {networks: [300.1.2.3/8]}}
        """)
    found = [(code, message.split(" (")[0]) for _, _, _, code, message in problems(bad)]
    assert found == [
        ("config-bad-value", "trusted_proxies[0]: 'not-a-network' is not a network"),
        ("config-bad-value", "the ingest token cannot be in the URL path"),
        ("config-bad-value", "warehouses.wh.callbacks.push.guard.networks[0]: '300.1.2.3/8' is not a network"),
    ]
    no_proxy = write(folder, MINIMAL + "ingest: {mtls_at_proxy: {header: X-Client-Verify}}\n")
    assert [(c, m.split(" (")[0]) for _, _, _, c, m in problems(no_proxy)] == [
        ("config-bad-value", "ingest: mtls_at_proxy needs trusted_proxies")]
    assert problems(write(folder, MINIMAL + "ingest: {}\n"))[0][3] == "config-bad-value"  # an empty guard


# -- the example and the library -----------------------------------------------------------


@pytest.fixture(scope="module")
def library_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "warehouses.dybundle"
    build_bundle([ROOT / spec for spec in LIBRARY_SPECS], out)
    return out


@pytest.fixture(scope="module")
def library(library_bundle: Path) -> dict[str, CompiledMapping]:
    bundle = load_bundle(library_bundle)
    return {name: bundle[name] for name in bundle}


@pytest.fixture
def example(library_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> ServiceConfig:
    monkeypatch.setenv("DOCKYARD_OPERATOR_TOKEN", OPERATOR_TOKEN)
    return load_config(EXAMPLE, {"bundles": [str(library_bundle)]})


def test_the_example_config_loads(example: ServiceConfig, library_bundle: Path) -> None:
    assert set(example.warehouses) == {"qimen-std", "sf", "jd", "cainiao"}
    assert example.bundles == (library_bundle,)
    assert example.store == f"sqlite:///{EXAMPLE.parent / 'dockyard-state.db'}"
    qimen = example.warehouses["qimen-std"]
    assert qimen.context["warehouseCode"] == "WH-HZ-01" and qimen.context["identicalRepeatIsSuccess"] is False
    assert set(qimen.callbacks) == {"deliveryorder.confirm", "orderprocess.report"}
    assert qimen.callbacks["deliveryorder.confirm"].ack == "qimen.ack"
    assert example.warehouses["sf"].callbacks["route-push"].verify is None
    assert example.warehouses["sf"].flows["query"].request == "sf.search-order"
    # Every integration with a way to be asked names its recovery query (tests/multinode/resolution.py).
    assert qimen.flows["query"].request == "qimen.deliveryorder.query"
    assert qimen.flows["query"].response == "qimen.query-response"
    assert example.warehouses["jd"].flows["query"].request == "jd.query-order"
    assert example.warehouses["jd"].context["queryPath"] == "/ecap/v1/orders/status/get"
    assert "query" not in example.warehouses["cainiao"].flows
    assert set(example.warehouses["cainiao"].callbacks) == {"consign-order-confirm", "order-status-upload"}
    assert example.warehouses["jd"].rate_limit == RateLimitConfig(40.0, 40) and qimen.rate_limit is None
    assert example.routes[-1].default and example.routes[-1].warehouse == "qimen-std"
    assert example.upstream is not None and example.upstream.retry.max_attempts == 10
    assert example.tokens[OPERATOR_TOKEN] == "operator"
    assert unguarded(example) == ([], [])  # it starts without --allow-… flags
    assert example.warehouses["sf"].callbacks["route-push"].guard == GuardConfig(networks=("127.0.0.1/32",))


def test_the_example_needs_its_bundle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKYARD_OPERATOR_TOKEN", OPERATOR_TOKEN)
    if (EXAMPLE.parent / "../../build/warehouses.dybundle").exists():
        pytest.skip("the bundle was built in this checkout")
    assert [(name, code) for name, _, _, code, _ in problems(EXAMPLE)] == [("dockyard.yaml", "config-missing-file")]


def test_the_example_passes_the_start_up_check_with_every_secret(
        example: ServiceConfig, library: dict[str, CompiledMapping]) -> None:
    assert check_against(example, library, Secrets([MappingSecrets(SECRET_VALUES)])) == []


def test_a_missing_secret_is_one_line_naming_everyone_who_needs_it(
        example: ServiceConfig, library: dict[str, CompiledMapping]) -> None:
    values = {k: v for k, v in SECRET_VALUES.items() if k != "SF_CHECK_WORD"}
    found = check_against(example, library, Secrets([MappingSecrets(values)]))
    assert found == [
        "secret 'SF_CHECK_WORD' is not set (looked in: MappingSecrets); needed by warehouse sf, "
        "warehouse sf flow create (sf.create-order), warehouse sf flow cancel (sf.cancel-order), "
        "warehouse sf flow query (sf.search-order)",
    ]
    assert not any(value in line for line in found for value in SECRET_VALUES.values())


def test_start_up_check_finds_mappings_context_schemes_and_responses(
        folder: Path, library: dict[str, CompiledMapping]) -> None:
    path = write(folder, """
        dockyard: 1
        bundles: [build.dybundle]
        upstream: {url: "http://127.0.0.1:9/events", secret: UPSTREAM_WEBHOOK_SECRET}
        warehouses:
          qimen:
            config: {host: wms.example.com}
            secrets: [QIMEN_APP_SECRET, QIMEN_SM4_KEY]
            flows:
              create: {request: qimen.deliveryorder.create}
              cancel: {request: qimen.order.cancle, response: qimen.response}
              query: {request: qimen.response}
            callbacks:
              deliveryorder.confirm:
                mapping: qimen.deliveryorder.confirm
                ack: qimen.ack
                verify: {scheme: qimen-md6, secret: QIMEN_APP_SECRET}
                decrypt: [{path: a.b, scheme: rot13, key: QIMEN_SM4_KEY}]
        """)
    config = load_config(path)
    found = check_against(config, library, Secrets([MappingSecrets(SECRET_VALUES)]))
    assert found[0] == ("warehouse qimen flow create: mapping qimen.deliveryorder.create needs the context value "
                        "'version' (give it under warehouses.qimen.config or in its config_file)")
    assert ("warehouse qimen flow create: a create flow needs a response mapping (the warehouse's answer → outcome)"
            in found)
    assert ("warehouse qimen flow cancel: the mapping 'qimen.order.cancle' is not in the bundles "
            "(did you mean 'qimen.order.cancel'?)") in found
    assert ("warehouse qimen flow query: the mapping 'qimen.response' has no request: section, so it cannot "
            "be sent") in found
    assert any(line.startswith("warehouse qimen callback deliveryorder.confirm verify: ") and "qimen-md6" in line
               for line in found)
    assert any(line.startswith("warehouse qimen callback deliveryorder.confirm decrypt a.b: ") and "rot13" in line
               for line in found)
    assert found[-1] == ("secret 'QIMEN_SM4_KEY' is not set (looked in: MappingSecrets); needed by warehouse qimen, "
                         "warehouse qimen callback deliveryorder.confirm decrypt a.b")
    assert not any(value in line for line in found for value in SECRET_VALUES.values())


def test_wire_settings_come_from_the_config_file_and_the_warehouse_entry(folder: Path) -> None:
    write(folder, """
        host: wms.acme.example.com
        wire:
          sign: {timezone: Asia/Shanghai}
          encrypt:
            - {path: deliveryOrder.receiverInfo.mobile, scheme: sm4-ecb, key: QIMEN_SM4_KEY,
               options: {encoding: base64}}
        """, "acme.yaml")
    path = write(folder, MINIMAL + in_wh("""
        config_file: acme.yaml
        wire: {sign: {timestamp_param: ts}}
        """))
    wh = load_config(path).warehouses["wh"]
    assert "wire" not in wh.context and wh.context["host"] == "wms.acme.example.com"
    # `wire:` under the warehouse replaces the file's key by key: sign from here, encrypt from the file.
    assert wh.wire.sign == (("timestamp_param", "ts"),)
    assert [(e.path, e.scheme, e.key, e.options) for e in wh.wire.encrypt] == [
        ("deliveryOrder.receiverInfo.mobile", "sm4-ecb", "QIMEN_SM4_KEY", (("encoding", "base64"),))]
    assert load_config(write(folder, MINIMAL)).warehouses["wh"].wire == WireSettings()


def test_malformed_wire_settings_are_located_in_the_config_file(folder: Path) -> None:
    write(folder, """
        host: h
        wire:
          sign: [case]
          encrypt:
            - {path: a..b, scheme: sm4-ecb, key: "not a name"}
          compress: true
        """, "bad.yaml")
    found = problems(write(folder, MINIMAL + in_wh("config_file: bad.yaml\n")))
    assert {(name, line, code) for name, line, _, code, _ in found} == {("bad.yaml", 3, "config-wire")}
    messages = sorted(m for *_, m in found)
    assert messages == sorted([
        "warehouses.wh.wire: unknown setting 'compress' (known: sign, encrypt)",
        "warehouses.wh.wire.sign: must be a mapping of name: value",
        "warehouses.wh.wire.encrypt[0].path: 'a..b' is not an output path (a.b.c, [] after a list)",
        "warehouses.wh.wire.encrypt[0].key: 'not a name' is not a secret name (the NAME of the key's secret, "
        "never its value)",
    ])


def test_start_up_check_holds_wire_settings_to_what_each_spec_allows(
        folder: Path, library: dict[str, CompiledMapping]) -> None:
    acme, jd = ROOT / "mappings/qimen/warehouses/acme-3pl.yaml", ROOT / "mappings/jd/accounts/example.yaml"
    path = write(folder, f"""
        dockyard: 1
        bundles: [build.dybundle]
        warehouses:
          acme:
            config_file: {acme}
            secrets: [QIMEN_APP_SECRET]
            wire:
              sign: {{case: upper}}
              encrypt:
                - {{path: deliveryOrder.receiverInfo.mobile, scheme: sm4-ecb, key: QIMEN_SM4_KEY}}
                - {{path: deliveryOrder.receiverInfo.mobil, scheme: aes-gcm, key: QIMEN_AES_KEY}}
            flows:
              create: {{request: qimen.deliveryorder.create, response: qimen.response}}
              cancel: {{request: qimen.order.cancel, response: qimen.response}}
          jd:
            config_file: {jd}
            secrets: [JD_LOP_APP_SECRET]
            wire: {{sign: {{case: upper}}}}
            flows:
              create: {{request: jd.create-order, response: jd.response}}
        """)
    found = check_against(load_config(path), library, Secrets([MappingSecrets(SECRET_VALUES)]))
    assert found == [
        "warehouse acme flow create: qimen.deliveryorder.create: wire.sign.case: the spec does not let a warehouse "
        "set this option of qimen-md5 (it allows: none)",
        "warehouse acme flow cancel: qimen.order.cancel: wire.sign.case: the spec does not let a warehouse set this "
        "option of qimen-md5 (it allows: none)",
        "warehouse acme: wire.encrypt deliveryOrder.receiverInfo.mobil: none of its flows lets a warehouse encrypt "
        "this field (they offer: deliveryOrder.receiverInfo.detailAddress, deliveryOrder.receiverInfo.mobile, "
        "deliveryOrder.receiverInfo.name, deliveryOrder.receiverInfo.tel)",
        "secret 'QIMEN_SM4_KEY' is not set (looked in: MappingSecrets); needed by warehouse acme wire.encrypt "
        "deliveryOrder.receiverInfo.mobile",
        "secret 'QIMEN_AES_KEY' is not set (looked in: MappingSecrets); needed by warehouse acme wire.encrypt "
        "deliveryOrder.receiverInfo.mobil",
    ]
    # The JD account's `case: upper` is what its specs allow: no line names it.
    assert not any(line.startswith("warehouse jd") for line in found)


# -- the schema and its reference --------------------------------------------------------------
# -- the schema and its reference --------------------------------------------------------------


def _properties(schema: Any, found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    if isinstance(schema, dict):
        for name, sub in (schema.get("properties") or {}).items():
            found[f"{name}@{id(sub)}"] = sub
        for value in schema.values():
            _properties(value, found)
    elif isinstance(schema, list):
        for value in schema:
            _properties(value, found)
    return found


def test_the_schema_is_valid_and_every_property_has_a_description() -> None:
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    undocumented = [key.split("@")[0] for key, sub in _properties(schema, {}).items() if not sub.get("description")]
    assert undocumented == []


def test_the_reference_mentions_every_schema_property() -> None:
    doc = (ROOT / "docs" / "service-config.md").read_text("utf-8")
    names = {key.split("@")[0] for key in _properties(config_schema(), {})}
    missing = sorted(name for name in names if f"`{name}`" not in doc)
    assert missing == []
