"""A planted canary secret never shows: not in dry-run output (text, --json, --explain), not in
`dockyard sign --show-string`, not in error messages, logs, reprs or compiled bundles."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner

from dockyard.cli import main
from dockyard.runtime.secrets import EnvSecrets, Secret, Secrets

ROOT = Path(__file__).resolve().parents[1]
QIMEN = ROOT / "examples" / "specs" / "qimen-deliveryorder-signed.yaml"
SF = ROOT / "examples" / "specs" / "sf-create-signed.yaml"
ORDER = ROOT / "examples" / "orders" / "tmall-basic.json"

SIGN_CANARY = "CANARY-9f8e7d6c5b4a-sign"
SM4_CANARY = "CANARY-7x3q9w1zk"  # exactly 16 characters: a valid SM4 key read as UTF-8
CHECKWORD_CANARY = "CANARY-checkword-42aa"
CANARIES = (SIGN_CANARY, SM4_CANARY, CHECKWORD_CANARY, "9f8e7d6c5b4a", "7x3q9w1zk", "checkword-42aa")


@pytest.fixture
def env() -> dict[str, str]:
    return {"QIMEN_APP_SECRET": SIGN_CANARY, "QIMEN_SM4_KEY": SM4_CANARY, "SF_CHECK_WORD": CHECKWORD_CANARY}


def assert_clean(text: str) -> None:
    for canary in CANARIES:
        assert canary not in text, f"secret leaked: {canary!r} in output"


def run(args: list[str], env: dict[str, str]) -> str:
    result = CliRunner().invoke(main, args, env=env)
    return result.stdout + result.stderr + (repr(result.exception) if result.exception else "")


@pytest.mark.parametrize("spec", [QIMEN, SF], ids=["qimen", "sf"])
@pytest.mark.parametrize("mode", [[], ["--json"], ["--explain"], ["--json", "--explain"]], ids=str)
def test_dry_run_never_prints_a_secret(spec: Path, mode: list[str], env: dict[str, str],
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    out = run(["dry-run", *mode, "--now", "2023-11-11T00:00:00+08:00", str(spec), str(ORDER)], env)
    assert "signature:" in out or '"signature"' in out  # the run really signed
    assert_clean(out)
    assert_clean(caplog.text)


def test_sign_show_string_masks_the_secret(env: dict[str, str]) -> None:
    out = run(["sign", "qimen-md5", "--param", "method=x", "--param", "timestamp=2023-11-11 00:00:00",
               "--body", "<request/>", "--secret-env", "QIMEN_APP_SECRET", "--show-string"], env)
    assert "<secret>" in out
    assert_clean(out)


def test_errors_after_secrets_are_resolved_do_not_show_them(env: dict[str, str], tmp_path: Path) -> None:
    # A bad key for the cipher fails after the secrets were read: the message must not echo it.
    bad = {**env, "QIMEN_SM4_KEY": "CANARY-9f8e7d6c5b4a-too-long-for-sm4"}
    out = run(["dry-run", "--now", "2023-11-11T00:00:00+08:00", str(QIMEN), str(ORDER)], bad)
    assert "error" in out.lower() or "key" in out.lower()
    assert_clean(out)
    # A missing secret names the variable, never another secret's value.
    out = run(["dry-run", str(SF), str(ORDER)], {"QIMEN_APP_SECRET": SIGN_CANARY})
    assert "SF_CHECK_WORD" in out
    assert_clean(out)


def test_bundles_hold_no_secret(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = run(["compile", str(QIMEN), str(SF), "-o", str(tmp_path / "bundle")], env)
    assert_clean(out)
    for path in (tmp_path / "bundle").rglob("*"):
        if path.is_file():
            assert_clean(path.read_text(encoding="utf-8"))


def test_a_secret_object_never_shows_its_value() -> None:
    secrets = Secrets([EnvSecrets(environ={"X": SIGN_CANARY})])
    secret = secrets.get("X")
    assert_clean(repr(secret) + str(secret) + f"{secret}" + repr([secret]))
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert secret.reveal() == SIGN_CANARY
    assert secrets.redact(f"value={SIGN_CANARY}") == "value=***"
    assert isinstance(secret, Secret)
