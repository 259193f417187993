"""PINs of the UICC (ETSI TS 102 221 §9.5, §11.1.9-§11.1.13): VERIFY, CHANGE, DISABLE,
ENABLE and UNBLOCK PIN, with their retry counters in the card's NVM.

Values: DGI 8102 as personalisation stored it, AES-128-CBC under K_DEK, zero IV (docs/sim.md):
PIN1, PUK1, PIN2, PUK2, ADM1 (8 bytes each: ASCII digits, FF-padded) and a flag block whose
first byte says whether PIN1 is enabled (PIN2 always is). The card opens it for each check,
as it does Ki. Counters (DF02): tries left for PIN1, PUK1, PIN2, PUK2, ADM1, then PIN1's and
PIN2's enabled flags; a card without DGI 8102 has no PIN (every PIN condition stays unmet but
PIN1's, which is disabled).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Final

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from shared.iso7816 import (
    SW_CONDITIONS_NOT_SATISFIED,
    SW_INCORRECT_P1P2,
    SW_REFERENCED_DATA_NOT_FOUND,
    SW_WRONG_LENGTH,
    CommandAPDU,
    ResponseAPDU,
)
from vcard.store import CardState
from vcard.uicc.arr import KEY_ADM1, KEY_PIN1, KEY_PIN2

DGI_PINS: Final = 0x8102
NVM_PIN_STATE: Final = 0xDF02
PIN_TRIES: Final = 3
PUK_TRIES: Final = 10
ADM_TRIES: Final = 3
SW_BLOCKED: Final = 0x6983  # authentication method blocked
SW_INVALIDATED: Final = 0x6984  # referenced data invalidated (a disabled PIN)
# key reference -> (index of its value in DGI 8102, index of its counter, PUK's, flag's)
_PIN: Final = {KEY_PIN1: (0, 0, 1, 5), KEY_PIN2: (2, 2, 3, 6), KEY_ADM1: (4, 4, None, None)}
_PUK_VALUE: Final = {KEY_PIN1: 1, KEY_PIN2: 3}


def cbc(key: bytes, data: bytes, *, decrypt: bool) -> bytes:
    """AES-128-CBC with a zero IV, how DGI 8102 travels and stays."""
    cipher = Cipher(algorithms.AES(key), modes.CBC(bytes(16)))
    op = cipher.decryptor() if decrypt else cipher.encryptor()
    return op.update(data) + op.finalize()


def _sw(sw: int) -> ResponseAPDU:
    return ResponseAPDU(b"", sw)


def _tries(left: int) -> ResponseAPDU:
    return _sw(0x63C0 | left)


def initial_pin_state(pin1_enabled: bool) -> bytes:
    flags = (1 if pin1_enabled else 0, 1)
    return bytes((PIN_TRIES, PUK_TRIES, PIN_TRIES, PUK_TRIES, ADM_TRIES, *flags))


def pin_block(value: str) -> bytes:
    """A PIN as the UICC takes it: ASCII digits, FF-padded to 8 bytes (§9.5.2)."""
    return value.encode("ascii").ljust(8, b"\xff")


class Pins:
    """The PIN objects of one card and the security status of this session."""

    def __init__(self, state: CardState, persist: Callable[[CardState], None]) -> None:
        self.state, self._persist = state, persist
        self.verified: set[int] = set()

    @property
    def present(self) -> bool:
        return DGI_PINS in self.state.dgis and NVM_PIN_STATE in self.state.dgis

    def reset(self) -> None:
        self.verified.clear()

    def enabled(self, ref: int) -> bool:
        if not self.present:
            return False
        flag = _PIN[ref][3]
        return flag is None or bool(self.state.dgis[NVM_PIN_STATE][flag])

    def granted(self, ref: int) -> bool:
        """Whether key reference `ref` counts as verified (a disabled PIN1 does)."""
        if ref == KEY_PIN1 and not self.enabled(KEY_PIN1):
            return True
        return ref in self.verified

    def statuses(self) -> list[tuple[int, bool]]:
        """(key reference, enabled) for the ADF's PIN status template."""
        return [(r, self.enabled(r)) for r in (KEY_PIN1, KEY_PIN2, KEY_ADM1)]

    def _values(self) -> bytes:
        return cbc(self.state.k_dek, self.state.dgis[DGI_PINS], decrypt=True)

    def _value(self, index: int) -> bytes:
        return self._values()[8 * index : 8 * index + 8]

    def _counter(self, index: int) -> int:
        return self.state.dgis[NVM_PIN_STATE][index]

    def _set(self, index: int, value: int) -> None:
        nvm = bytearray(self.state.dgis[NVM_PIN_STATE])
        nvm[index] = value
        self.state.dgis[NVM_PIN_STATE] = bytes(nvm)
        self._persist(self.state)

    def _check(self, ref: int, given: bytes) -> ResponseAPDU | None:
        """Present `given` for `ref`: None when right (counter reset), else the status."""
        value_at, counter, _puk, _flag = _PIN[ref]
        left = self._counter(counter)
        if left == 0:
            return _sw(SW_BLOCKED)
        self._set(counter, left - 1)  # decrement first: a card pulled now has counted it
        if not hmac.compare_digest(given, self._value(value_at)):
            self.verified.discard(ref)
            return _tries(left - 1) if left > 1 else _sw(SW_BLOCKED)
        self._set(counter, PIN_TRIES if ref != KEY_ADM1 else ADM_TRIES)
        self.verified.add(ref)
        return None

    def _reference(self, cmd: CommandAPDU) -> int | ResponseAPDU:
        if cmd.p1 != 0x00:
            return _sw(SW_INCORRECT_P1P2)
        if cmd.p2 not in _PIN or not self.present:
            return _sw(SW_REFERENCED_DATA_NOT_FOUND)
        return cmd.p2

    def verify(self, cmd: CommandAPDU) -> ResponseAPDU:
        """VERIFY PIN; without data, the PIN's status (9000 verified or disabled, 63CX)."""
        ref = self._reference(cmd)
        if isinstance(ref, ResponseAPDU):
            return ref
        if not cmd.data:
            if ref in self.verified or (ref != KEY_ADM1 and not self.enabled(ref)):
                return _sw(0x9000)
            left = self._counter(_PIN[ref][1])
            return _tries(left) if left else _sw(SW_BLOCKED)
        if len(cmd.data) != 8:
            return _sw(SW_WRONG_LENGTH)
        if not self.enabled(ref):
            return _sw(SW_INVALIDATED)
        return self._check(ref, cmd.data) or _sw(0x9000)

    def change(self, cmd: CommandAPDU) -> ResponseAPDU:
        """CHANGE PIN: old || new, 8 bytes each; a disabled PIN cannot change."""
        ref = self._reference(cmd)
        if isinstance(ref, ResponseAPDU):
            return ref
        if len(cmd.data) != 16:
            return _sw(SW_WRONG_LENGTH)
        if not self.enabled(ref):
            return _sw(SW_INVALIDATED)
        refused = self._check(ref, cmd.data[:8])
        if refused is not None:
            return refused
        self._store(_PIN[ref][0], cmd.data[8:])
        return _sw(0x9000)

    def set_enabled(self, cmd: CommandAPDU, enable: bool) -> ResponseAPDU:
        """DISABLE PIN / ENABLE PIN with the PIN itself; only PIN1 can be disabled."""
        ref = self._reference(cmd)
        if isinstance(ref, ResponseAPDU):
            return ref
        if len(cmd.data) != 8:
            return _sw(SW_WRONG_LENGTH)
        if ref != KEY_PIN1:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)  # PIN2 and ADM1 are always enabled
        if self.enabled(ref) == enable:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)
        refused = self._check(ref, cmd.data)
        if refused is not None:
            return refused
        self._set(5, 1 if enable else 0)  # PIN1's enabled flag
        return _sw(0x9000)

    def unblock(self, cmd: CommandAPDU) -> ResponseAPDU:
        """UNBLOCK PIN: PUK || new PIN; without data, the PUK's tries left (63CX)."""
        ref = self._reference(cmd)
        if isinstance(ref, ResponseAPDU):
            return ref
        if ref not in _PUK_VALUE:
            return _sw(SW_REFERENCED_DATA_NOT_FOUND)  # ADM1 has no unblock key
        counter = _PIN[ref][2] or 0
        left = self._counter(counter)
        if not cmd.data:
            return _tries(left) if left else _sw(SW_BLOCKED)
        if len(cmd.data) != 16:
            return _sw(SW_WRONG_LENGTH)
        if left == 0:
            return _sw(SW_BLOCKED)
        self._set(counter, left - 1)
        if not hmac.compare_digest(cmd.data[:8], self._value(_PUK_VALUE[ref])):
            return _tries(left - 1) if left > 1 else _sw(SW_BLOCKED)
        self._set(counter, PUK_TRIES)
        self._store(_PIN[ref][0], cmd.data[8:])
        self._set(_PIN[ref][1], PIN_TRIES)
        self.verified.add(ref)  # the new PIN is verified (TS 102 221 §11.1.13)
        return _sw(0x9000)

    def _store(self, index: int, value: bytes) -> None:
        values = bytearray(self._values())
        values[8 * index : 8 * index + 8] = value
        self.state.dgis[DGI_PINS] = cbc(self.state.k_dek, bytes(values), decrypt=False)
        self._persist(self.state)
