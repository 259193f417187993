"""Persistent card state (the chip's non-volatile memory), one JSON file per chip serial.

A physical card keeps its data when it leaves a reader; so does a virtual one: its state lives in
`<state_dir>/<chip serial>.json`, and any reader (an encoding station, a QA reader, another
process) can load it again. Files are replaced atomically (write + rename) so a crash never
leaves half a card. These files hold card secrets in clear: they model silicon, test-only.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from vcard.crypto import cpg202_aes_diversify, cpg202_aes_keys

Protocol = Literal["T=0", "T=1"]
Scp = Literal["02", "03"]
# SCP02 key set (docs/perso-protocol.md): CPG202-AES with these key numbers, used as DES2 keys.
SCP02_KEY_IDS = (0x11, 0x12, 0x13)
Lifecycle = Literal["blank", "personalized"]

# CPLC constants of the virtual chip family (GlobalPlatform Card Spec, CPLC data, tag 9F7F).
IC_FABRICATOR = bytes.fromhex("4342")  # "CB"
IC_TYPE = bytes.fromhex("5643")  # "VC"
OS_ID = bytes.fromhex("0001")
OS_RELEASE_DATE = bytes.fromhex("5330")  # YDDD: 2025 day 330
OS_RELEASE_LEVEL = bytes.fromhex("0100")


def build_cplc(ic_serial: bytes, batch_id: bytes) -> bytes:
    """42-byte CPLC: serial at [12:16], batch at [16:18] (docs/perso-protocol.md, Card identity)."""
    if len(ic_serial) != 4 or len(batch_id) != 2:
        raise ValueError("IC serial is 4 bytes and batch id 2 bytes")
    head = IC_FABRICATOR + IC_TYPE + OS_ID + OS_RELEASE_DATE + OS_RELEASE_LEVEL
    fabrication_date = OS_RELEASE_DATE
    cplc = head + fabrication_date + ic_serial + batch_id + bytes(24)
    assert len(cplc) == 42
    return cplc


def chip_serial_of(cplc: bytes) -> str:
    return cplc[12:18].hex().upper()


def diversification_data(cplc: bytes) -> bytes:
    """CPLC[0:2] || CPLC[2:4] || CPLC[12:18], as an INITIALIZE UPDATE response would carry."""
    return cplc[0:4] + cplc[12:18]


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex().upper()


def _unhex(value: Any) -> bytes | None:
    return None if value is None else bytes.fromhex(str(value))


@dataclass
class CardState:
    cplc: bytes
    k_enc: bytes
    k_mac: bytes
    k_dek: bytes
    protocol: Protocol = "T=1"
    lifecycle: Lifecycle = "blank"
    dgis: dict[int, bytes] = field(default_factory=dict)
    mk_ac: bytes | None = None
    mk_smi: bytes | None = None
    mk_smc: bytes | None = None
    atc: int = 0
    # The EMV payment application's own NVM (vcard/emv.py): the plaintext offline PIN block,
    # the PIN try counter and limit, the ICC private key (PKCS#8 DER), card risk counters.
    pin_block: bytes | None = None
    pin_tries: int = 0
    pin_try_limit: int = 0
    icc_key: bytes | None = None
    last_online_atc: int = 0
    offline_count: int = 0
    # A defect of the silicon: STORE DATA from this block number on answers 6581.
    memory_failure_at_block: int | None = None
    # The card manager's secure channel protocol; an SCP02 card also holds a DES key set and
    # the session sequence counter.
    scp: Scp = "03"
    scp02_enc: bytes | None = None
    scp02_mac: bytes | None = None
    scp02_dek: bytes | None = None
    scp02_sequence: int = 0
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def chip_serial(self) -> str:
        return chip_serial_of(self.cplc)

    @property
    def scp02_keys(self) -> tuple[bytes, bytes, bytes] | None:
        if self.scp02_enc is None or self.scp02_mac is None or self.scp02_dek is None:
            return None
        return self.scp02_enc, self.scp02_mac, self.scp02_dek

    def to_json(self) -> dict[str, Any]:
        return {
            "chip_serial": self.chip_serial,
            "cplc": _hex(self.cplc),
            "k_enc": _hex(self.k_enc),
            "k_mac": _hex(self.k_mac),
            "k_dek": _hex(self.k_dek),
            "protocol": self.protocol,
            "lifecycle": self.lifecycle,
            "dgis": {f"{tag:04X}": _hex(value) for tag, value in sorted(self.dgis.items())},
            "mk_ac": _hex(self.mk_ac),
            "mk_smi": _hex(self.mk_smi),
            "mk_smc": _hex(self.mk_smc),
            "atc": self.atc,
            "pin_block": _hex(self.pin_block),
            "pin_tries": self.pin_tries,
            "pin_try_limit": self.pin_try_limit,
            "icc_key": _hex(self.icc_key),
            "last_online_atc": self.last_online_atc,
            "offline_count": self.offline_count,
            "memory_failure_at_block": self.memory_failure_at_block,
            "scp": self.scp,
            "scp02_enc": _hex(self.scp02_enc),
            "scp02_mac": _hex(self.scp02_mac),
            "scp02_dek": _hex(self.scp02_dek),
            "scp02_sequence": self.scp02_sequence,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CardState:
        def need(name: str) -> bytes:
            value = _unhex(doc[name])
            if value is None:
                raise ValueError(f"card state lacks {name}")
            return value

        return cls(
            cplc=need("cplc"),
            k_enc=need("k_enc"),
            k_mac=need("k_mac"),
            k_dek=need("k_dek"),
            protocol=doc.get("protocol", "T=1"),
            lifecycle=doc.get("lifecycle", "blank"),
            dgis={int(tag, 16): bytes.fromhex(v) for tag, v in doc.get("dgis", {}).items()},
            mk_ac=_unhex(doc.get("mk_ac")),
            mk_smi=_unhex(doc.get("mk_smi")),
            mk_smc=_unhex(doc.get("mk_smc")),
            atc=int(doc.get("atc", 0)),
            pin_block=_unhex(doc.get("pin_block")),
            pin_tries=int(doc.get("pin_tries", 0)),
            pin_try_limit=int(doc.get("pin_try_limit", 0)),
            icc_key=_unhex(doc.get("icc_key")),
            last_online_atc=int(doc.get("last_online_atc", 0)),
            offline_count=int(doc.get("offline_count", 0)),
            memory_failure_at_block=doc.get("memory_failure_at_block"),
            scp=doc.get("scp", "03"),
            scp02_enc=_unhex(doc.get("scp02_enc")),
            scp02_mac=_unhex(doc.get("scp02_mac")),
            scp02_dek=_unhex(doc.get("scp02_dek")),
            scp02_sequence=int(doc.get("scp02_sequence", 0)),
            created_at=str(doc.get("created_at", "")),
        )


class CardStore:
    """The state directory: the card factory's output and every card's NVM."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, chip_serial: str) -> Path:
        if len(chip_serial) != 12 or any(c not in "0123456789ABCDEF" for c in chip_serial):
            raise ValueError(f"not a chip serial (12 upper-case hex digits): {chip_serial!r}")
        return self.directory / f"{chip_serial}.json"

    def exists(self, chip_serial: str) -> bool:
        return self.path(chip_serial).exists()

    def load(self, chip_serial: str) -> CardState:
        try:
            doc = json.loads(self.path(chip_serial).read_text())
        except FileNotFoundError:
            raise KeyError(chip_serial) from None
        return CardState.from_json(doc)

    def save(self, state: CardState) -> None:
        """The card's NVM after a command that wrote it (every STORE DATA, every GENERATE AC).
        Compact JSON: `indent` would route json through its pure-Python encoder, which with
        the path handling made saving a fifth of the feeder's CPU at 1,000 cards."""
        target = str(self.path(state.chip_serial))
        tmp = f"{target}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(json.dumps(state.to_json(), separators=(",", ":")))
        os.replace(tmp, target)

    def serials(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.json"))

    def manufacture(
        self,
        kmc: bytes,
        *,
        batch_id: bytes = b"\x00\x01",
        protocol: Protocol = "T=1",
        memory_failure_at_block: int | None = None,
        scp: Scp = "03",
    ) -> CardState:
        """Make a blank card with a serial unique in this directory, keys from `kmc`.

        The serial is reserved by creating its file with O_EXCL, so several feeders sharing one
        state directory never hand out the same chip serial.
        """
        for _ in range(1000):
            cplc = build_cplc(secrets.token_bytes(4), batch_id)
            try:
                fd = os.open(self.path(chip_serial_of(cplc)), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                continue
            os.close(fd)
            div = diversification_data(cplc)
            enc, mac, dek = cpg202_aes_keys(kmc, div)
            state = CardState(
                cplc=cplc,
                k_enc=enc,
                k_mac=mac,
                k_dek=dek,
                protocol=protocol,
                memory_failure_at_block=memory_failure_at_block,
                scp=scp,
            )
            if scp == "02":
                state.scp02_enc, state.scp02_mac, state.scp02_dek = (
                    cpg202_aes_diversify(kmc, div, i) for i in SCP02_KEY_IDS
                )
            self.save(state)
            return state
        raise RuntimeError("no free chip serial after 1000 draws")
