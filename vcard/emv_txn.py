"""The transaction commands of the payment application: GET PROCESSING OPTIONS (Book 3
§6.5.8), INTERNAL AUTHENTICATE (§6.5.9, DDA) and GENERATE AC (§6.5.5, with CDA, Book 2 §6.6).

Card risk management of this application (docs/perso-protocol.md):
- first GENERATE AC: AAC asked -> AAC; TC asked -> TC while the consecutive offline
  transactions are below the upper limit ('9F23'), else ARQC; ARQC asked -> ARQC;
- second GENERATE AC (only after an ARQC): TC if TC is asked and the authorisation response
  code ('8A' in the CDOL2 data) is '3030', else AAC;
- the ATC increments on every first GENERATE AC and is written before the cryptogram leaves
  the card; at the ATC limit ('DF01') the application answers 6985.
The AC is the existing algorithm: MAC over the CDOL data as sent || AIP || ATC.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Final

from shared.iso7816 import (
    SW_CONDITIONS_NOT_SATISFIED,
    SW_INCORRECT_P1P2,
    SW_WRONG_LENGTH,
    CommandAPDU,
    ResponseAPDU,
    tlv,
)
from vcard.crypto import arqc
from vcard.emv_data import AIP_CDA, Dol, Profile, dol_length, dol_values
from vcard.emv_oda import (
    cda_dynamic_data,
    dda_dynamic_data,
    icc_dynamic_number,
    sign_dynamic_data,
)
from vcard.emv_session import (
    CVR1_CDA,
    CVR1_DDA,
    CVR1_FIRST_ARQC,
    CVR1_FIRST_TC,
    CVR1_SECOND_TC,
    CVR2_LAST_ONLINE_INCOMPLETE,
    CVR2_LOWER_OFFLINE_EXCEEDED,
    CVR2_UPPER_OFFLINE_EXCEEDED,
    Session,
)
from vcard.store import CardState

CID_AAC: Final = 0x00
CID_TC: Final = 0x40
CID_ARQC: Final = 0x80
P1_CDA: Final = 0x10
ARC_APPROVED: Final = b"00"
TAG_TTQ: Final = 0x9F66
TAG_UN: Final = 0x9F37


def _sw(sw: int) -> ResponseAPDU:
    return ResponseAPDU(b"", sw)


def get_processing_options(profile: Profile, session: Session, cmd: CommandAPDU) -> ResponseAPDU:
    """'83' L PDOL data -> format 2 '77'('82' AIP, '94' AFL) of the interface the TTQ names."""
    if cmd.p1 or cmd.p2:
        return _sw(SW_INCORRECT_P1P2)
    if session.selected != "app" or session.interface is not None:
        return _sw(SW_CONDITIONS_NOT_SATISFIED)  # GPO once per selection
    fci = profile.contactless if session.contactless and profile.contactless else profile.contact
    data = cmd.data
    expected = dol_length(fci.pdol)
    if len(data) < 2 or data[0] != 0x83 or data[1] != expected or len(data) != 2 + expected:
        return _sw(SW_WRONG_LENGTH)
    pdol_data = data[2:]
    ttq = dol_values(fci.pdol, pdol_data).get(TAG_TTQ, b"")
    face = profile.contact
    if ttq.strip(b"\x00"):
        if profile.contactless is None:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)  # a contactless terminal, a contact card
        face = profile.contactless
    session.interface = face
    session.pdol_data = pdol_data
    afl = b"".join(bytes((e.sfi << 3, e.first, e.last, e.oda_records)) for e in face.afl)
    return ResponseAPDU(tlv(0x77, tlv(0x82, face.aip) + tlv(0x94, afl)), 0x9000)


def internal_authenticate(state: CardState, session: Session, cmd: CommandAPDU) -> ResponseAPDU:
    """DDA: '80' L signed dynamic application data over the DDOL data as sent."""
    if cmd.p1 or cmd.p2:
        return _sw(SW_INCORRECT_P1P2)
    if not cmd.data:
        return _sw(SW_WRONG_LENGTH)
    if session.selected != "app" or state.icc_key is None:
        return _sw(SW_CONDITIONS_NOT_SATISFIED)
    signed = sign_dynamic_data(state.icc_key, dda_dynamic_data(icc_dynamic_number()), cmd.data)
    session.flag(0, CVR1_DDA)
    return ResponseAPDU(tlv(0x80, signed), 0x9000)


def _first_cid(state: CardState, profile: Profile, session: Session, requested: int) -> int:
    if state.offline_count >= profile.risk.lower_offline:
        session.flag(1, CVR2_LOWER_OFFLINE_EXCEEDED)
    if requested == CID_TC and state.offline_count >= profile.risk.upper_offline:
        session.flag(1, CVR2_UPPER_OFFLINE_EXCEEDED)
        return CID_ARQC
    return requested


def _second_cid(profile: Profile, data: bytes, requested: int) -> int:
    arc = dol_values(profile.cdol2, data).get(0x8A)
    return CID_TC if requested == CID_TC and arc == ARC_APPROVED else CID_AAC


def generate_ac(
    state: CardState,
    profile: Profile,
    session: Session,
    cmd: CommandAPDU,
    persist: Callable[[CardState], None],
) -> ResponseAPDU:
    requested, cda = cmd.p1 & 0xC0, bool(cmd.p1 & P1_CDA)
    if requested == 0xC0 or cmd.p1 & 0x2F or cmd.p2:
        return _sw(SW_INCORRECT_P1P2)
    face = session.interface
    if session.selected != "app" or face is None or state.mk_ac is None or session.second_done:
        return _sw(SW_CONDITIONS_NOT_SATISFIED)
    second = session.first_cid is not None
    if second and (session.first_cid != CID_ARQC or requested == CID_ARQC):
        return _sw(SW_CONDITIONS_NOT_SATISFIED)  # a second GENERATE AC follows an ARQC only
    dol = profile.cdol2 if second else profile.cdol1
    if len(cmd.data) != dol_length(dol):
        return _sw(SW_WRONG_LENGTH)
    if cda and (not face.aip[0] & AIP_CDA or state.icc_key is None or not _has_un(dol)):
        return _sw(SW_CONDITIONS_NOT_SATISFIED)
    if second:
        cid = _second_cid(profile, cmd.data, requested)
        session.second_done = True
        session.cvr[0] = (session.cvr[0] & 0x3F) | (CVR1_SECOND_TC if cid == CID_TC else 0)
        if cid == CID_TC:
            state.last_online_atc, state.offline_count = state.atc, 0
    else:
        if state.atc >= profile.risk.atc_limit:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)  # ATC limit: the application is blocked
        if state.last_online_atc < state.atc and state.offline_count == 0:
            session.flag(1, CVR2_LAST_ONLINE_INCOMPLETE)
        cid = _first_cid(state, profile, session, requested)
        state.atc += 1
        if cid == CID_TC:
            state.offline_count += 1
        session.cdol1_data = cmd.data
        session.first_cid = cid
        session.cvr[0] |= {CID_TC: CVR1_FIRST_TC, CID_ARQC: CVR1_FIRST_ARQC}.get(cid, 0)
    persist(state)  # the ATC is committed before the cryptogram leaves the card
    ac = arqc(state.mk_ac, state.atc, cmd.data, face.aip)
    if cda and cid != CID_AAC:
        session.flag(0, CVR1_CDA)
    iad = _iad(profile, session)
    if not cda:
        body = bytes((cid,)) + state.atc.to_bytes(2, "big") + ac + iad
        return ResponseAPDU(tlv(0x80, body), 0x9000)
    return _format2(state, session, dol, cmd.data, cid, ac, iad, second)


def _has_un(dol: Dol) -> bool:
    return any(tag == TAG_UN for tag, _ in dol)


def _iad(profile: Profile, session: Session) -> bytes:
    """'9F10': the template of DGI 0D01 with the CVR in bytes 5-7 (cryptogram version 0A)."""
    template = profile.risk.iad_template
    return template[:4] + bytes(session.cvr) + template[7:]


def _format2(
    state: CardState,
    session: Session,
    dol: Dol,
    data: bytes,
    cid: int,
    ac: bytes,
    iad: bytes,
    second: bool,
) -> ResponseAPDU:
    """Response format 2 with CDA (Book 2 §6.6.1): the AC travels inside the signature."""
    head = tlv(0x9F27, bytes((cid,))) + tlv(0x9F36, state.atc.to_bytes(2, "big"))
    if cid == CID_AAC:  # no signature on a decline: the AC in the clear
        return ResponseAPDU(tlv(0x77, head + tlv(0x9F26, ac) + tlv(0x9F10, iad)), 0x9000)
    assert state.icc_key is not None
    cdol_data = session.cdol1_data + (data if second else b"")
    tx_hash = hashlib.sha1(
        session.pdol_data + cdol_data + head + tlv(0x9F10, iad), usedforsecurity=False
    ).digest()
    un = dol_values(dol, data)[TAG_UN]
    dynamic = cda_dynamic_data(icc_dynamic_number(), cid, ac, tx_hash)
    sdad = sign_dynamic_data(state.icc_key, dynamic, un)
    return ResponseAPDU(tlv(0x77, head + tlv(0x9F4B, sdad) + tlv(0x9F10, iad)), 0x9000)
