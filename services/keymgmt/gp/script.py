"""Building a GlobalPlatform personalisation script: INSTALL [for personalization] of an
application, then one STORE DATA per EMV CPS data grouping (DGI). The commands are clear
`ScriptCommand`s for the secure channel (secure_channel.secure_script) to protect; EMV
(emv/perso.py) and SIM (sim/perso.py) scripts are both made of them.
"""

from __future__ import annotations

from services.keymgmt.gp.channel import ScriptCommand

P1_DGI, P1_LAST = 0x08, 0x88  # EMV CPS / GP 2.3.1 table 11-89: DGI format, b8 = last block


def dgi(tag: int, value: bytes) -> bytes:
    """EMV CPS DGI: 2-byte tag, length in 1 byte, or FF + 2 bytes when 255 or more."""
    n = len(value)
    length = bytes([n]) if n < 0xFF else b"\xff" + n.to_bytes(2, "big")
    return tag.to_bytes(2, "big") + length + value


# Clear data of one STORE DATA that still fits a short APDU after C-DECRYPTION padding (to 16)
# and the 8-byte C-MAC: 239 + pad to 240 + 8 = 248 <= 255.
MAX_BLOCK = 239


def split_dgi(data: bytes) -> list[bytes]:
    """A DGI too large for one command, split as EMV CPS v1.1 §3.2.7.4 prescribes: the first
    command carries the DGI header and the start of the value, the next ones the rest."""
    return [data[i : i + MAX_BLOCK] for i in range(0, len(data), MAX_BLOCK)]


def store_data_apdus(dgis: list[bytes]) -> list[bytes]:
    """STORE DATA 80 E2 P1 P2 Lc data: one DGI per command (a large one over consecutive
    commands), P2 = block number."""
    blocks = [part for data in dgis for part in split_dgi(data)]
    if len(blocks) > 256:
        raise ValueError("a script has at most 256 STORE DATA blocks")
    apdus = []
    for block, data in enumerate(blocks):
        p1 = P1_LAST if block == len(blocks) - 1 else P1_DGI
        apdus.append(bytes([0x80, 0xE2, p1, block, len(data)]) + data)
    return apdus


def install_for_personalization_apdu(aid: bytes) -> bytes:
    """INSTALL [for personalization] (GP 2.3 §11.5.2.3.4): `80 E6 20 00 Lc 00 00 len AID 00 00
    00` names the application the following STORE DATA commands are for."""
    data = b"\x00\x00" + bytes([len(aid)]) + aid + bytes(3)
    return bytes([0x80, 0xE6, 0x20, 0x00, len(data)]) + data


def script_commands(
    aid: bytes, dgis: list[bytes], sensitive: frozenset[int]
) -> tuple[ScriptCommand, ...]:
    """INSTALL [for personalization], then STORE DATA per DGI (sensitive by DGI tag, every
    command of a split DGI too)."""
    stores = store_data_apdus(dgis)
    marked = [
        int.from_bytes(d[:2], "big") in sensitive for d in dgis for _ in range(len(split_dgi(d)))
    ]
    return (
        ScriptCommand(install_for_personalization_apdu(aid)),
        *(ScriptCommand(a, s) for a, s in zip(stores, marked, strict=True)),
    )
