"""The terminal kernel: one EMV transaction, contact or contactless (docs/terminal.md).

Contact: SELECT PSE, READ RECORD of its directory, SELECT the AID found, GPO with the PDOL data
(a contact terminal fills the contactless TTQ '9F66' with zeros), READ RECORD over the AFL, ODA
(SDA, DDA and CDA as the AIP announces them), offline plaintext PIN when the CVM list names it,
GENERATE AC asking an ARQC (with CDA), and a second GENERATE AC with the issuer's answer.
Contactless: SELECT PPSE, the AID from its directory, GPO with a TTQ, the records, ODA and a
CDA-signed ARQC. Every failure raises KernelFailure naming the step.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Final

from services.qa.emv.apdu import (
    PPSE,
    PSE,
    KernelFailure,
    Transmit,
    command,
    exchange,
    generate_ac,
    gpo,
    internal_authenticate,
    read_record,
    select,
    verify_plaintext,
)
from services.qa.emv.card_data import CardData, afl_entries, parse_fci_directory, read_afl
from services.qa.emv.dol import build_dol_data, parse_dol, split_dol_data
from services.qa.emv.oda import (
    OdaFailure,
    PublicKey,
    recover_icc_key,
    recover_issuer_key,
    verify_sda,
    verify_sdad,
)
from shared.iso7816 import Tlv, decode_tlv, find_tlv, tlv

AIP_SDA: Final = 0x40
AIP_DDA: Final = 0x20
AIP_CVM: Final = 0x10
AIP_CDA: Final = 0x01
CID_AAC: Final = 0x00
CID_TC: Final = 0x40
CID_ARQC: Final = 0x80
P1_CDA: Final = 0x10
CVM_PLAINTEXT_PIN: Final = 0x01
DEFAULT_DDOL: Final = bytes.fromhex("9F3704")
TTQ_CONTACTLESS: Final = bytes.fromhex("36004000")  # EMV mode, online capable, CDA/ODA


CaKeySource = Callable[[bytes, int], Awaitable[PublicKey | None]]


@dataclass(frozen=True)
class TerminalConfig:
    """The terminal's CA public keys, by (RID, index): held ones first, then asked of
    `ca_key_source` (None: unknown), as a terminal is loaded with its acquirer's CA keys."""

    ca_keys: dict[tuple[bytes, int], PublicKey]
    amount_minor: int = 100
    country: bytes = bytes.fromhex("0826")
    currency: bytes = bytes.fromhex("0826")
    today: date | None = None
    ca_key_source: CaKeySource | None = None

    def values(self, un: bytes) -> dict[int, bytes]:
        """The terminal's data elements (Book 3 Annex A) for DOL building."""
        day = self.today or date.today()
        return {
            0x9F02: bytes.fromhex(f"{self.amount_minor:012d}"),
            0x9F03: bytes(6),
            0x9F1A: self.country,
            0x5F2A: self.currency,
            0x95: bytes(5),
            0x9A: bytes.fromhex(day.strftime("%y%m%d")),
            0x9C: b"\x00",
            0x9F37: un,
            0x9F35: b"\x22",  # attended, offline with online capability, merchant
            0x9F33: bytes.fromhex("E0B8C8"),
        }


@dataclass(frozen=True)
class Cryptogram:
    cid: int
    atc: bytes
    ac: bytes
    iad: bytes
    cdol_data: bytes


@dataclass
class Outcome:
    interface: str
    aid: bytes = b""
    aip: bytes = b""
    data: CardData = field(default_factory=CardData)
    oda: list[str] = field(default_factory=list)
    pin_verified: bool = False
    first: Cryptogram | None = None
    second: Cryptogram | None = None


class Kernel:
    def __init__(self, transmit: Transmit, config: TerminalConfig) -> None:
        self.transmit = transmit
        self.config = config
        self._pdol_data = b""
        self._icc_key: PublicKey | None = None

    async def contact(self, pin: str | None, *, second: bool = True) -> Outcome:
        out = Outcome("contact")
        directory = await self._pse()
        await self._select_and_gpo(out, directory, ttq=bytes(4))
        await self._offline_data_authentication(out)
        if pin is not None and self._cvm_wants_plaintext_pin(out):
            await command(self.transmit, verify_plaintext(pin), "cvm: offline PIN VERIFY")
            out.pin_verified = True
        await self._generate_ac(out, second=second)
        return out

    async def contactless(self) -> Outcome:
        out = Outcome("contactless")
        fci = await command(self.transmit, select(PPSE), "selection: SELECT PPSE")
        directory = parse_fci_directory(fci)
        await self._select_and_gpo(out, directory, ttq=TTQ_CONTACTLESS)
        # The contactless path is M/Chip-like: ODA by CDA on the cryptogram, no INTERNAL
        # AUTHENTICATE (one tap, as few commands as possible).
        await self._offline_data_authentication(out, dda=False)
        await self._generate_ac(out, second=False)
        return out

    async def _pse(self) -> list[tuple[int, bytes]]:
        fci = await command(self.transmit, select(PSE), "selection: SELECT PSE")
        sfi = find_tlv(decode_tlv(fci), 0x88)
        if sfi is None or len(sfi.value) != 1:
            raise KernelFailure("selection", "the PSE FCI has no directory SFI (88)")
        entries: list[tuple[int, bytes]] = []
        for number in range(1, 17):
            data, sw = await exchange(self.transmit, read_record(sfi.value[0], number), "pse")
            if sw == 0x6A83:
                break
            if sw != 0x9000:
                raise KernelFailure("selection", f"PSE directory record {number}: {sw:04X}")
            entries += parse_fci_directory(data)
        return entries

    async def _select_and_gpo(
        self, out: Outcome, directory: list[tuple[int, bytes]], ttq: bytes
    ) -> None:
        if not directory:
            raise KernelFailure("selection", "the directory lists no application")
        out.aid = sorted(directory)[0][1]  # highest priority first (Book 1 §12.4)
        fci = await command(self.transmit, select(out.aid), "selection: SELECT AID")
        items = decode_tlv(fci)
        name = find_tlv(items, 0x84)
        if name is None or name.value != out.aid:
            raise KernelFailure("selection", "the FCI's DF name (84) is not the AID selected")
        pdol = find_tlv(items, 0x9F38)
        values = self.config.values(secrets.token_bytes(4)) | {0x9F66: ttq}
        try:
            self._pdol_data = build_dol_data(parse_dol(pdol.value), values) if pdol else b""
        except ValueError as exc:
            raise KernelFailure("gpo", f"PDOL: {exc}") from exc
        answer = await command(self.transmit, gpo(self._pdol_data), "gpo")
        out.aip, afl = _gpo_answer(answer)
        out.data = await read_afl(self.transmit, afl_entries(afl), out.aip)
        self._processing_restrictions(out.data)

    def _processing_restrictions(self, data: CardData) -> None:
        """Book 3 §10.4.3: the application is effective and not expired (YYMMDD, BCD). A real
        terminal sets TVR bits and may go on; for QA a card that would be declined fails."""
        today = (self.config.today or date.today()).strftime("%y%m%d")
        expiry, effective = data.get(0x5F24).hex(), data.get(0x5F25, b"").hex()
        if not expiry.isdigit() or expiry < today:
            raise KernelFailure("processing restrictions", "application expired (5F24)")
        if effective and (not effective.isdigit() or effective > today):
            raise KernelFailure("processing restrictions", "application not yet effective (5F25)")

    async def _ca_key(self, out: Outcome) -> PublicKey:
        index = out.data.get(0x8F)
        if len(index) != 1:
            raise KernelFailure("oda", "CA public key index (8F) missing")
        rid, source = out.aid[:5], self.config.ca_key_source
        key = self.config.ca_keys.get((rid, index[0]))
        if key is None and source is not None:
            key = await source(rid, index[0])
        if key is None:
            raise KernelFailure(
                "oda", f"no CA public key for RID {out.aid[:5].hex().upper()} index {index.hex()}"
            )
        return key

    async def _offline_data_authentication(self, out: Outcome, *, dda: bool = True) -> None:
        aip, data = out.aip[0], out.data
        if not aip & (AIP_SDA | AIP_DDA | AIP_CDA):
            raise KernelFailure("oda", "the AIP announces no offline data authentication")
        today = self.config.today or date.today()
        pan = data.get(0x5A).hex().upper().rstrip("F")
        ca_key = await self._ca_key(out)
        try:
            issuer = recover_issuer_key(
                data.get(0x90), data.get(0x92, b""), data.get(0x9F32), ca_key, pan, today
            )
            if aip & AIP_SDA:
                verify_sda(data.get(0x93), issuer, data.static_data)
                out.oda.append("SDA")
            if aip & (AIP_DDA | AIP_CDA):
                self._icc_key = recover_icc_key(
                    data.get(0x9F46),
                    data.get(0x9F48, b""),
                    data.get(0x9F47),
                    issuer,
                    data.get(0x5A),
                    data.static_data,
                    today,
                )
            if aip & AIP_DDA and dda:
                await self._dda(out, self._icc_key)
        except OdaFailure as exc:
            raise KernelFailure("oda", str(exc)) from exc

    async def _dda(self, out: Outcome, icc: PublicKey | None) -> None:
        assert icc is not None
        ddol = parse_dol(out.data.get(0x9F49, DEFAULT_DDOL))
        ddol_data = build_dol_data(ddol, self.config.values(secrets.token_bytes(4)))
        answer = await command(self.transmit, internal_authenticate(ddol_data), "oda: DDA")
        items = decode_tlv(answer)
        template = items[0] if items else None
        if template is None or template.tag not in (0x80, 0x77):
            raise KernelFailure("oda", "INTERNAL AUTHENTICATE answer is not a template")
        sdad = template.value if template.tag == 0x80 else _need(template.children, 0x9F4B)
        verify_sdad(sdad, icc, ddol_data, "DDA signed dynamic application data")
        out.oda.append("DDA")

    def _cvm_wants_plaintext_pin(self, out: Outcome) -> bool:
        cvm = out.data.get(0x8E, b"")
        if not out.aip[0] & AIP_CVM or len(cvm) < 10:
            return False
        rules = cvm[8:]
        return any(rules[i] & 0x3F == CVM_PLAINTEXT_PIN for i in range(0, len(rules) - 1, 2))

    @property
    def _cda(self) -> bool:
        return self._icc_key is not None

    async def _generate_ac(self, out: Outcome, *, second: bool) -> None:
        """First GENERATE AC asking an ARQC (terminal action analysis goes online: QA and a
        test terminal always want the issuer to see the cryptogram)."""
        cda = bool(out.aip[0] & AIP_CDA) and self._cda
        cdol1 = parse_dol(out.data.get(0x8C))
        data1 = build_dol_data(cdol1, self.config.values(secrets.token_bytes(4)))
        answer = await command(self.transmit, generate_ac(CID_ARQC | cda * P1_CDA, data1), "genac1")
        out.first = self._cryptogram(answer, data1, data1, cdol1, cda, "genac1")
        if out.first.cid != CID_ARQC:
            raise KernelFailure("genac1", f"asked ARQC, got CID {out.first.cid:02X}")
        if cda:
            out.oda.append("CDA")
        if second:
            await self.complete(out, approved=True)

    async def complete(self, out: Outcome, *, approved: bool) -> None:
        """Second GENERATE AC with the issuer's answer: ARC '00' (approved) asking a TC, or
        ARC '05' asking an AAC (Book 3 §9.3, Book 4 §6.3.7)."""
        if out.first is None or out.second is not None:
            raise KernelFailure("genac2", "no ARQC to complete")
        cda = bool(out.aip[0] & AIP_CDA) and self._cda and approved
        cdol2 = parse_dol(out.data.get(0x8D))
        arc = b"00" if approved else b"05"
        data2 = build_dol_data(cdol2, self.config.values(secrets.token_bytes(4)) | {0x8A: arc})
        p1 = (CID_TC if approved else CID_AAC) | cda * P1_CDA
        answer = await command(self.transmit, generate_ac(p1, data2), "genac2")
        data_all = out.first.cdol_data + data2
        out.second = self._cryptogram(answer, data_all, data2, cdol2, cda, "genac2")
        want = CID_TC if approved else CID_AAC
        if out.second.cid != want:
            raise KernelFailure("genac2", f"asked {want:02X}, got CID {out.second.cid:02X}")

    def _cryptogram(
        self,
        answer: bytes,
        cdol_all: bytes,
        sent: bytes,
        dol: list[tuple[int, int]],
        cda: bool,
        step: str,
    ) -> Cryptogram:
        items = decode_tlv(answer)
        if len(items) != 1 or items[0].tag not in (0x80, 0x77):
            raise KernelFailure(step, "GENERATE AC answer is neither format 1 nor format 2")
        if items[0].tag == 0x80:
            v = items[0].value
            if cda or len(v) < 11:
                raise KernelFailure(step, "format 1 answer where CDA was asked, or too short")
            return Cryptogram(v[0], v[1:3], v[3:11], v[11:], sent)
        children = items[0].children
        cid = _need(children, 0x9F27)[0]
        atc, iad = _need(children, 0x9F36), _need(children, 0x9F10)
        sdad = find_tlv(children, 0x9F4B)
        if sdad is None:
            if cda and cid != CID_AAC:
                raise KernelFailure(step, "CDA asked but no signed dynamic data (9F4B)")
            return Cryptogram(cid, atc, _need(children, 0x9F26), iad, sent)
        assert self._icc_key is not None
        un = split_dol_data(dol, sent).get(0x9F37, b"")
        rest = b"".join(tlv(c.tag, c.value) for c in children if c.tag != 0x9F4B)
        try:
            dynamic = verify_sdad(sdad.value, self._icc_key, un, "CDA signed dynamic data")
        except OdaFailure as exc:
            raise KernelFailure("oda", str(exc)) from exc
        tx_hash = hashlib.sha1(self._pdol_data + cdol_all + rest, usedforsecurity=False).digest()
        ldn = dynamic[0] if dynamic else 0
        if len(dynamic) != 1 + ldn + 1 + 8 + 20 or dynamic[1 + ldn] != cid:
            raise KernelFailure("oda", "CDA: ICC dynamic data malformed or CID differs")
        if dynamic[-20:] != tx_hash:
            raise KernelFailure("oda", "CDA: transaction data hash code does not match")
        return Cryptogram(cid, atc, dynamic[2 + ldn : 10 + ldn], iad, sent)


def _need(items: list[Tlv], tag: int) -> bytes:
    found = find_tlv(items, tag)
    if found is None:
        raise KernelFailure("card data", f"tag {tag:X} missing from the answer")
    return found.value


def _gpo_answer(answer: bytes) -> tuple[bytes, bytes]:
    """Format 1 '80' AIP || AFL, or format 2 '77' with '82' and '94' (Book 3 §6.5.8.4)."""
    items = decode_tlv(answer)
    if len(items) == 1 and items[0].tag == 0x80 and len(items[0].value) >= 6:
        return items[0].value[:2], items[0].value[2:]
    if len(items) == 1 and items[0].tag == 0x77:
        return _need(items[0].children, 0x82), _need(items[0].children, 0x94)
    raise KernelFailure("gpo", "the answer is neither format 1 nor format 2")
