"""The card feeder: an encoding machine's input hopper and transport, for virtual cards.

Every station reader in hopper mode always holds a blank card, fresh from the virtual card
factory (the chip maker's pre-personalization: unique CPLC serial, CPG202-AES static keys from
the KMC). Ejecting a card moves the next blank in. Readers in manual mode (QA) stay empty until
a specific, already personalized card is inserted by chip serial; a card is in at most one reader
at a time. Faults are armed per reader and land on the next card that enters it.

    python -m vcard.feeder --readers .run/pcsc/readers.json --state-dir .run/vcard --port 8790
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from vcard.card import Faults, VirtualCard
from vcard.crypto import TEST_KMC
from vcard.store import CardState, CardStore, Protocol, Scp
from vcard.wire import CardLink

log = logging.getLogger("vcard.feeder")  # not __main__ under python -m
Mode = Literal["hopper", "manual"]


class FeederError(Exception):
    status = 400


class NotFound(FeederError):
    status = 404


class Conflict(FeederError):
    status = 409


@dataclass
class ArmedFaults:
    """Applied to the next card entering the reader, then disarmed."""

    remove_after_apdus: int | None = None
    store_data_memory_failure_at_block: int | None = None
    kmc_hex: str | None = None  # a factory KMC other than the bureau's: the card has wrong keys
    protocol: Protocol | None = None
    scp: Scp | None = None  # a factory option: the card's secure channel protocol

    @property
    def armed(self) -> bool:
        return any(v is not None for v in asdict(self).values())


@dataclass
class ReaderSlot:
    name: str
    port: int
    mode: Mode = "hopper"
    link: CardLink | None = None
    faults: ArmedFaults = field(default_factory=ArmedFaults)
    blanks_fed: int = 0
    cards_inserted: int = 0
    cards_ejected: int = 0
    fault_removals: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def snapshot(self) -> dict[str, Any]:
        card = self.link.card if self.link is not None else None
        return {
            "name": self.name,
            "port": self.port,
            "mode": self.mode,
            "card": None if card is None else card.chip_serial,
            "attached": bool(self.link and self.link.attached.is_set()),
            "lifecycle": None if card is None else card.state.lifecycle,
            "apdus": 0 if card is None else card.apdu_count,
            "blanks_fed": self.blanks_fed,
            "cards_inserted": self.cards_inserted,
            "cards_ejected": self.cards_ejected,
            "fault_removals": self.fault_removals,
            "armed_faults": {k: v for k, v in asdict(self.faults).items() if v is not None},
        }


class Feeder:
    def __init__(
        self,
        readers: list[dict[str, Any]],
        store: CardStore,
        *,
        kmc: bytes = TEST_KMC,
        batch_id: bytes = b"\x00\x01",
        hopper_capacity: int | None = None,
        default_protocol: Protocol = "T=1",
    ) -> None:
        self.store = store
        self.kmc = kmc
        self.batch_id = batch_id
        self.hopper_remaining = hopper_capacity
        self.default_protocol: Protocol = default_protocol
        self.slots = [
            ReaderSlot(str(r["name"]), int(r["port"]), r.get("mode", "hopper")) for r in readers
        ]
        self._where: dict[str, ReaderSlot] = {}  # chip serial -> the reader holding it

    def slot(self, key: str | int) -> ReaderSlot:
        """A reader by exact PC/SC name or by vpcd port."""
        for slot in self.slots:
            if slot.name == key or str(slot.port) == str(key):
                return slot
        raise NotFound(f"no reader {key!r}")

    async def start(self) -> None:
        for slot in self.slots:
            if slot.mode == "hopper":
                async with slot.lock:
                    self._feed_blank(slot)

    async def stop(self) -> None:
        for slot in self.slots:
            async with slot.lock:
                await self._remove(slot)

    def _take_faults(self, slot: ReaderSlot) -> ArmedFaults:
        faults, slot.faults = slot.faults, ArmedFaults()
        return faults

    def _attach(self, slot: ReaderSlot, state: CardState, faults: ArmedFaults) -> None:
        if faults.store_data_memory_failure_at_block is not None:
            state.memory_failure_at_block = faults.store_data_memory_failure_at_block
            self.store.save(state)  # a silicon defect stays with the card
        card = VirtualCard(state, self.store.save, Faults(faults.remove_after_apdus))
        link = CardLink(card, slot.port, on_removed=lambda _link: self._fell_out(slot, _link))
        slot.link = link
        self._where[state.chip_serial] = slot
        link.start()

    def _feed_blank(self, slot: ReaderSlot) -> str | None:
        if self.hopper_remaining is not None:
            if self.hopper_remaining <= 0:
                log.warning("hopper empty: %s stays without a card", slot.name)
                return None
            self.hopper_remaining -= 1
        faults = self._take_faults(slot)
        kmc = bytes.fromhex(faults.kmc_hex) if faults.kmc_hex else self.kmc
        state = self.store.manufacture(
            kmc,
            batch_id=self.batch_id,
            protocol=faults.protocol or self.default_protocol,
            scp=faults.scp or "03",
        )
        slot.blanks_fed += 1
        self._attach(slot, state, faults)
        log.info("blank card %s fed into %s", state.chip_serial, slot.name)
        return state.chip_serial

    def _fell_out(self, slot: ReaderSlot, link: CardLink) -> None:
        """A removal fault fired: the card left the reader on its own (it is not refilled)."""
        if slot.link is link:
            slot.link = None
            slot.fault_removals += 1
            self._where.pop(link.card.chip_serial, None)

    async def _remove(self, slot: ReaderSlot) -> str | None:
        link, slot.link = slot.link, None
        if link is None:
            return None
        await link.detach()
        self._where.pop(link.card.chip_serial, None)
        return link.card.chip_serial

    async def eject(self, key: str | int, refill: bool | None = None) -> dict[str, Any]:
        slot = self.slot(key)
        async with slot.lock:
            ejected = await self._remove(slot)
            if ejected is not None:
                slot.cards_ejected += 1
            inserted = None
            if refill if refill is not None else slot.mode == "hopper":
                inserted = self._feed_blank(slot)
        log.info("%s: ejected %s, inserted %s", slot.name, ejected, inserted)
        return {"reader": slot.name, "ejected": ejected, "inserted": inserted}

    async def insert(self, key: str | int, chip_serial: str) -> dict[str, Any]:
        slot = self.slot(key)
        chip_serial = chip_serial.upper()
        async with slot.lock:
            if slot.link is not None:
                raise Conflict(f"{slot.name} already holds card {slot.link.card.chip_serial}")
            holder = self._where.get(chip_serial)
            if holder is not None:
                raise Conflict(f"card {chip_serial} is in reader {holder.name}")
            try:
                state = self.store.load(chip_serial)
            except (KeyError, ValueError):
                raise NotFound(f"no card {chip_serial!r} in {self.store.directory}") from None
            faults = self._take_faults(slot)
            if faults.kmc_hex or faults.protocol or faults.scp:
                log.warning("%s: factory faults do not apply to an existing card", slot.name)
            slot.cards_inserted += 1
            self._attach(slot, state, faults)
        return {"reader": slot.name, "inserted": chip_serial}

    def arm(self, key: str | int, faults: ArmedFaults) -> dict[str, Any]:
        slot = self.slot(key)
        if faults.kmc_hex is not None and len(bytes.fromhex(faults.kmc_hex)) != 16:
            raise FeederError("kmc_hex must be 16 bytes of hex")
        slot.faults = faults
        return slot.snapshot()

    def card_info(self, chip_serial: str) -> dict[str, Any]:
        try:
            state = self.store.load(chip_serial.upper())
        except (KeyError, ValueError):
            raise NotFound(f"no card {chip_serial!r}") from None
        holder = self._where.get(state.chip_serial)
        return {
            "chip_serial": state.chip_serial,
            "lifecycle": state.lifecycle,
            "atc": state.atc,
            "protocol": state.protocol,
            "dgis": sorted(f"{tag:04X}" for tag in state.dgis),
            "reader": None if holder is None else holder.name,
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "hopper_remaining": self.hopper_remaining,
            "blanks_fed": sum(s.blanks_fed for s in self.slots),
            "readers": [s.snapshot() for s in self.slots],
        }

    async def wait_attached(self, key: str | int, timeout: float = 5.0) -> str:
        """Test helper: wait until the reader's card holds a vpcd connection."""
        slot = self.slot(key)
        if slot.link is None:
            raise Conflict(f"{slot.name} holds no card")
        await asyncio.wait_for(slot.link.attached.wait(), timeout)
        return slot.link.card.chip_serial


def parse_readers(value: str, manual: list[str]) -> list[dict[str, Any]]:
    """--readers: a readers.json path or inline JSON; --manual names/ports of QA readers."""
    text = value if value.lstrip().startswith("[") else Path(value).read_text()
    readers: list[dict[str, Any]] = json.loads(text)
    for reader in readers:
        if reader["name"] in manual or str(reader["port"]) in manual:
            reader["mode"] = "manual"
    return readers


async def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from vcard.api import create_app

    feeder = Feeder(
        parse_readers(args.readers, args.manual),
        CardStore(args.state_dir),
        kmc=bytes.fromhex(args.kmc_hex),
        batch_id=bytes.fromhex(args.batch_id),
        hopper_capacity=args.hopper,
        default_protocol=args.protocol,
    )
    await feeder.start()
    config = uvicorn.Config(
        create_app(feeder), host="127.0.0.1", port=args.port, log_level="warning"
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        await feeder.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vcard.feeder", description=__doc__)
    parser.add_argument("--readers", required=True, help="readers.json path or inline JSON")
    parser.add_argument("--state-dir", required=True, help="card state directory")
    parser.add_argument("--port", type=int, default=8790, help="HTTP control port (127.0.0.1)")
    parser.add_argument(
        "--kmc-hex", default=os.environ.get("BUREAU_VCARD_KMC_HEX", TEST_KMC.hex().upper())
    )
    parser.add_argument("--batch-id", default="0001", help="CPLC IC batch id, 4 hex digits")
    parser.add_argument("--hopper", type=int, default=None, help="blank cards (default: endless)")
    parser.add_argument("--manual", action="append", default=[], help="a QA reader (name/port)")
    parser.add_argument("--protocol", choices=["T=0", "T=1"], default="T=1")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("BUREAU_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    asyncio.run(serve(args))


if __name__ == "__main__":
    # Under `python -m` this file runs as __main__, a second copy of the module whose
    # exception classes the API's handlers do not know; run the importable module instead.
    from vcard.feeder import main as importable_main

    importable_main()
