"""Virtual cards for the vcard tests: a personalisation built by the independent host
(tests/support/scp03_host.py), the expected ARQC, APDU helpers and the USIM application calls."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pyemv import ac, kd

from shared.iso7816 import CommandAPDU, encode_dgi, store_data, store_data_script
from tests.support import emv_issuer
from tests.support.scp03_host import ISD_AID, Scp03Host, initialize_update, install_for_perso
from vcard.card import VirtualCard
from vcard.crypto import TEST_KMC
from vcard.store import CardStore
from vcard.usim import (
    USIM_AID,
)

IMK_AC = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


IMK_SMI = bytes.fromhex("11111111111111112222222222222222")


IMK_SMC = bytes.fromhex("33333333333333334444444444444444")


PAN, PSN, EXPIRY = "5413330089010012", "01", "281231"


AID = bytes.fromhex("A0000000031010")


CDOL1 = bytes.fromhex(
    "000000001000"  # amount authorised
    "000000000000"  # amount other
    "0826"  # terminal country
    "0000000000"  # TVR
    "0978"  # currency
    "251124"  # date
    "00"  # type
    "CAFEBABE"  # unpredictable number
)


def _aes_ecb(key: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def k_dek_of(kmc: bytes, cplc: bytes) -> bytes:
    """CPG202-AES from docs/perso-protocol.md, re-coded here on purpose (not vcard.crypto)."""
    d = cplc[0:4] + cplc[12:18]
    return _aes_ecb(kmc, d[4:10] + b"\xf0\x03" + d[4:10] + b"\x0f\x03")


@dataclass
class Perso:
    dgis: list[tuple[int, bytes]]
    mk_ac: bytes
    record1: bytes  # SFI 1 record 1: track 2, name
    record2: bytes  # SFI 2 record 1: PAN, expiry, ... (signed for SDA)
    select_data: bytes


def build_perso(cplc: bytes, kmc: bytes = TEST_KMC, pan: str = PAN) -> Perso:
    """What keymgmt's data preparation produces for one card: the test issuer's full profile
    (tests/support/emv_issuer.py, from the specifications with cryptography and pyemv)."""
    card = emv_issuer.build_card(cplc, kmc, pan=pan)
    fci = dict(card.dgis)[0x9102]
    return Perso(card.dgis, card.mk_ac, card.records[0x0101], card.records[0x0201], fci)


def expected_arqc(mk_ac: bytes, atc: int, cdol1: bytes = CDOL1) -> bytes:
    atc_b = atc.to_bytes(2, "big")
    session_key = kd.derive_common_sk(mk_ac, atc_b + bytes(6))
    return bytes(ac.generate_ac(session_key, cdol1 + emv_issuer.AIP + atc_b))


def apdu(card: VirtualCard, hex_apdu: str | bytes) -> tuple[bytes, int]:
    raw = bytes.fromhex(hex_apdu) if isinstance(hex_apdu, str) else hex_apdu
    response = card.process(raw)
    return response[:-2], int.from_bytes(response[-2:], "big")


def new_card(store: CardStore, **kwargs: object) -> VirtualCard:
    state = store.manufacture(TEST_KMC, **kwargs)  # type: ignore[arg-type]
    card = VirtualCard(state, store.save)
    card.power_on()
    return card


def secured(host: Scp03Host, cmd: CommandAPDU | bytes) -> bytes:
    if isinstance(cmd, bytes):
        cmd = CommandAPDU.parse(cmd)
    return host.wrap(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data)


def select_usim(card: VirtualCard) -> tuple[bytes, int]:
    return apdu(card, bytes.fromhex("00A4040010") + USIM_AID + b"\x00")


def authenticate(card: VirtualCard, rand: bytes, autn: bytes) -> tuple[bytes, int]:
    return apdu(card, bytes.fromhex("0088008122") + b"\x10" + rand + b"\x10" + autn + b"\x00")


def personalize_with(
    card: VirtualCard, aid: bytes, dgis: list[tuple[int, bytes]], level: int = 0x03
) -> list[int]:
    """INSTALL [for personalization] of `aid` and one STORE DATA per DGI in an SCP03 session
    at `level` (03: C-DECRYPTION + C-MAC), built by the independent host; the STORE DATA
    status words."""
    assert apdu(card, bytes.fromhex("00A4040008") + ISD_AID + b"\x00")[1] == 0x9000
    challenge = os.urandom(8)
    answer, sw = apdu(card, initialize_update(challenge))
    if sw >> 8 == 0x61:  # T=0: GET RESPONSE
        answer, sw = apdu(card, bytes((0x00, 0xC0, 0x00, 0x00, sw & 0xFF)))
    assert sw == 0x9000
    host = Scp03Host.from_kmc(TEST_KMC, challenge, answer)
    assert apdu(card, host.external_authenticate(level))[1] == 0x9000
    assert apdu(card, host.wrap(0x80, 0xE6, 0x20, 0x00, install_for_perso(aid)))[1] == 0x9000
    return [apdu(card, secured(host, cmd))[1] for cmd in store_data_script(dgis)]


def under_kdek(card: VirtualCard, clear: bytes) -> bytes:
    """AES-128-ECB under the card's K_DEK, as keymgmt sends Ki, OPc and PINs."""
    return _aes_ecb(k_dek_of(TEST_KMC, card.state.cplc), clear)


def under_kdek_cbc(card: VirtualCard, clear: bytes) -> bytes:
    """AES-128-CBC, zero IV, under the card's K_DEK: how keymgmt sends the PIN block."""
    key = k_dek_of(TEST_KMC, card.state.cplc)
    enc = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
    return enc.update(clear) + enc.finalize()


def open_perso_session(
    card: VirtualCard, aid: bytes = AID, kmc: bytes = TEST_KMC, level: int = 0x03
) -> Scp03Host:
    """SELECT ISD, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE (default C-DEC + C-MAC), INSTALL
    [for personalization] of the payment application, as a perso station would."""
    assert apdu(card, bytes.fromhex("00A4040008") + ISD_AID + b"\x00")[1] == 0x9000
    challenge = os.urandom(8)
    answer, sw = apdu(card, initialize_update(challenge))
    assert sw == 0x9000
    host = Scp03Host.from_kmc(kmc, challenge, answer)
    assert apdu(card, host.external_authenticate(level))[1] == 0x9000
    assert apdu(card, host.wrap(0x80, 0xE6, 0x20, 0x00, install_for_perso(aid)))[1] == 0x9000
    return host


STORE_DATA_CHUNK = 200  # under C-DEC + C-MAC: padded to 208, + 8 MAC bytes, within 255


def perso_commands(dgis: list[tuple[int, bytes]]) -> list[CommandAPDU]:
    """STORE DATA per docs/perso-protocol.md: one DGI per command, a DGI too long for one
    short command continued in the next ones; blocks from 00, P1 b8 on the last."""
    chunks = [
        encoded[i : i + STORE_DATA_CHUNK]
        for tag, value in dgis
        for encoded in (encode_dgi(tag, value),)
        for i in range(0, len(encoded), STORE_DATA_CHUNK)
    ]
    return [store_data(n, chunk, last=n == len(chunks) - 1) for n, chunk in enumerate(chunks)]


def personalize_dgis(card: VirtualCard, dgis: list[tuple[int, bytes]]) -> list[int]:
    """The STORE DATA script of `dgis` through an SCP03 session; the status words."""
    host = open_perso_session(card)
    return [apdu(card, secured(host, cmd))[1] for cmd in perso_commands(dgis)]


def card_transmit(card: VirtualCard) -> Callable[[bytes], Awaitable[tuple[bytes, int]]]:
    """The card in-process as a terminal kernel's transmit function."""

    async def transmit(raw: bytes) -> tuple[bytes, int]:
        return apdu(card, raw)

    return transmit
