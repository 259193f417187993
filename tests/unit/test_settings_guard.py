"""The production settings guard (shared/settings.py, shared/credentials.py): weak, duplicated
and development secrets are refused outside dev, the refusal names the setting and the entry
and never any part of a value, and verifiers stand in for the tokens a workload only checks."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys

import pytest
from pydantic import ValidationError

from services.electrical.settings import ElectricalSettings
from services.intake.settings import IntakeSettings
from services.keymgmt.settings import KeymgmtSettings
from shared.auth import StaticTokens
from shared.credentials import verifier_of, weakness
from shared.settings import BureauSettings
from tests.support.k8s import REPO


def strong() -> str:
    while "dev" in (token := secrets.token_urlsafe(32)).lower():
        pass
    return token


def prod_env(**overrides: str) -> dict[str, str]:
    """A production environment every check passes: each secret random and used once."""
    values = {
        "environment": "prod",
        "database_url": f"postgresql+asyncpg://intake:{strong()}@db:5432/bureau",
        "service_tokens": f"intake={strong()},qa={verifier_of(strong())}",
        "principals": f"operator:olga={verifier_of(strong())},admin:root={verifier_of(strong())}",
        "idempotency_secret": strong(),
        "webhook_key": strong(),
        "kafka_security_protocol": "SASL_SSL",
        "migrate_on_start": "false",
        "kafka_username": "intake",
        "kafka_password": strong(),
    }
    return {**values, **overrides}


def refusal(cls: type[BureauSettings], **values: str) -> str:
    with pytest.raises(ValidationError) as caught:
        cls(**values)  # type: ignore[arg-type]
    return str(caught.value)


def test_a_well_made_production_configuration_is_accepted() -> None:
    settings = IntakeSettings(**prod_env())  # type: ignore[arg-type]
    assert settings.token_for("intake") == settings.parsed_service_tokens()["intake"]


@pytest.mark.parametrize(
    "weak",
    [
        "short-but-random-Xq81",  # under 32 characters
        "a" * 48,  # no entropy
        "abababababababababababababababababababab",  # two characters
        "0123456789" * 4,  # a keyboard run
        "olga-dev-" + "Zk3r9QpL2mW8vX7tB4nY6cJ1hF5gD0sA",  # strong but a development value
    ],
)
def test_weak_principal_tokens_are_refused_without_quoting_them(weak: str) -> None:
    text = refusal(IntakeSettings, **prod_env(principals=f"operator:olga={weak}"))
    assert "BUREAU_PRINCIPALS operator:olga" in text
    assert weak not in text
    for piece in (weak[:8], weak[-8:]):  # not even truncated
        assert piece not in text


def test_every_secret_setting_is_checked_by_name() -> None:
    text = refusal(IntakeSettings, **prod_env(webhook_key="0123456789"))
    assert "BUREAU_WEBHOOK_KEY is shorter than 32 characters" in text
    assert "0123456789" not in text
    text = refusal(IntakeSettings, **prod_env(service_tokens="intake=intake-dev-token"))
    assert "BUREAU_SERVICE_TOKENS intake is a development value" in text
    text = refusal(BureauSettings, **prod_env(database_url="postgresql://b:bureau-dev@h/b"))
    assert "BUREAU_DATABASE_URL is a development value" in text
    assert "bureau-dev" not in text


def test_the_same_token_for_two_principals_or_services_is_refused() -> None:
    shared = strong()
    text = refusal(
        IntakeSettings,
        **prod_env(
            service_tokens=f"intake={shared}",
            principals=f"operator:olga={verifier_of(strong())},admin:root={verifier_of(shared)}",
        ),
    )
    assert "BUREAU_PRINCIPALS admin:root holds the same secret as BUREAU_SERVICE_TOKENS" in text
    assert shared not in text
    assert verifier_of(shared) not in text
    twice = strong()
    text = refusal(
        IntakeSettings,
        **prod_env(principals=f"operator:olga={twice},operator:oleg={twice}"),
    )
    assert "operator:oleg holds the same secret as BUREAU_PRINCIPALS operator:olga" in text
    text = refusal(IntakeSettings, **prod_env(webhook_key=twice, idempotency_secret=twice))
    assert "BUREAU_WEBHOOK_KEY holds the same secret as BUREAU_IDEMPOTENCY_SECRET" in text


def test_dev_and_test_keep_their_defaults() -> None:
    assert BureauSettings(environment="dev").token_for("intake") == "intake-dev-token"
    assert ElectricalSettings(environment="test").station_token == "station-a-dev-token"
    assert weakness(strong()) is None
    assert weakness(secrets.token_hex(32)) is None


def test_a_station_refuses_its_development_token_in_production() -> None:
    text = refusal(ElectricalSettings, **prod_env(station_token="station-a-dev-token"))
    assert "BUREAU_STATION_TOKEN is a development value" in text
    text = refusal(ElectricalSettings, environment="test", station_token=verifier_of(strong()))
    assert "BUREAU_STATION_TOKEN is a verifier: it needs the secret itself" in text


def test_keymgmt_hides_its_input_too() -> None:
    pin_and_more = strong()
    text = refusal(KeymgmtSettings, **prod_env(principals=f"admin:root={pin_and_more[:20]}"))
    assert "BUREAU_PRINCIPALS admin:root is shorter than 32" in text
    assert pin_and_more[:20] not in text
    assert "input_value" not in text


def test_a_malformed_entry_is_named_by_its_place_never_quoted() -> None:
    # A token pasted without its name: the entry's "name" is then the secret itself.
    lost = strong()
    text = refusal(BureauSettings, environment="dev", principals=f"admin:root={strong()},{lost}")
    assert "BUREAU_PRINCIPALS: entry 2 is not name=token" in text
    assert lost not in text
    text = refusal(BureauSettings, environment="dev", principals="admin:root=sha256:abc")
    assert "BUREAU_PRINCIPALS admin:root: a verifier is sha256: followed by 64" in text
    with pytest.raises(ValueError, match="principal entry 1 is not") as caught:
        StaticTokens(lost)
    assert lost not in str(caught.value)


async def test_a_verifier_admits_the_token_it_was_made_from_and_nothing_else() -> None:
    token = strong()
    tokens = StaticTokens(f"operator:olga={verifier_of(token)}")
    principal = await tokens(token)
    assert principal is not None
    assert (principal.role, principal.name) == ("operator", "olga")
    assert await tokens(verifier_of(token)) is None  # the verifier is no credential itself
    assert await tokens(strong()) is None


def test_a_workload_given_only_its_own_verifier_cannot_call_out() -> None:
    settings = BureauSettings(environment="test", service_tokens=f"audit={verifier_of(strong())}")
    with pytest.raises(ValueError, match="only a verifier for audit: it needs its own token"):
        settings.token_for("audit")
    with pytest.raises(ValueError, match="no entry for intake"):
        settings.token_for("intake")


def test_a_refused_start_logs_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    """The real process: intake in prod with a weak operator token and a reused key."""
    weak = "olga-" + secrets.token_hex(8)
    reused = strong()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUREAU_")}
    env.update({f"BUREAU_{k.upper()}": v for k, v in prod_env().items()})
    env["BUREAU_PRINCIPALS"] = f"operator:olga={weak}"
    env["BUREAU_WEBHOOK_KEY"] = env["BUREAU_IDEMPOTENCY_SECRET"] = reused
    with caplog.at_level(logging.DEBUG):
        done = subprocess.run(
            [sys.executable, "-m", "services.intake"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "BUREAU_PRINCIPALS operator:olga is shorter than 32 characters" in output
    assert "BUREAU_WEBHOOK_KEY holds the same secret as BUREAU_IDEMPOTENCY_SECRET" in output
    for secret in (weak, reused, env["BUREAU_DATABASE_URL"].split(":")[2].split("@")[0]):
        assert secret not in output
        assert secret not in caplog.text
        assert secret[:6] not in output  # not even truncated


@pytest.mark.parametrize("cls", [IntakeSettings, ElectricalSettings, KeymgmtSettings])
def test_a_settings_object_never_shows_its_secrets(cls: type[BureauSettings]) -> None:
    values = prod_env(station_token=strong(), hsm_pin=strong())
    settings = cls(**values)  # type: ignore[arg-type]
    shown = f"{settings!r} {settings}"
    assert "<hidden>" in shown
    for name, secret in settings.secret_values().items():
        assert secret not in shown, name
    assert values["hsm_pin"] not in shown


def test_production_refuses_a_service_that_would_migrate_as_the_owner() -> None:
    text = refusal(IntakeSettings, **prod_env(migrate_on_start="true"))
    assert "BUREAU_MIGRATE_ON_START must be false" in text
