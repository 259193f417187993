"""A UICC/USIM client written from ETSI TS 102 221 and 3GPP TS 31.102, for the tests: it
imports none of our card or service code, so a card that passes it passes what the specs say,
not what our card happens to do.

It drives any `transmit(apdu) -> (data, sw)` (a virtual card in a unit test, a pcscd reader in
an integration test), answers 61xx with GET RESPONSE and 6Cxx by resending with the exact Le
(ISO/IEC 7816-4 §5.1.3, TS 102 221 §7.3.1), and decodes what a handset reads at power-up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

Transmit = Callable[[bytes], Awaitable[tuple[bytes, int]]]

MF: Final = 0x3F00
EF_DIR: Final = 0x2F00
EF_ICCID: Final = 0x2FE2
EF_PL: Final = 0x2F05
EF_ARR: Final = 0x2F06
ADF_CURRENT: Final = 0x7FFF
USIM_APP: Final = bytes.fromhex("A0000000871002")  # RID 3GPP + USIM application code
# TS 31.102 §4.2: EFs of ADF.USIM a handset reads at power-up, FID -> name
USIM_EFS: Final = {
    0x6F07: "IMSI",
    0x6F08: "Keys",
    0x6F09: "KeysPS",
    0x6F31: "HPPLMN",
    0x6F38: "UST",
    0x6F56: "EST",
    0x6F5B: "START-HFN",
    0x6F5C: "THRESHOLD",
    0x6F73: "PSLOCI",
    0x6F78: "ACC",
    0x6F7B: "FPLMN",
    0x6F7E: "LOCI",
    0x6FAD: "AD",
    0x6FC4: "NETPAR",
    0x6F46: "SPN",
    0x6F40: "MSISDN",
    0x6F42: "SMSP",
    0x6FB7: "ECC",
}
KEY_PIN1: Final = 0x01
KEY_PIN2: Final = 0x81
KEY_ADM1: Final = 0x0A


class CardError(Exception):
    def __init__(self, what: str, sw: int) -> None:
        super().__init__(f"{what}: {sw:04X}")
        self.sw = sw


def tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """BER-TLV objects at one level (ISO/IEC 7816-4 §5.2), FF/00 padding skipped."""
    out, pos = [], 0
    while pos < len(data):
        if data[pos] in (0x00, 0xFF):
            pos += 1
            continue
        tag = data[pos]
        pos += 1
        if tag & 0x1F == 0x1F:  # a two-byte tag
            tag = tag << 8 | data[pos]
            pos += 1
        length = data[pos]
        pos += 1
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(data[pos : pos + n], "big")
            pos += n
        out.append((tag, data[pos : pos + length]))
        pos += length
    return out


@dataclass(frozen=True)
class Atr:
    """An Answer To Reset as ISO/IEC 7816-3 §8.2 structures it."""

    protocols: tuple[int, ...]  # T values the TDi bytes indicate, in order (none: T=0)
    global_ta: int | None  # the first TA after T=15: clock stop and class indicator (§8.3)
    historical: bytes
    tck_ok: bool | None  # None when there is no TCK (only T=0 indicated)


def parse_atr(atr: bytes) -> Atr:
    """ISO/IEC 7816-3 §8.2: T0 (Y1, K), then interface bytes chained by TDi's high nibble."""
    if len(atr) < 2 or atr[0] not in (0x3B, 0x3F):
        raise ValueError(f"not an ATR (TS must be 3B or 3F): {atr.hex()}")
    y, k, pos = atr[1] >> 4, atr[1] & 0x0F, 2
    protocols: list[int] = []
    global_ta: int | None = None
    last_t: int | None = None
    while True:
        ta = atr[pos] if y & 0x1 else None
        pos += bin(y & 0x7).count("1")  # TA, TB, TC
        if last_t == 15 and ta is not None and global_ta is None:
            global_ta = ta
        if not y & 0x8:
            break
        td = atr[pos]
        pos += 1
        y, last_t = td >> 4, td & 0x0F
        protocols.append(last_t)
    historical = atr[pos : pos + k]
    if len(historical) != k:
        raise ValueError(f"ATR ends inside its {k} historical bytes: {atr.hex()}")
    tail = atr[pos + k :]
    tck_ok: bool | None = None
    if any(t != 0 for t in protocols):  # TCK present unless only T=0 is indicated (§8.2.5)
        if len(tail) != 1:
            raise ValueError(f"ATR indicates {protocols} but has no single TCK: {atr.hex()}")
        check = 0
        for byte in atr[1:]:
            check ^= byte
        tck_ok = check == 0
    elif tail:
        raise ValueError(f"ATR has {len(tail)} bytes after its historical bytes: {atr.hex()}")
    return Atr(tuple(protocols), global_ta, historical, tck_ok)


def compact_tlvs(historical: bytes) -> list[tuple[int, bytes]]:
    """ISO/IEC 7816-4 §8.1.1: category indicator 80, then COMPACT-TLV objects (tag nibble,
    length nibble)."""
    if historical[:1] != b"\x80":
        raise ValueError(f"historical bytes not in COMPACT-TLV (category {historical[:1].hex()})")
    out, pos = [], 1
    while pos < len(historical):
        tag, length = historical[pos] >> 4, historical[pos] & 0x0F
        out.append((tag, historical[pos + 1 : pos + 1 + length]))
        pos += 1 + length
    return out


def check_uicc_atr(atr: bytes) -> Atr:
    """What a terminal checks in a UICC's ATR (ETSI TS 102 221 §6.2, §6.3, §7): T=0 offered,
    the class indicator present (first TA for T=15) with a class the terminal supplies (B: 3 V
    or C: 1.8 V), a correct TCK, and the historical bytes' card service data then card
    capabilities. ValueError naming the fault otherwise."""
    parsed = parse_atr(atr)
    if parsed.protocols and 0 not in parsed.protocols:
        raise ValueError(f"a UICC offers T=0; this ATR offers T={parsed.protocols}")
    if parsed.tck_ok is False:
        raise ValueError(f"ATR check byte TCK is wrong: {atr.hex()}")
    if parsed.global_ta is None:
        raise ValueError("no class indicator: a UICC gives its classes in the first TA for T=15")
    classes = parsed.global_ta & 0x3F
    if not classes & 0x06:
        raise ValueError(f"class indicator {parsed.global_ta:02X} has neither class B nor C")
    objects = compact_tlvs(parsed.historical)
    if [tag for tag, _ in objects[:2]] != [0x3, 0x7]:
        raise ValueError("historical bytes: card service data (31) then card capabilities (73)")
    if not objects[0][1][:1] or not objects[0][1][0] & 0x80:
        raise ValueError("card service data does not declare selection by full DF name (AID)")
    return parsed


@dataclass
class Fcp:
    """What TS 102 221 §11.1.1.3 puts in a file's FCP template ('62')."""

    descriptor: bytes
    fid: int | None = None
    aid: bytes | None = None
    size: int | None = None
    total_size: int | None = None
    lifecycle: int | None = None
    arr: tuple[int, int] | None = None  # (EF.ARR FID, record number), from '8B'
    sfi: int | None = None  # None: '88' absent (the FID's low bits); 0: no SFI
    pin_status: dict[int, bool] = field(default_factory=dict)  # key reference -> enabled
    proprietary: bytes = b""

    @property
    def is_df(self) -> bool:
        return self.descriptor[0] & 0x38 == 0x38

    @property
    def structure(self) -> str:
        return {0x01: "transparent", 0x02: "linear", 0x06: "cyclic"}.get(
            self.descriptor[0] & 0x07, "?"
        )

    @property
    def record_length(self) -> int:
        return int.from_bytes(self.descriptor[2:4], "big")

    @property
    def records(self) -> int:
        return self.descriptor[4]


def parse_fcp(data: bytes) -> Fcp:
    (tag, body), *_ = tlvs(data)
    if tag != 0x62:
        raise ValueError(f"not an FCP template: tag {tag:02X}")
    items = dict(tlvs(body))
    fcp = Fcp(descriptor=items[0x82])
    if 0x83 in items:
        fcp.fid = int.from_bytes(items[0x83], "big")
    fcp.aid = items.get(0x84)
    if 0x80 in items:
        fcp.size = int.from_bytes(items[0x80], "big")
    if 0x81 in items:
        fcp.total_size = int.from_bytes(items[0x81], "big")
    if 0x8A in items:
        fcp.lifecycle = items[0x8A][0]
    if 0x8B in items and len(items[0x8B]) == 3:
        fcp.arr = (int.from_bytes(items[0x8B][:2], "big"), items[0x8B][2])
    if 0x88 in items:
        fcp.sfi = items[0x88][0] >> 3 if items[0x88] else 0
    fcp.proprietary = items.get(0xA5, b"")
    if 0xC6 in items:
        status = tlvs(items[0xC6])
        ps_do = next((v for t, v in status if t == 0x90), b"\x00")
        refs = [v[0] for t, v in status if t == 0x83]
        bits = int.from_bytes(ps_do, "big")
        width = 8 * len(ps_do)
        fcp.pin_status = {r: bool(bits >> (width - 1 - i) & 1) for i, r in enumerate(refs)}
    return fcp


def bcd_swapped(data: bytes) -> str:
    """Digits two per byte, low nibble first, F filler dropped (TS 102 221 §13.2)."""
    return "".join(f"{b & 0x0F:x}{b >> 4:x}" for b in data).rstrip("f")


def imsi_of(ef: bytes) -> str:
    """EF.IMSI (TS 31.102 §4.2.2): length, then the parity nibble and the digits."""
    digits = bcd_swapped(ef[1 : 1 + ef[0]])
    return digits[1:]


def plmn_of(three: bytes) -> str | None:
    """A PLMN as TS 24.008 §10.5.1.3 packs it (MCC 3 digits, MNC 2 or 3), None if free."""
    if three == b"\xff\xff\xff":
        return None
    d = [f"{b & 0x0F:x}{b >> 4:x}" for b in three]
    mcc, mnc3 = d[0] + d[1][0], d[1][1]
    mnc = d[2] + ("" if mnc3 == "f" else mnc3)
    return mcc + mnc


def pin_block(pin: str) -> bytes:
    """A PIN in a VERIFY: its digits in ASCII, FF-padded to 8 bytes (TS 102 221 §9.5.2)."""
    return pin.encode("ascii").ljust(8, b"\xff")


def tries_of(sw: int) -> int | None:
    return sw & 0x0F if sw & 0xFFF0 == 0x63C0 else None


class UiccClient:
    def __init__(self, transmit: Transmit) -> None:
        self._transmit = transmit
        self.apdus = 0

    async def send(self, apdu: bytes) -> tuple[bytes, int]:
        self.apdus += 1
        data, sw = await self._transmit(apdu)
        if sw >> 8 == 0x6C:  # wrong Le: resend with the one the card gives
            self.apdus += 1
            data, sw = await self._transmit(apdu[:-1] + bytes((sw & 0xFF,)))
        while sw >> 8 == 0x61:  # T=0: the data waits for GET RESPONSE
            self.apdus += 1
            more, sw = await self._transmit(bytes((0x00, 0xC0, 0x00, 0x00, sw & 0xFF)))
            data += more
        return data, sw

    async def ok(self, what: str, apdu: bytes) -> bytes:
        data, sw = await self.send(apdu)
        if sw != 0x9000:
            raise CardError(what, sw)
        return data

    # -- selection (TS 102 221 §11.1.1) -----------------------------------------------------
    async def select(self, p1: int, data: bytes, p2: int = 0x04) -> tuple[Fcp | None, int]:
        apdu = bytes((0x00, 0xA4, p1, p2, len(data))) + data
        body, sw = await self.send(apdu + (b"\x00" if p2 != 0x0C else b""))
        return (parse_fcp(body) if body and sw == 0x9000 else None), sw

    async def select_fid(self, fid: int, p2: int = 0x04) -> Fcp:
        fcp, sw = await self.select(0x00, fid.to_bytes(2, "big"), p2)
        if sw != 0x9000 or fcp is None:
            raise CardError(f"SELECT {fid:04X}", sw)
        return fcp

    async def select_path(self, *fids: int, from_mf: bool = True) -> Fcp:
        path = b"".join(f.to_bytes(2, "big") for f in fids)
        fcp, sw = await self.select(0x08 if from_mf else 0x09, path)
        if sw != 0x9000 or fcp is None:
            raise CardError(f"SELECT by path {path.hex()}", sw)
        return fcp

    async def select_aid(self, aid: bytes, p2: int = 0x04) -> Fcp | None:
        fcp, sw = await self.select(0x04, aid, p2)
        if sw != 0x9000:
            raise CardError(f"SELECT AID {aid.hex()}", sw)
        return fcp

    async def status(self) -> Fcp:
        return parse_fcp(await self.ok("STATUS", bytes.fromhex("80F2000000")))

    # -- reading and writing (§11.1.3-§11.1.6) ----------------------------------------------
    async def read_binary(self, length: int, offset: int = 0) -> bytes:
        apdu = bytes((0x00, 0xB0, offset >> 8, offset & 0xFF, length & 0xFF))
        return await self.ok("READ BINARY", apdu)

    async def read_binary_sfi(self, sfi: int, length: int) -> bytes:
        return await self.ok("READ BINARY (SFI)", bytes((0x00, 0xB0, 0x80 | sfi, 0, length)))

    async def update_binary(self, data: bytes, offset: int = 0) -> int:
        apdu = bytes((0x00, 0xD6, offset >> 8, offset & 0xFF, len(data))) + data
        return (await self.send(apdu))[1]

    async def read_record(self, number: int, length: int) -> bytes:
        return await self.ok("READ RECORD", bytes((0x00, 0xB2, number, 0x04, length)))

    async def update_record(self, number: int, data: bytes) -> int:
        return (await self.send(bytes((0x00, 0xDC, number, 0x04, len(data))) + data))[1]

    async def read_file(self, fcp: Fcp) -> bytes | list[bytes]:
        """A selected EF's whole contents: the bytes, or the list of records."""
        if fcp.structure == "transparent":
            return await self.read_binary(fcp.size or 0)
        n, length = fcp.records, fcp.record_length
        return [await self.read_record(i, length) for i in range(1, n + 1)]

    async def read_transparent(self, fcp: Fcp) -> bytes:
        if fcp.structure != "transparent":
            raise ValueError(f"EF {fcp.fid} is {fcp.structure}, not transparent")
        return await self.read_binary(fcp.size or 0)

    async def applications(self) -> list[tuple[bytes, bytes]]:
        """(AID, label) of each application template in EF.DIR (TS 102 221 §13.1)."""
        fcp = await self.select_path(EF_DIR)
        found = []
        for record in await self.read_file(fcp):
            assert isinstance(record, bytes)
            for tag, body in tlvs(record):
                if tag == 0x61:
                    items = dict(tlvs(body))
                    found.append((items[0x4F], items.get(0x50, b"")))
        return found

    # -- PINs (§11.1.9-§11.1.13) --------------------------------------------------------------
    async def verify(self, ref: int, pin: str | None = None) -> int:
        data = b"" if pin is None else bytes((8,)) + pin_block(pin)
        return (await self.send(bytes((0x00, 0x20, 0x00, ref)) + data))[1]

    async def change(self, ref: int, old: str, new: str) -> int:
        data = pin_block(old) + pin_block(new)
        return (await self.send(bytes((0x00, 0x24, 0x00, ref, 16)) + data))[1]

    async def disable(self, ref: int, pin: str) -> int:
        return (await self.send(bytes((0x00, 0x26, 0x00, ref, 8)) + pin_block(pin)))[1]

    async def enable(self, ref: int, pin: str) -> int:
        return (await self.send(bytes((0x00, 0x28, 0x00, ref, 8)) + pin_block(pin)))[1]

    async def unblock(self, ref: int, puk: str | None = None, new: str = "") -> int:
        data = b"" if puk is None else bytes((16,)) + pin_block(puk) + pin_block(new)
        return (await self.send(bytes((0x00, 0x2C, 0x00, ref)) + data))[1]

    # -- AUTHENTICATE (TS 31.102 §7.1.2) -----------------------------------------------------
    async def authenticate(self, rand: bytes, autn: bytes) -> tuple[bytes, int]:
        data = bytes((16,)) + rand + bytes((16,)) + autn
        return await self.send(bytes((0x00, 0x88, 0x00, 0x81, len(data))) + data + b"\x00")


def authenticate_answer(data: bytes) -> tuple[bytes, bytes, bytes]:
    """'DB' L RES L CK L IK (successful 3G context); ValueError otherwise."""
    if data[:1] != b"\xdb":
        raise ValueError(f"not a successful AUTHENTICATE answer: {data[:1].hex()}")
    out, pos = [], 1
    for _ in range(3):
        length = data[pos]
        out.append(data[pos + 1 : pos + 1 + length])
        pos += 1 + length
    return out[0], out[1], out[2]
