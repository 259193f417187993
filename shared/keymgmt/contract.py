"""The wire contract of keymgmt's HTTP API as the other services call it (docs/services.md).

keymgmt's endpoints and every caller import these: the request and response bodies, the paths
and the refusal codes a caller must tell apart. The wire format is the one keymgmt has always
spoken: hex strings stay hex strings (upper case where keymgmt answers), ids are UUID strings.
Request models keep keymgmt's own validation rules; response models keep the rules the callers
relied on (a script has at least two commands, a verdict's `ok` is a real boolean).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    TypeAdapter,
    model_validator,
)
from pydantic_core import to_json

from shared.cardholder import card_problems
from shared.errors import REFUSAL_HEADER

__all__ = ["REFUSAL_HEADER"]  # the header a refusal code travels in (shared/errors.py)


# -- paths (FastAPI path templates; `.format(card_id=...)` gives the URL path) ----------------
VAULT_CARDS: Final = "/v1/vault/cards"
VAULT_FORGET: Final = "/v1/vault/cards/forget"
VAULT_PRINT_DATA: Final = "/v1/vault/cards/{card_id}/print-data"
VAULT_MAILING: Final = "/v1/vault/cards/{card_id}/mailing"
SECURE_SCRIPTS: Final = "/v1/perso/secure-scripts"
QA_READBACK: Final = "/v1/qa/readback"
ARQC_VERIFY: Final = "/v1/arqc/verify"
SIM_QA_CHALLENGE: Final = "/v1/sim/qa/challenge"
SIM_QA_CHECK: Final = "/v1/sim/qa/check"
PIN_MAILERS: Final = "/v1/pin-mailers"
PIN_MAILER: Final = "/v1/pin-mailers/{card_id}"
CHECKPOINT_SIGNATURES: Final = "/v1/signing/audit-checkpoints"
CHECKPOINT_PUBLIC_KEY: Final = "/v1/signing/audit-checkpoints/public-key"
CHECKPOINT_LAST_SIGNED: Final = "/v1/signing/audit-checkpoints/last"
CA_PUBLIC_KEY: Final = "/v1/ca-keys/{rid}/{ca_index}"


class Refusal(StrEnum):
    """Refusal codes (header `X-Bureau-Refusal`) a caller acts on, never the message."""

    # docs/perso-protocol.md: the chip failed to prove it holds this bureau's keys (409);
    # the station spoils the card and rejects the chip.
    CARD_CRYPTOGRAM_MISMATCH = "card-cryptogram-mismatch"
    # The issuer cancelled the card: no script (409); the untouched chip takes the next card.
    CARD_CANCELLED = "card-cancelled"
    CARD_NOT_FOR_THIS_STATION = "card-not-for-this-station"  # 403, not its batch: release it
    # QA read-back (409, issue 16): the card is not personalized on that chip, or cancelled;
    # its QA is at another QA station; it has had its bounded number of read-backs. The card
    # fails QA: none of these is fixed by asking again.
    CARD_NOT_IN_QA = "card-not-in-qa"
    CARD_IN_QA_ELSEWHERE = "card-in-qa-elsewhere"
    READBACK_LIMIT_REACHED = "readback-limit-reached"
    # Audit checkpoints (docs/audit.md, 409): keymgmt signs only a tree that extends the last it
    # signed. The tree is smaller than that one, or the request's old size is not that one's
    # size (ask CHECKPOINT_LAST_SIGNED again), or the consistency proof does not verify.
    CHECKPOINT_SIZE_BACKWARDS = "checkpoint-size-backwards"
    CHECKPOINT_OLD_SIZE_MISMATCH = "checkpoint-old-size-mismatch"
    CHECKPOINT_INCONSISTENT = "checkpoint-inconsistent"


def _hex_bytes(value: Any) -> Any:
    """Bytes from hex on the wire; bytes built in Python pass as they are."""
    if isinstance(value, str):
        return bytes.fromhex(value)  # ValueError: pydantic reports the field
    return value


# Binary data that travels as upper-case hex (keymgmt's answers always did).
HexBytes = Annotated[
    bytes,
    BeforeValidator(_hex_bytes),
    PlainSerializer(lambda b: b.hex().upper(), return_type=str, when_used="json"),
]
ChipSerial = Annotated[str, Field(pattern=r"^[0-9A-Fa-f]{12}$"), AfterValidator(str.upper)]


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Answer(BaseModel):
    """keymgmt's answers: fields added later by keymgmt do not break an older caller. Parsed
    without pydantic-core's process-wide string cache for values: an answer's values are
    cardholder data, PAN tokens and card ids, which must not linger in memory after the call
    (nor fill the cache with strings never seen again)."""

    model_config = ConfigDict(frozen=True, extra="ignore", cache_strings="keys")


# -- the PAN vault (intake stores; graphical and fulfillment read their views) ----------------
class Address(_Contract):
    lines: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=4)
    postcode: str = Field(max_length=16)
    city: str = Field(max_length=64)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")


class VaultCardIn(_Contract):
    """A cardholder record; its fields obey shared/cardholder.py, the rules intake checks an
    order with, so the vault refuses nothing intake accepted."""

    card_id: UUID
    pan: str = Field(pattern=r"^\d{13,19}$", repr=False)  # always maskable (shared/pan.py)
    psn: str = Field(default="00", pattern=r"^\d{2}$")
    expiry: str = Field(pattern=r"^\d{2}(0[1-9]|1[0-2])$", description="YYMM")
    cardholder_name: str = Field(min_length=2, max_length=26)
    address: Address

    @model_validator(mode="after")
    def _card_rules(self) -> VaultCardIn:
        found = card_problems(
            pan=self.pan,
            psn=self.psn,
            expiry=self.expiry,
            cardholder_name=self.cardholder_name,
            address=self.address.model_dump(),
        )
        if found:  # names the fields and rules, never the values
            raise ValueError("; ".join(f"{field} {problem}" for field, problem in found))
        return self


IssuerId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
_ISSUER_ID: TypeAdapter[str] = TypeAdapter(IssuerId)


class VaultStore(_Contract):
    """POST /v1/vault/cards (service intake): seal each record; idempotent per card_id."""

    issuer_id: IssuerId
    cards: list[VaultCardIn] = Field(min_length=1, max_length=100_000)


def vault_store_json(issuer_id: str, cards: Iterable[Mapping[str, Any]]) -> bytes:
    """VaultStore's JSON body (the very bytes of `VaultStore(...).model_dump_json()`), checked
    and written one card at a time: a bulk order's chunk never exists as models all at once.
    Raises pydantic's ValidationError as VaultStore would."""
    issuer = to_json(_ISSUER_ID.validate_python(issuer_id))
    written = [VaultCardIn.model_validate(card).model_dump_json().encode() for card in cards]
    if not written:
        VaultStore.model_validate({"issuer_id": issuer_id, "cards": []})  # raises: no card
    return b'{"issuer_id":' + issuer + b',"cards":[' + b",".join(written) + b"]}"


VAULT_MAX_CARDS: Final = 100_000  # the most cards one store or forget call names (intake's)


class VaultForget(_Contract):
    """POST /v1/vault/cards/forget (service intake): delete the records of cards whose order
    was refused or failed after they were stored. keymgmt keeps a card it already prepared."""

    issuer_id: IssuerId
    card_ids: list[UUID] = Field(min_length=1, max_length=VAULT_MAX_CARDS)


class VaultForgotten(_Answer):
    forgotten: int
    kept: list[UUID] = Field(default_factory=list, description="already prepared: not deleted")


class VaultedCard(_Answer):
    card_id: UUID
    pan_token: str
    masked_pan: str


class VaultStored(_Answer):
    cards: list[VaultedCard]

    def by_card(self) -> dict[UUID, VaultedCard]:
        return {card.card_id: card for card in self.cards}


class PrintData(_Answer):
    """GET /v1/vault/cards/{card_id}/print-data: no clear PAN; a CVV2 (HSM) if there are CVKs."""

    card_id: UUID
    issuer_id: str
    cardholder_name: str
    masked_pan: str
    expiry: str  # YYMM
    cvv2: str | None = Field(default=None, repr=False, pattern=r"^\d{3}$")  # for this print only


class MailingData(_Answer):
    """GET /v1/vault/cards/{card_id}/mailing (service fulfillment): who the card goes to."""

    card_id: UUID
    cardholder_name: str
    address: Address


# -- perso: the station's SCP03/SCP02-protected script (docs/perso-protocol.md) --------------
class SecureScriptRequest(_Contract):
    """POST /v1/perso/secure-scripts (station): what the station read from the card."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    card_id: UUID
    chip_serial: str = Field(pattern=r"^[0-9A-Fa-f]{12}$", description="from the CPLC")
    host_challenge: str = Field(pattern=r"^[0-9A-Fa-f]{16}$", description="8 bytes hex")
    initialize_update_response: str = Field(
        pattern=r"^(?:[0-9A-Fa-f]{56}|[0-9A-Fa-f]{58})$",
        description="the card's answer without SW: 29 bytes (SCP03) or 28 (SCP02)",
    )


class SecureScript(_Answer):
    """EXTERNAL AUTHENTICATE then the protected commands, to send in this order."""

    card_id: UUID
    chip_serial: ChipSerial
    security_level: str = Field(pattern=r"^0[13]$", description="01 C-MAC, 03 C-DEC + C-MAC")
    apdus: tuple[HexBytes, ...] = Field(min_length=2)
    dgis: tuple[str, ...] = ()


# -- QA: read-back, ARQC and SIM checks --------------------------------------------------------
class ReadbackRequest(_Contract):
    """POST /v1/qa/readback (service qa): every record of the chip's AFL as read in the reader
    of QA station `qa_station`, keyed by its DGI number SSRR (SFI, record; 4 hex digits: "0101"
    is SFI 1 record 1), and the chip's serial (its CPLC). keymgmt answers only for a card
    personalized on that chip, at the station that began its QA, a bounded number of times.
    Bounded: at most 16 records of at most 1024 bytes (a full
    profile has 5: SFI 1 record 1, SFI 2 records 1-4; an issuer certificate record ~260)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    card_id: UUID
    chip_serial: ChipSerial = Field(description="from the chip's CPLC, as QA read it")
    qa_station: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$", description="the QA station")
    records: dict[
        Annotated[str, Field(pattern=r"^(?:0[1-9A-F]|1[0-9A-E])(?:0[1-9A-F]|[1-9A-F][0-9A-F])$")],
        Annotated[str, Field(pattern=r"^(?:[0-9A-Fa-f]{2}){1,1024}$")],
    ] = Field(
        min_length=1,
        max_length=16,
        description='{"0101": hex, "0201": hex, ...}: the AFL records by DGI number',
    )


class ReadbackProblem(StrEnum):
    """What a failed read-back says: a reason code, never which field or value differs (a
    per-field answer let a caller recover a PAN's digits by guessing, issue 16)."""

    RECORDS_DIFFER = "records-differ"  # a record holds other bytes than were prepared
    RECORD_MISSING = "record-missing"  # a prepared record was not read back
    RECORD_UNEXPECTED = "record-unexpected"  # a record keymgmt does not prepare
    RECORD_MALFORMED = "record-malformed"  # not one well-formed `70` record template
    PROFILE_CHANGED = "profile-changed"  # the product's EMV profile moved since preparation


class ArqcRequest(_Contract):
    """POST /v1/arqc/verify (service qa): the chip's GENERATE AC answer and its input."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    card_id: UUID
    cdol1: str = Field(pattern=r"^[0-9A-Fa-f]{58}$")
    atc: str = Field(pattern=r"^[0-9A-Fa-f]{4}$")
    arqc: str = Field(pattern=r"^[0-9A-Fa-f]{16}$")


class Verdict(_Answer):
    """keymgmt's check: `ok`, or the problems it found (they name checks, never values)."""

    ok: StrictBool
    problems: tuple[str, ...] = ()

    def found(self, otherwise: str) -> tuple[str, ...]:
        """The problems, none when ok; `otherwise` when keymgmt said no without naming one."""
        if self.ok:
            return ()
        return self.problems or (otherwise,)


class SimChallengeRequest(_Contract):
    """POST /v1/sim/qa/challenge (service qa)."""

    card_id: UUID


class SimChallenge(_Answer):
    """RAND and AUTN for the SIM's AUTHENTICATE, and the ICCID and IMSI prepared for it."""

    card_id: UUID
    iccid: str
    imsi: str
    rand: HexBytes
    autn: HexBytes
    pin1: HexBytes | None = Field(
        default=None,
        repr=False,
        description="PIN1 as the UICC takes it (8 bytes) when the profile enables PIN1, for"
        " QA's VERIFY as a handset's user would type it; None when PIN1 is disabled",
    )


class SimCheckRequest(_Contract):
    """POST /v1/sim/qa/check (service qa): the chip's AUTHENTICATE answer to keymgmt's RAND."""

    card_id: UUID
    rand: str = Field(pattern=r"^[0-9A-Fa-f]{32}$")
    response: str = Field(
        pattern=r"^([0-9A-Fa-f]{2}){1,64}$",
        repr=False,
        description="the AUTHENTICATE response data (without SW1 SW2)",
    )


# -- PIN mailers (service fulfillment) ---------------------------------------------------------
class PinMailerRequest(_Contract):
    """POST /v1/pin-mailers: print the card's PIN mailer on the PIN printer (once)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    card_id: UUID
    batch_id: UUID


class PinMailerState(_Answer):
    """A PIN mailer as keymgmt shows it: an opaque id and the print job's state, no PIN."""

    mailer_id: UUID
    card_id: UUID
    status: Literal["queued", "submitting", "submitted", "printed", "spoiled"]
    ipp_job_id: int | None = None
    attempts: int = 0
    last_problem: str | None = None


# -- audit checkpoint signing (service audit) --------------------------------------------------
class CheckpointToSign(_Contract):
    """POST /v1/signing/audit-checkpoints: keymgmt writes the C2SP checkpoint text from these
    itself, and signs it only if `proof` (RFC 9162 consistency proof, hex hashes) shows the tree
    extends the last one it signed for the origin, whose size is `old_size` (0: none yet)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    origin: str = Field(min_length=1, max_length=128, pattern=r"^[^\s+]+$")
    tree_size: int = Field(ge=0)
    root_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    old_size: int = Field(default=0, ge=0)
    proof: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(
        default_factory=list, max_length=63
    )


class CheckpointSignature(_Answer):
    key_id: str
    algorithm: str
    signature: str  # base64 DER
    note: str = ""  # the C2SP signed note: checkpoint text, blank line, keymgmt's signature line


class LastSignedCheckpoint(_Answer):
    """GET /v1/signing/audit-checkpoints/last?origin=: the newest checkpoint keymgmt signed."""

    origin: str
    tree_size: int
    root_hash: str  # hex


class SigningPublicKey(_Answer):
    """GET /v1/signing/audit-checkpoints/public-key: the checkpoint-verification key."""

    label: str | None = None
    key_id: str
    algorithm: str
    public_key_pem: str
    vkey: str = ""  # C2SP verifier key of the log's signature lines (type 0x02)


# -- EMV offline data authentication (docs/emv-profile.md) -------------------------------------
class CaPublicKey(_Answer):
    """GET /v1/ca-keys/{rid}/{ca_index}: a certification authority public key the bureau
    trusts, as a terminal holds it (EMV Book 2 §5.1), for QA's ODA checks."""

    rid: str  # 5 bytes, hex
    ca_index: str  # 1 byte, hex
    modulus: str  # hex
    exponent: str  # hex
    expires: date
