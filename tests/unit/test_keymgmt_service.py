"""keymgmt service logic without the HSM: read-back verdicts (reason codes only), settings,
ceremony helpers."""

from __future__ import annotations

import secrets
import uuid

import pytest
from pydantic import ValidationError

from services.keymgmt.emv.keys import MkDerivation
from services.keymgmt.emv.profile import EmvProfile
from services.keymgmt.emv.readback import readback_verdict
from services.keymgmt.emv.records import CardRecord, afl_records, track2
from services.keymgmt.emv.service import mk_option
from services.keymgmt.hsm.gate import HsmGate, HsmUnavailable
from services.keymgmt.keys.ceremonies import DEMO_IMKS, DEMO_KMC, software_kcv
from services.keymgmt.keys.ceremony import CeremonyKeyType
from services.keymgmt.keys.cli import resolve_label
from services.keymgmt.keys.repository import key_row
from services.keymgmt.settings import KeymgmtSettings
from services.keymgmt.vault.schemas import VaultCardIn
from services.keymgmt.vault.service import OpenedCard, new_pan_token, pan_context, record_context
from shared.iso7816 import tlv
from shared.outage import is_outage

PAN = "4761739001010010"
RECORD = CardRecord(PAN, "01", "2512", "DOE/JANE", "201")
NO_ODA = EmvProfile.model_validate({"oda_methods": []})


def records_of(record: CardRecord) -> dict[str, bytes]:
    """The AFL records by DGI number: SFI 1 record 1 and SFI 2 record 1 (no ODA)."""
    return afl_records(record, NO_ODA, "123", "261207", None, None)


def expected() -> dict[str, bytes]:
    return records_of(RECORD)


def test_afl_records_are_keyed_by_dgi_number() -> None:
    assert list(expected()) == ["0101", "0201"]


def test_identical_records_read_back_clean() -> None:
    want = expected()
    assert readback_verdict(want, {n: v.hex() for n, v in want.items()}) == []


def test_read_back_problems_are_codes_naming_no_record_field_or_value() -> None:
    want = expected()
    other = CardRecord("4761739001019999", "02", "2512", "DOE/JOHN", "201")
    got = {"0101": records_of(other)["0101"].hex(), "0201": "9F3601"}
    assert readback_verdict(want, got) == ["record-malformed", "records-differ"]
    # Only the PAN differs, or only the name: the same answer (the old one named tag 5A).
    only_pan = CardRecord("4761739001019999", "01", "2512", "DOE/JANE", "201")
    only_name = CardRecord(PAN, "01", "2512", "DOE/JOHN", "201")
    for record in (only_pan, only_name):
        read = {n: v.hex() for n, v in records_of(record).items()}
        assert readback_verdict(want, read) == ["records-differ"]


def test_missing_extra_and_malformed_records_are_codes() -> None:
    want = expected()
    no_name = tlv(0x70, tlv(0x57, track2(RECORD, "123")))
    read = {"0101": no_name.hex(), "0301": "7000"}
    assert readback_verdict(want, read) == [
        "record-missing",
        "record-unexpected",
        "records-differ",
    ]
    nested = b"\x70\x04\x70\x02\x5a\x00"  # data objects two templates deep: malformed
    read = {"0101": nested.hex(), "0201": want["0201"].hex()}
    assert readback_verdict(want, read) == ["record-malformed"]


def test_option_b_only_for_pans_over_16_digits() -> None:
    assert mk_option(PAN) is MkDerivation.OPTION_A
    assert mk_option("6799998900000060018") is MkDerivation.OPTION_B


def test_pan_and_record_blobs_are_bound_to_different_contexts() -> None:
    card_id = uuid.uuid4()
    assert pan_context(card_id, "acme") != record_context(card_id, "acme")
    assert pan_context(card_id, "acme") != pan_context(card_id, "other")
    token = new_pan_token()
    assert token.startswith("pt_")
    assert token != new_pan_token()


def test_cardholder_data_stays_out_of_reprs() -> None:
    address = {"lines": ["1 Test Street"], "postcode": "T1", "city": "X", "country": "GB"}
    card = VaultCardIn.model_validate(
        {"card_id": uuid.uuid4(), "pan": PAN, "expiry": "2512", "cardholder_name": "DOE/JANE"}
        | {"address": address}
    )
    assert PAN not in repr(card)
    opened = OpenedCard(PAN, "01", "2512", "DOE/JANE", address)
    assert repr(opened) == "OpenedCard(pan=476173******0010)"
    with pytest.raises(ValidationError):
        VaultCardIn.model_validate(card.model_dump() | {"expiry": "2513"})


def test_a_closed_hsm_is_a_transient_fault_for_the_consumer() -> None:
    with pytest.raises(HsmUnavailable) as caught:
        HsmGate().get()
    assert is_outage(caught.value)


def test_settings_refuse_a_development_hsm_pin_outside_dev() -> None:
    def prod(pin: str) -> KeymgmtSettings:
        return KeymgmtSettings(
            environment="prod",
            database_url="postgresql+asyncpg://k:s3cret@db/bureau",
            service_tokens="intake=" + secrets.token_urlsafe(32).replace("dev", "Xq7"),
            principals="admin:root=" + secrets.token_urlsafe(32).replace("dev", "Xq7"),
            kafka_security_protocol="SASL_SSL",  # prod refuses Kafka in clear
            migrate_on_start=False,
            kafka_username="keymgmt",
            kafka_password=secrets.token_urlsafe(32).replace("dev", "Xq7"),
            hsm_pin=pin,
        )

    with pytest.raises(ValidationError, match="hsm_pin is still a development PIN"):
        prod("1234")
    assert prod("Xk4-91-qq").hsm_pin == "Xk4-91-qq"
    assert KeymgmtSettings(environment="test").hsm_pin == "1234"
    with pytest.raises(ValidationError, match="hsm_pin is empty"):
        KeymgmtSettings(environment="test", hsm_pin="")  # the Hsm would not log in
    with pytest.raises(ValidationError, match="vault_key_label"):
        KeymgmtSettings(vault_key_label="bureau/AES/1")


def test_settings_read_the_stack_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUREAU_PKCS11_MODULE", "/opt/hsm/lib.so")
    monkeypatch.setenv("BUREAU_HSM_TOKEN", "partition-7")
    monkeypatch.setenv("OPENSSL_CONF", "/etc/ssl/legacy.cnf")
    monkeypatch.setenv("BUREAU_KEYMGMT_PORT", "9102")
    settings = KeymgmtSettings()
    assert (settings.pkcs11_module, settings.hsm_token) == ("/opt/hsm/lib.so", "partition-7")
    assert (settings.openssl_conf, settings.port) == ("/etc/ssl/legacy.cnf", 9102)
    assert "1234" not in repr(settings)


def test_ceremony_labels_belong_to_their_issuer() -> None:
    assert resolve_label("IMK-AC", "acme") == "acme/IMK-AC/1"
    assert resolve_label("acme/IMK-AC/2", "acme") == "acme/IMK-AC/2"
    with pytest.raises(ValueError, match="does not belong"):
        resolve_label("other/IMK-AC/1", "acme")
    with pytest.raises(ValueError, match="invalid label part"):
        resolve_label("IMK AC", "acme")


def test_demo_components_combine_to_the_published_test_keys() -> None:
    for key, first in [*DEMO_IMKS.values(), DEMO_KMC]:
        part1 = bytes.fromhex(first)
        part2 = bytes(a ^ b for a, b in zip(bytes.fromhex(key), part1, strict=True))
        assert bytes(a ^ b for a, b in zip(part1, part2, strict=True)).hex().upper() == key
        assert part1 != part2
    # The classic EMV test IMK 0123456789ABCDEF FEDCBA9876543210 has the published KCV 08D7B4.
    assert software_kcv(bytes.fromhex(DEMO_IMKS["IMK-AC"][0]), CeremonyKeyType.DES2) == "08D7B4"


def test_inventory_rows_keep_the_first_kcv_as_main_and_the_rest_named() -> None:
    row = key_row("b/VAULT/1", "b", "AES-256", "vault", [("AAAAAA", "m1"), ("BBBBBB", "m2")], "g")
    assert (row["kcv"], row["kcv_method"]) == ("AAAAAA", "m1")
    assert row["other_kcvs"] == [{"kcv": "BBBBBB", "method": "m2"}]
    assert (row["custodians"], row["ceremony_id"]) == ([], None)
