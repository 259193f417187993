"""bench/dataprep_emv: full-profile EMV cards (docs/emv-profile.md) through keymgmt's HSM code,
against the raw HSM limit for the same operations measured in the same run, and the ICC key
pool's refill rate against raw RSA key generation in the same HSM.

Per card, keymgmt's path (emv/card_data.prepare_emv_data + emv/perso.build_perso_script): the
offline PIN wrapped under the PIN storage key, the static data, SDA and ICC certificate signed
with the issuer key (ICC pair from a pool generated beforehand), then the whole script: K_DEK
derived (and its KCV), MK-AC/SMI/SMC derived, checked and wrapped (8000), the offline PIN
re-wrapped (8010), the ICC private key re-wrapped under K_DEK (8201), every record, SELECT and
GPO DGI, STORE DATA framing. The raw loop makes the same PKCS#11 calls with python-pkcs11 and
nothing else. The raw loop runs before and after (the higher is the limit). Its own SoftHSM
token in a temporary directory: nothing of the local stack is touched. Prints JSON.

    .venv/bin/python -m bench.dataprep_emv [--cards 300] [--pairs 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from pkcs11 import DEFAULT, Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass

from services.keymgmt.emv.card_data import IssuerOdaInputs, prepare_emv_data
from services.keymgmt.emv.card_oda import generate_pool_pairs
from services.keymgmt.emv.keys import ImkLabels, mk_derivation_data
from services.keymgmt.emv.oda import bureau_test_ca_label, issuer_key_label
from services.keymgmt.emv.perso import CardProfileData, build_perso_script
from services.keymgmt.emv.profile import EmvProfile
from services.keymgmt.emv.records import CardRecord, IssuerOda
from services.keymgmt.gp.cardkeys import cpg202_aes_block
from services.keymgmt.hsm.p11 import SymKey, as_key, encrypt_data_param
from services.keymgmt.hsm.rsa import PooledPair, rsa_public
from services.keymgmt.hsm.session import Hsm
from services.keymgmt.hsm.storage import ICC_POOL_KEY, PIN_STORAGE_KEY, ensure_storage_key
from services.keymgmt.keys.oda import CA_BITS, ISSUER_BITS, ensure_rsa_pair, sign_with_test_ca

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
ISSUER, KMC = "benchbank", "bench/KMC/1"
DIV = bytes.fromhex("434256430A0B0C0D0001")
PIN = bytearray([1, 2, 3, 4])
TODAY = date(2026, 12, 7)


def fresh_token(root: Path) -> Hsm:
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "bench"]
        + ["--pin", "11112222", "--so-pin", "33334444"],
        check=True,
        capture_output=True,
    )
    module = root / "libsofthsm2-bench.so"
    shutil.copyfile(MODULE, module)
    hsm = Hsm(str(module), "bench", "11112222")
    hsm.open()
    return hsm


def load_keys(hsm: Hsm) -> IssuerOda:
    """Test IMKs and KMC as token objects, the test CA, the issuer key and its certificate."""
    imks = ImkLabels.for_issuer(ISSUER)
    for label, key_type, value in (
        (imks.ac, KeyType.DES2, bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")),
        (imks.smi, KeyType.DES2, bytes.fromhex("89ABCDEF01234567FEDCBA9876543210")),
        (imks.smc, KeyType.DES2, bytes.fromhex("0123456789ABCDEF0123456789ABCDEF")),
        (KMC, KeyType.AES, bytes.fromhex("404142434445464748494A4B4C4D4E4F")),
    ):
        hsm.session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: key_type,
                Attribute.VALUE: value,
                Attribute.LABEL: label,
                Attribute.TOKEN: True,
                Attribute.DERIVE: True,
                Attribute.SENSITIVE: True,
            }
        )
    ensure_rsa_pair(hsm, bureau_test_ca_label(0x92), CA_BITS)
    public = ensure_rsa_pair(hsm, issuer_key_label(ISSUER), ISSUER_BITS)
    cert = sign_with_test_ca(
        hsm, 0x92, issuer_key_label(ISSUER), "476173", date(2030, 12, 1), b"\x00\x00\x01"
    )
    ensure_storage_key(hsm, PIN_STORAGE_KEY)
    ensure_storage_key(hsm, ICC_POOL_KEY)
    return IssuerOda(0x92, cert.certificate, cert.remainder, public)


def record_of(i: int) -> CardRecord:
    return CardRecord(f"47617390{i:08d}", "01", "2812", "BENCH/CARDHOLDER", "201")


def service_cards(hsm: Hsm, issuer: IssuerOda, pairs: list[PooledPair]) -> float:
    """Cards/s through keymgmt's code: preparation's EMV part, then the whole script."""
    profile = EmvProfile()
    inputs = IssuerOdaInputs(
        issuer_key_label(ISSUER), issuer.ca_index, issuer.certificate, issuer.remainder
    )
    imks = ImkLabels.for_issuer(ISSUER)
    start = time.perf_counter()
    for i, pair in enumerate(pairs):
        record = record_of(i)
        prep = prepare_emv_data(hsm, record, profile, PIN, inputs, pair.public, TODAY)
        assert prep.signed is not None
        data = CardProfileData(
            profile, "123", prep.effective, issuer, prep.signed.oda, pair.wrapped,
            ICC_POOL_KEY, prep.offline_pin, PIN_STORAGE_KEY,
        )  # fmt: skip
        build_perso_script(hsm, record, DIV, imks, KMC, data)
    return len(pairs) / (time.perf_counter() - start)


def _unwrap(kek: Any, cls: ObjectClass, kt: KeyType, blob: bytes, mech: Mechanism) -> Any:
    caps = MechanismFlag.SIGN if cls == ObjectClass.PRIVATE_KEY else MechanismFlag(0)
    template: dict[Attribute, Any] = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True}
    if cls == ObjectClass.PRIVATE_KEY:
        template |= {Attribute.ENCRYPT: DEFAULT, Attribute.VERIFY: DEFAULT, Attribute.WRAP: DEFAULT}
    return kek.unwrap_key(cls, kt, blob, mechanism=mech, capabilities=caps, template=template)


def raw_card(hsm: Hsm, i: int, issuer_priv: Any, pair: PooledPair) -> None:
    """The same PKCS#11 calls as one card of service_cards, with python-pkcs11 alone."""
    s, made = hsm.session, list[SymKey]()
    pin_kek, pool_kek = hsm.key(PIN_STORAGE_KEY), hsm.key(ICC_POOL_KEY)
    block = b"\x6a" + bytes(142) + b"\xbc"
    issuer_priv.sign(block, mechanism=Mechanism.RSA_X_509)  # SDA
    issuer_priv.sign(block, mechanism=Mechanism.RSA_X_509)  # ICC certificate
    pin_obj = as_key(
        s.create_object(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES}
            | {Attribute.VALUE: bytes(16), Attribute.TOKEN: False, Attribute.EXTRACTABLE: True}
        )
    )
    pin_wrapped = pin_kek.wrap_key(pin_obj, mechanism=Mechanism.AES_KEY_WRAP)
    pin_obj.destroy()
    kmc = hsm.key(KMC)
    tmpl: dict[Attribute, Any] = {Attribute.TOKEN: False, Attribute.SENSITIVE: True}
    for caps in (MechanismFlag.WRAP, MechanismFlag.SIGN):
        made.append(
            as_key(kmc.derive_key(KeyType.AES, 128, capabilities=caps, template=tmpl,
                                  mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
                                  mechanism_param=cpg202_aes_block(DIV, 3)))
        )  # fmt: skip
    kdek = made[0]
    made[1].sign(bytes(16), mechanism=Mechanism.AES_CMAC)
    param, keep = encrypt_data_param(mk_derivation_data(record_of(i).pan, "01"))
    imks = ImkLabels.for_issuer(ISSUER)
    for label in (imks.ac, imks.smi, imks.smc):
        imk, extra = hsm.key(label), {Attribute.VALUE_LEN: DEFAULT, Attribute.EXTRACTABLE: True}
        for caps in (MechanismFlag(0), MechanismFlag.ENCRYPT):
            made.append(
                as_key(imk.derive_key(KeyType.DES2, 128, capabilities=caps, template=tmpl | extra,
                                      mechanism=Mechanism.DES3_ECB_ENCRYPT_DATA,
                                      mechanism_param=param))
            )  # fmt: skip
        made[-1].encrypt(bytes(8), mechanism=Mechanism.DES3_ECB)
        kdek.wrap_key(made[-2], mechanism=Mechanism.AES_CBC, mechanism_param=bytes(16))
    del keep
    pin_again = _unwrap(
        pin_kek, ObjectClass.SECRET_KEY, KeyType.AES, pin_wrapped, Mechanism.AES_KEY_WRAP
    )
    kdek.wrap_key(pin_again, mechanism=Mechanism.AES_CBC, mechanism_param=bytes(16))
    icc = _unwrap(
        pool_kek, ObjectClass.PRIVATE_KEY, KeyType.RSA, pair.wrapped, Mechanism.AES_KEY_WRAP_PAD
    )
    kdek.wrap_key(icc, mechanism=Mechanism.AES_KEY_WRAP_PAD)
    for obj in (*made, pin_again, icc):
        obj.destroy()


def raw_cards(hsm: Hsm, pairs: list[PooledPair]) -> float:
    issuer_priv = hsm.session.get_key(
        object_class=ObjectClass.PRIVATE_KEY, label=issuer_key_label(ISSUER)
    )
    start = time.perf_counter()
    for i, pair in enumerate(pairs):
        raw_card(hsm, i, issuer_priv, pair)
    return len(pairs) / (time.perf_counter() - start)


def raw_keygen(hsm: Hsm, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        public, private = hsm.session.generate_keypair(
            KeyType.RSA, 1024, public_template={Attribute.PUBLIC_EXPONENT: b"\x03"}
        )
        private.destroy()
        public.destroy()
    return count / (time.perf_counter() - start)


def pool_refill(hsm: Hsm, count: int) -> tuple[float, list[PooledPair]]:
    start = time.perf_counter()
    pairs = generate_pool_pairs(hsm, count)
    return count / (time.perf_counter() - start), pairs


def run(hsm: Hsm, cards: int, pairs: int) -> dict[str, Any]:
    issuer = load_keys(hsm)
    assert rsa_public(hsm, issuer_key_label(ISSUER)) == issuer.public
    keygen_before = raw_keygen(hsm, pairs)
    refill_rate, _ = pool_refill(hsm, pairs)
    keygen_after = raw_keygen(hsm, pairs)
    pool = generate_pool_pairs(hsm, cards)  # drawn by the cards below, not timed
    raw_before = raw_cards(hsm, pool)
    service = service_cards(hsm, issuer, pool)
    raw_after = raw_cards(hsm, pool)
    raw_limit, keygen_limit = max(raw_before, raw_after), max(keygen_before, keygen_after)
    return {
        "cards": cards,
        "full_profile_cards_per_s": round(service, 1),
        "raw_hsm_cards_per_s": {"before": round(raw_before, 1), "after": round(raw_after, 1)},
        "ratio_vs_raw": round(service / raw_limit, 3),
        "pool_pairs": pairs,
        "pool_refill_pairs_per_s": round(refill_rate, 1),
        "raw_rsa1024_keygen_per_s": {
            "before": round(keygen_before, 1),
            "after": round(keygen_after, 1),
        },
        "refill_ratio_vs_raw_keygen": round(refill_rate / keygen_limit, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-emv-") as tmp:
        hsm = fresh_token(Path(tmp))
        try:
            figures = hsm.run(run, args.cards, args.pairs)
        finally:
            hsm.close()
    print(json.dumps(figures, indent=2))  # noqa: T201 - the benchmark's output


if __name__ == "__main__":
    main()
