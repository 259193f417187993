"""A card's full EMV profile data on a test SoftHSM token, made by the real preparation code:
the test CA and issuer RSA keys, the issuer certificate signed by the test CA, an ICC pair from
the pool, the card's SDA and ICC certificate, its offline PIN (a PIN the test knows)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from services.keymgmt.emv.card_data import IssuerOdaInputs, prepare_emv_data
from services.keymgmt.emv.card_oda import generate_pool_pairs
from services.keymgmt.emv.oda import bureau_test_ca_label, issuer_key_label
from services.keymgmt.emv.perso import CardProfileData
from services.keymgmt.emv.profile import EmvProfile
from services.keymgmt.emv.records import CardRecord, IssuerOda
from services.keymgmt.hsm.rsa import PooledPair, RsaPublic
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.hsm.storage import ICC_POOL_KEY, PIN_STORAGE_KEY
from services.keymgmt.keys.oda import CA_BITS, ISSUER_BITS, ensure_rsa_pair, sign_with_test_ca

CA_INDEX = 0x92
TEST_PIN = "4321"
PREPARED_ON = date(2026, 12, 7)


@dataclass(frozen=True)
class TestIssuerOda:
    ca: RsaPublic
    inputs: IssuerOdaInputs
    oda: IssuerOda


def issuer_oda_on(hsm: Hsm, issuer_id: str) -> TestIssuerOda:
    """The test CA, the issuer key and its test-CA certificate (HSM worker)."""
    ca = ensure_rsa_pair(hsm, bureau_test_ca_label(CA_INDEX), CA_BITS)
    label = issuer_key_label(issuer_id)
    public = ensure_rsa_pair(hsm, label, ISSUER_BITS)
    cert = sign_with_test_ca(hsm, CA_INDEX, label, "476173", date(2030, 12, 1), b"\x00\x00\x01")
    inputs = IssuerOdaInputs(label, CA_INDEX, cert.certificate, cert.remainder)
    return TestIssuerOda(ca, inputs, IssuerOda(CA_INDEX, cert.certificate, cert.remainder, public))


@dataclass(frozen=True)
class TestCard:
    data: CardProfileData
    pair: PooledPair | None


def card_profile_on(
    hsm: Hsm,
    record: CardRecord,
    issuer: TestIssuerOda,
    profile: EmvProfile | None = None,
    icvv: str | None = "123",
    pin: str = TEST_PIN,
) -> TestCard:
    """The card's script inputs as preparation makes them (HSM worker)."""
    emv = profile or EmvProfile()
    pair = generate_pool_pairs(hsm, 1)[0] if emv.needs_icc_key else None
    digits = bytearray(int(d) for d in pin)
    prep = prepare_emv_data(
        hsm,
        record,
        emv,
        digits,
        issuer.inputs if emv.oda_methods else None,
        None if pair is None else pair.public,
        PREPARED_ON,
    )
    card = None
    if prep.signed is not None:
        card = prep.signed.oda
    data = CardProfileData(
        profile=emv,
        icvv=icvv,
        effective=prep.effective,
        issuer=issuer.oda if emv.oda_methods else None,
        card=card,
        icc_wrapped=None if pair is None else pair.wrapped,
        pool_key_label=None if pair is None else ICC_POOL_KEY,
        offline_pin_wrapped=prep.offline_pin,
        pin_storage_label=PIN_STORAGE_KEY,
    )
    return TestCard(data, pair)
