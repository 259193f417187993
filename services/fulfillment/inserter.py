"""The carrier line of the fulfillment floor: the carrier printer puts each card's letter in
the inserter's stack (`<dir>/<batch>/<carrier>.pdf`), the inserter feeds the letter that goes
with the card, and its scanner reads the letter's barcode (carrier.scan_carrier).

In this bureau the line is simulated, like the card feeder of vcard/: letters are files. A
fault can be armed as with the printers (deploy/local/printers.sh): a `misfeed` file in the
inserter's folder is fed once instead of the next letter, as when letters get out of order.
"""

from __future__ import annotations

import os
from pathlib import Path
from uuid import UUID


class Inserter:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _letter(self, batch_id: UUID, carrier_id: str) -> Path:
        return self.directory / str(batch_id) / f"{carrier_id}.pdf"

    def print_letter(self, batch_id: UUID, carrier_id: str, pdf: bytes) -> Path:
        """The carrier printer's output, written atomically (a retry rewrites it equal)."""
        target = self._letter(batch_id, carrier_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".pdf.partial")
        with partial.open("wb") as out:
            out.write(pdf)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
        return target

    def feed(self, batch_id: UUID, carrier_id: str) -> bytes:
        """The letter the inserter puts with the card: the card's own, unless misfed."""
        misfeed, used = self.directory / "misfeed", self.directory / "misfeed.used"
        try:
            os.replace(misfeed, used)  # one-shot: only one caller wins the rename
        except FileNotFoundError:
            return self._letter(batch_id, carrier_id).read_bytes()
        try:
            return used.read_bytes()
        finally:
            used.unlink(missing_ok=True)

    def misfeed(self, pdf: bytes) -> None:
        """Arm the fault: the next card gets this letter."""
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / "misfeed.partial"
        partial.write_bytes(pdf)
        os.replace(partial, self.directory / "misfeed")

    def discard(self, batch_id: UUID, carrier_id: str) -> None:
        """The letter left with its card, or was shredded with it: no copy stays here."""
        self._letter(batch_id, carrier_id).unlink(missing_ok=True)
