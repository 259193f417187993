"""The station's readers at work: each reader personalises the chips put into it, one card at a
time, all readers concurrently (docs/perso-protocol.md; ARCHITECTURE.md, delivery guarantees).

Per chip: wait for it, read its CPLC, claim the next queued card of a batch keymgmt assigned
to this station (binding chip and reader), open the card manager's SCP03 channel (SELECT ISD,
INITIALIZE UPDATE with a fresh host challenge), hand the card's answer to keymgmt, which checks
the card cryptogram and returns EXTERNAL AUTHENTICATE and the protected script, send every APDU
(each must answer 9000), then mark the card encoded and emit card.encoded in one transaction,
and eject the card. A chip that fails is spoiled (card.spoiled with headers and status words
only) and ejected; so is a chip whose card cryptogram keymgmt refuses (other keys). A card
keymgmt refuses as not for this station goes back to the queue, unspoiled, and its chip takes
the next card. The next chip goes on.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from services.electrical import outcomes
from services.electrical.ports import ReaderActivity, ScriptSource, Transport, refusal_reason
from services.electrical.repository import StationRepository
from services.electrical.service import (
    GET_CPLC,
    SELECT_ISD,
    ApduTrace,
    CardError,
    ChipIdentity,
    QueuedCard,
    check_initialize_update,
    describe_command,
    describe_failure,
    initialize_update,
    parse_cplc_response,
)
from shared import outage
from shared.iso7816 import SW_OK
from shared.keymgmt.contract import Refusal, SecureScript, SecureScriptRequest
from shared.keymgmt.errors import KeymgmtBadResponse, KeymgmtRefused
from shared.pcsc import (
    CardConnection,
    CardRemoved,
    Disposition,
    PcscClient,
    PcscError,
    PcscUnavailable,
)
from shared.service import ServiceRuntime, Worker
from shared.telemetry import card_stage, trace_context_of

log = logging.getLogger(__name__)

REMOVAL_TIMEOUT_S = 1.0  # vpcd polls presence every 400 ms
IDENTIFY_ATTEMPTS = 3  # a chip that never answers GET DATA after resets is ejected


class StationAgent:
    def __init__(
        self,
        *,
        station_id: str,
        readers: list[str],
        pcsc: PcscClient,
        keymgmt: ScriptSource,
        transport: Transport,
        queue_poll_s: float = 0.5,
    ) -> None:
        self.station_id = station_id
        self.readers = list(readers)
        self.pcsc = pcsc
        self.keymgmt = keymgmt
        self.transport = transport
        self.queue_poll_s = queue_poll_s
        self.activity = {reader: ReaderActivity(reader) for reader in readers}
        self._queue_changed = asyncio.Event()
        self._recovered = False
        self._recovery_lock = asyncio.Lock()

    def notify_queued(self) -> None:
        self._queue_changed.set()  # wakes every waiting reader at once
        self._queue_changed.clear()

    def workers(self) -> list[Worker]:
        def reader_worker(reader: str) -> Worker:
            async def worker(runtime: ServiceRuntime) -> None:
                await self.run_reader(runtime, reader)

            worker.__name__ = f"reader[{reader}]"
            return worker

        return [reader_worker(reader) for reader in self.readers]

    # -- startup ----------------------------------------------------------------------------
    async def recover(self, runtime: ServiceRuntime) -> None:
        """Once, before any reader claims: settle what a previous run left unfinished."""
        async with self._recovery_lock:
            if not self._recovered:
                requeued, spoiled = await outcomes.recover_station(runtime, self.station_id)
                if requeued or spoiled:
                    log.warning("recovered", extra={"requeued": requeued, "spoiled": spoiled})
                self._recovered = True

    # -- a reader's loop ----------------------------------------------------------------------
    async def run_reader(self, runtime: ServiceRuntime, reader: str) -> None:
        await self.recover(runtime)
        act = self.activity[reader]
        pause = 0.05
        while True:
            # pcscd, and this reader in it: each logged when it goes away and when it is back.
            pcscd, this_reader = outage.named("pcscd"), outage.named(f"reader {reader}")
            try:
                await self._serve_chip(runtime, reader, act)
                pause = 0.05
                outage.report_recovery(outage.DATABASE, pcscd, this_reader)
            except asyncio.CancelledError:
                raise
            except (CardRemoved, PcscError) as exc:
                # No card was claimed: a chip that left early (once per chip), or pcscd
                # restarting or the reader gone (once per outage, however many retries).
                act.last_problem = f"{exc.__class__.__name__}: {exc}"
                if isinstance(exc, CardRemoved):
                    log.info("chip left before a claim", extra={"reader": reader})
                else:
                    (pcscd if isinstance(exc, PcscUnavailable) else this_reader).down(exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
            except Exception as exc:
                # The database away, or a fault: the reader goes on after a pause. A claimed card
                # was released (never written) or its outcome recorded before this point.
                act.last_problem = exc.__class__.__name__
                if not outage.report_failure(exc):  # an outage: one line down, one back
                    log.exception("reader loop failed; going on", extra={"reader": reader})
                await asyncio.sleep(1.0)

    async def _serve_chip(self, runtime: ServiceRuntime, reader: str, act: ReaderActivity) -> None:
        act.activity = "waiting for a card"
        await self.pcsc.wait_for_card(reader)
        act.activity = "waiting for a queued card"
        await self._wait_for_work(runtime)
        act.activity = "reading the chip"
        conn = await self.pcsc.connect(reader)
        chip: ChipIdentity | None = None
        eject = False  # a stopped or failing agent leaves the card where it is
        disposition: Disposition = "leave"
        try:
            trace = ApduTrace()
            try:
                chip = await self._identify(conn, trace)
            except CardRemoved:
                eject = True  # it fell out: the transport brings the next blank
                return
            except CardError as exc:
                eject = True
                act.chips_rejected += 1
                log.warning("chip rejected unclaimed", extra={"reader": reader, "why": str(exc)})
                return
            except PcscError as exc:
                # Mostly pcscd still tracking the card that left before this one came in (it
                # saw no removal between them): a warm reset brings the reader back in step.
                disposition = "reset"
                act.identify_failures += 1
                if act.identify_failures >= IDENTIFY_ATTEMPTS:
                    eject, act.identify_failures = True, 0
                    act.chips_rejected += 1
                log.info("chip did not answer; reset", extra={"reader": reader, "why": str(exc)})
                return
            act.identify_failures = 0
            if chip.chip_serial == act.last_ejected:
                await asyncio.sleep(0.05)  # pcscd has not seen the ejected card go yet
                return
            async with runtime.unit_of_work() as uow:
                repo: StationRepository = uow.repo
                bound, card = await repo.claim_for_chip(chip.chip_serial, self.station_id, reader)
            if bound:
                eject = True
                act.chips_rejected += 1
                log.warning(
                    "used chip in the reader: ejected, not claimed",
                    extra={"reader": reader, "chip_serial": chip.chip_serial, "state": bound},
                )
                return
            if card is None:
                return  # another reader took the last card; this chip waits
            act.activity = f"personalising card {card.card_id}"
            started = time.monotonic()
            with card_stage("encode", trace_context_of(card.traceparent), str(card.card_id)):
                eject = await self._personalise(runtime, reader, conn, chip, card, trace)
            if eject:
                act.busy_s += time.monotonic() - started
        finally:
            await conn.disconnect(disposition)
            if eject:
                act.activity = "ejecting"
                act.last_ejected = chip.chip_serial if chip else None
                await self.transport.eject(reader)
                # pcscd reports the ejected card until vpcd's next presence poll (400 ms); a
                # card that comes in before pcscd saw the reader empty does not answer at first.
                await self._card_gone(reader)

    async def _card_gone(self, reader: str) -> bool:
        try:
            await self.pcsc.wait_for_removal(reader, timeout=REMOVAL_TIMEOUT_S)
        except PcscError:
            return False
        return True

    async def _wait_for_work(self, runtime: ServiceRuntime) -> None:
        while True:
            async with runtime.unit_of_work() as uow:
                if await uow.repo.has_queued(self.station_id):
                    return
            try:
                await asyncio.wait_for(self._queue_changed.wait(), self.queue_poll_s)
            except TimeoutError:
                pass

    async def _identify(self, conn: CardConnection, trace: ApduTrace) -> ChipIdentity:
        try:
            data, sw = await conn.transmit(GET_CPLC)
        except CardRemoved:
            trace.record(GET_CPLC, None)
            raise
        trace.record(GET_CPLC, sw)
        return parse_cplc_response(data, sw)

    async def _personalise(
        self,
        runtime: ServiceRuntime,
        reader: str,
        conn: CardConnection,
        chip: ChipIdentity,
        card: QueuedCard,
        trace: ApduTrace,
    ) -> bool:
        """Personalise one claimed card; True when the chip was used (encoded or spoiled)."""
        act = self.activity[reader]
        serial = chip.chip_serial
        host_challenge = secrets.token_bytes(8)
        try:
            # SELECT ISD and INITIALIZE UPDATE write nothing: a failure here leaves the card
            # unwritten (back to the queue) and the chip is rejected.
            await self._transmit(conn, SELECT_ISD, trace)
            command = initialize_update(host_challenge)
            answer, sw = await self._exchange(conn, command, trace)
            iu_answer = check_initialize_update(answer, sw, chip)
        except CardError as exc:
            await outcomes.release(runtime, card)
            act.chips_rejected += 1
            act.last_problem = str(exc)
            log.warning("chip refused the secure channel", extra={**_ids(card), "why": str(exc)})
            return True
        except BaseException:
            await outcomes.release(runtime, card)
            raise
        request = SecureScriptRequest(
            card_id=card.card_id,
            chip_serial=serial,
            host_challenge=host_challenge.hex(),
            initialize_update_response=iu_answer.hex(),
        )
        try:
            script = await self.keymgmt.secure_script(request)
        except KeymgmtRefused as exc:
            if exc.refusal is Refusal.CARD_CANCELLED:
                # Cancelled while it waited at the reader: no event (intake's card.cancelled
                # is its outcome), the untouched chip takes the next card.
                await outcomes.cancelled_at_reader(runtime, card)
                return False
            if exc.refusal is Refusal.CARD_NOT_FOR_THIS_STATION:
                # keymgmt planned the batch onto other stations (reassigned since the claim):
                # the card goes back to the queue, the untouched chip takes the next card.
                await outcomes.not_for_this_station(runtime, card, self.station_id)
                log.warning("card not for this station: released", extra=_ids(card))
                return False
            # The chip holds other keys: spoil the card with the reason, reject the chip.
            # Any other refusal: the chip was never written, it takes the next card.
            rejected = exc.refusal is Refusal.CARD_CRYPTOGRAM_MISMATCH
            reason = refusal_reason(exc)
            await self._spoiled(runtime, act, card, serial, reason, trace, consumed=rejected)
            return rejected
        except KeymgmtBadResponse as exc:
            await self._spoiled(runtime, act, card, serial, str(exc), trace, consumed=False)
            return False
        except BaseException:
            await outcomes.release(runtime, card)  # stopped, or a fault: never written
            raise
        if script.chip_serial != serial:
            reason = f"keymgmt's script is for chip {script.chip_serial}, not {serial}"
            await self._spoiled(runtime, act, card, serial, reason, trace, consumed=False)
            return False
        if not await outcomes.start_encoding(runtime, card):
            log.error("claimed card changed state under the reader", extra=_ids(card))
            return False
        try:
            await self._transmit_script(conn, script, trace)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, CardError | PcscError) else _fault(exc)
            await self._spoiled(runtime, act, card, serial, reason, trace, consumed=True)
            return True
        # Cancelled while sending: the card stays `encoding` and the next start spoils it.
        count = 2 + len(script.apdus)  # SELECT ISD, INITIALIZE UPDATE, then keymgmt's script
        if await outcomes.record_encoded(runtime, self.station_id, reader, card, serial, count):
            act.encoded += 1
            log.info("card encoded", extra={**_ids(card), "chip_serial": serial})
        return True

    async def _spoiled(
        self,
        runtime: ServiceRuntime,
        act: ReaderActivity,
        card: QueuedCard,
        chip_serial: str,
        reason: str,
        trace: ApduTrace,
        *,
        consumed: bool,
    ) -> None:
        done = await outcomes.record_spoiled(
            runtime,
            self.station_id,
            card,
            chip_serial,
            reason,
            trace.tail(),
            chip_consumed=consumed,
        )
        if done:
            act.spoiled += 1
            act.last_problem = reason
            log.warning(
                "card spoiled", extra={**_ids(card), "chip_serial": chip_serial, "reason": reason}
            )

    async def _transmit_script(
        self, conn: CardConnection, script: SecureScript, trace: ApduTrace
    ) -> None:
        for apdu in script.apdus:
            await self._transmit(conn, apdu, trace)

    async def _transmit(self, conn: CardConnection, apdu: bytes, trace: ApduTrace) -> bytes:
        data, sw = await self._exchange(conn, apdu, trace)
        if sw != SW_OK:
            raise CardError(describe_failure(apdu, sw))
        return data

    async def _exchange(
        self, conn: CardConnection, apdu: bytes, trace: ApduTrace
    ) -> tuple[bytes, int]:
        try:
            data, sw = await conn.transmit(apdu)
        except PcscError as exc:
            trace.record(apdu, None)
            # A card pulled mid-exchange may surface as any transmit error: ask the reader.
            if isinstance(exc, CardRemoved) or await self._card_gone(conn.reader):
                raise CardError(
                    f"card removed from the reader during {describe_command(apdu)}"
                ) from exc
            raise CardError(f"reader failed during {describe_command(apdu)}: {exc}") from exc
        trace.record(apdu, sw)
        return data, sw


def _fault(exc: Exception) -> str:
    return f"station fault while writing the chip: {exc.__class__.__name__}"


def _ids(card: QueuedCard) -> dict[str, str]:
    return {"card_id": str(card.card_id), "batch_id": str(card.batch_id)}
