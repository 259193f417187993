"""File selection and access on the UICC (ETSI TS 102 221 §8, §11.1.1-§11.1.6): SELECT by
FID, by path and by AID with the P2 values terminals use, STATUS, READ/UPDATE BINARY and
RECORD (by the current EF or a short file identifier), each checked against EF.ARR.

Selection by FID from the current DF (§8.4.1): the MF, the current ADF (7FFF), the current
DF itself and its children; by path (P1 08 from the MF, 09 from the current DF): DFs then the
file. A selected DF is current until another is; the current EF is the last EF selected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from shared.iso7816 import (
    SW_FILE_NOT_FOUND,
    SW_INCORRECT_P1P2,
    SW_RECORD_NOT_FOUND,
    SW_SECURITY_STATUS_NOT_SATISFIED,
    SW_WRONG_LENGTH,
    SW_WRONG_P1P2,
    CommandAPDU,
    ResponseAPDU,
    tlv,
)
from vcard.store import CardState
from vcard.uicc.arr import AM_READ, AM_UPDATE, RECORD_LENGTH, allowed
from vcard.uicc.fcp import df_fcp, ef_fcp
from vcard.uicc.files import (
    FID_ADF,
    FID_ARR,
    FID_MF,
    MF_FILES,
    USIM_AID,
    USIM_FILES,
    Ef,
)
from vcard.uicc.pins import Pins

SW_INCOMPATIBLE_STRUCTURE: Final = 0x6981
SW_NO_CURRENT_EF: Final = 0x6986
P2_FCP: Final = 0x04
P2_NO_DATA: Final = 0x0C
P2_TERMINATE: Final = 0x40  # AID selection: terminate the application session
_ARR: Final = next(ef for ef in MF_FILES if ef.fid == FID_ARR)


def _sw(sw: int) -> ResponseAPDU:
    return ResponseAPDU(b"", sw)


class UiccFiles:
    """The MF and the USIM ADF of one card; `contents` maps an EF to its NVM tag's bytes."""

    def __init__(self, state: CardState, persist: Callable[[CardState], None], pins: Pins):
        self.state, self._persist, self.pins = state, persist, pins
        self.adf_active = False
        self.df = FID_MF
        self.ef: Ef | None = None
        self.record = 0

    def reset(self) -> None:
        """After a reset the MF is current and no application is active (§8.6)."""
        self.adf_active, self.df, self.ef, self.record = False, FID_MF, None, 0

    # -- selection ------------------------------------------------------------------------
    def _children(self, df: int) -> tuple[Ef, ...]:
        return USIM_FILES if df == FID_ADF else MF_FILES

    def _find(self, df: int, fid: int) -> int | Ef | None:
        """What `fid` names seen from `df`: a DF (its FID) or an EF, or None."""
        if fid == FID_MF:
            return FID_MF
        if fid == FID_ADF:
            return FID_ADF if self.adf_active else None
        if fid == df:
            return df
        return next((ef for ef in self._children(df) if ef.fid == fid), None)

    def _walk(self, start: int, path: bytes) -> int | Ef | None:
        fids = [int.from_bytes(path[i : i + 2], "big") for i in range(0, len(path), 2)]
        df: int | Ef | None = start
        for fid in fids:
            if not isinstance(df, int):
                return None  # an EF has no children
            df = self._find(df, fid)
            if df is None:
                return None
        return df

    def select(self, cmd: CommandAPDU) -> ResponseAPDU:
        mode = cmd.p2 & 0x0C
        if cmd.p2 & 0xF3 or mode == 0x08:
            return _sw(SW_INCORRECT_P1P2)
        data = cmd.data
        if cmd.p1 == 0x03:  # the parent DF
            target: int | Ef | None = FID_MF if not data else None
        elif not data or len(data) % 2:
            return _sw(SW_WRONG_LENGTH)
        elif cmd.p1 == 0x00 and len(data) == 2:
            target = self._find(self.df, int.from_bytes(data, "big"))
        elif cmd.p1 == 0x08:
            path = data[2:] if data[:2] == FID_MF.to_bytes(2, "big") else data
            target = self._walk(FID_MF, path) if path else FID_MF
        elif cmd.p1 == 0x09:
            target = self._walk(self.df, data)
        else:
            return _sw(SW_INCORRECT_P1P2)
        if target is None:
            return _sw(SW_FILE_NOT_FOUND)
        if isinstance(target, int):
            self.df, self.ef, self.record = target, None, 0
            fcp = self.df_fcp()
        else:
            self.ef, self.record = target, 0
            self.df = FID_ADF if target in USIM_FILES else FID_MF
            fcp = ef_fcp(target, self.contents(target))
        return _sw(0x9000) if mode == P2_NO_DATA else ResponseAPDU(fcp, 0x9000)

    def select_adf(self, cmd: CommandAPDU) -> ResponseAPDU:
        """SELECT by DF name: the USIM's AID, whole or right-truncated (ISO 7816-4 §5.3.1)."""
        mode, occurrence = cmd.p2 & 0x0C, cmd.p2 & 0x03
        if cmd.p2 & 0xB0 or mode == 0x08:
            return _sw(SW_INCORRECT_P1P2)
        if not 5 <= len(cmd.data) <= 16 or not USIM_AID.startswith(cmd.data):
            return _sw(SW_FILE_NOT_FOUND)
        if occurrence in (0x02, 0x03):
            return _sw(SW_FILE_NOT_FOUND)  # one USIM only: no next or previous
        if cmd.p2 & P2_TERMINATE:
            self.reset()
            return _sw(0x9000)
        self.adf_active, self.df, self.ef, self.record = True, FID_ADF, None, 0
        return _sw(0x9000) if mode == P2_NO_DATA else ResponseAPDU(self.df_fcp(), 0x9000)

    def df_fcp(self) -> bytes:
        files = self._children(self.df)
        size = sum(len(self.contents(ef)) for ef in files)
        aid = USIM_AID if self.df == FID_ADF else None
        return df_fcp(self.df, aid, self.pins.statuses(), size)

    def status(self, cmd: CommandAPDU) -> ResponseAPDU:
        """STATUS (§11.1.2): P2 00 the current DF's FCP, 01 its DF name, 0C nothing."""
        if cmd.p1 > 0x02:
            return _sw(SW_INCORRECT_P1P2)
        if cmd.p2 == 0x00:
            return ResponseAPDU(self.df_fcp(), 0x9000)
        if cmd.p2 == 0x01 and self.df == FID_ADF:
            return ResponseAPDU(tlv(0x84, USIM_AID), 0x9000)
        if cmd.p2 == P2_NO_DATA:
            return _sw(0x9000)
        return _sw(SW_INCORRECT_P1P2)

    # -- contents and access --------------------------------------------------------------
    def contents(self, ef: Ef) -> bytes:
        return self.state.dgis.get(ef.tag, b"")

    def _allowed(self, ef: Ef, operation: int) -> bool:
        arr = self.contents(_ARR)
        record = arr[(ef.arr - 1) * RECORD_LENGTH : ef.arr * RECORD_LENGTH]
        return allowed(record, operation, self.pins.granted)

    def _target(self, sfi: int | None, structure: str) -> Ef | ResponseAPDU:
        """The EF a READ/UPDATE acts on: by SFI in the current DF (it becomes current)."""
        if sfi:
            ef = next((e for e in self._children(self.df) if e.sfi == sfi), None)
            if ef is None:
                return _sw(SW_FILE_NOT_FOUND)
            if ef is not self.ef:
                self.ef, self.record = ef, 0
        if self.ef is None:
            return _sw(SW_NO_CURRENT_EF)
        if self.ef.structure != structure:
            return _sw(SW_INCOMPATIBLE_STRUCTURE)
        return self.ef

    def binary(self, cmd: CommandAPDU, update: bool) -> ResponseAPDU:
        """READ BINARY / UPDATE BINARY (§11.1.3, §11.1.4): P1 b8 set = SFI in P1, offset P2."""
        sfi, offset = (cmd.p1 & 0x1F, cmd.p2) if cmd.p1 & 0x80 else (None, cmd.p1 << 8 | cmd.p2)
        if cmd.p1 & 0x80 and cmd.p1 & 0x60:
            return _sw(SW_INCORRECT_P1P2)
        ef = self._target(sfi, "transparent")
        if isinstance(ef, ResponseAPDU):
            return ef
        if not self._allowed(ef, AM_UPDATE if update else AM_READ):
            return _sw(SW_SECURITY_STATUS_NOT_SATISFIED)
        content = self.contents(ef)
        if offset >= len(content):
            return _sw(SW_WRONG_P1P2)
        if not update:
            want = cmd.le if cmd.le is not None else 256
            return ResponseAPDU(content[offset : offset + want], 0x9000)
        if not cmd.data or offset + len(cmd.data) > len(content):
            return _sw(SW_WRONG_LENGTH)
        self.state.dgis[ef.tag] = content[:offset] + cmd.data + content[offset + len(cmd.data) :]
        self._persist(self.state)
        return _sw(0x9000)

    def record_op(self, cmd: CommandAPDU, update: bool) -> ResponseAPDU:
        """READ RECORD / UPDATE RECORD (§11.1.5, §11.1.6): P2 b8-b4 SFI, b3-b1 the mode
        (04 absolute or current, 02 next, 03 previous)."""
        sfi, mode = cmd.p2 >> 3, cmd.p2 & 0x07
        if mode not in (0x02, 0x03, 0x04) or (mode != 0x04 and cmd.p1):
            return _sw(SW_INCORRECT_P1P2)
        ef = self._target(sfi, "linear")
        if isinstance(ef, ResponseAPDU):
            return ef
        if not self._allowed(ef, AM_UPDATE if update else AM_READ):
            return _sw(SW_SECURITY_STATUS_NOT_SATISFIED)
        content, size = self.contents(ef), ef.record_length
        count = len(content) // size
        previous = self.record - 1 if self.record else count  # from none: the last one
        number = {0x04: cmd.p1 or self.record, 0x02: self.record + 1, 0x03: previous}[mode]
        if not 1 <= number <= count:
            return _sw(SW_RECORD_NOT_FOUND)
        self.record = number
        start = (number - 1) * size
        if not update:
            return ResponseAPDU(content[start : start + size], 0x9000)
        if len(cmd.data) != size:
            return _sw(SW_WRONG_LENGTH)
        self.state.dgis[ef.tag] = content[:start] + cmd.data + content[start + size :]
        self._persist(self.state)
        return _sw(0x9000)
