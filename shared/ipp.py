"""A small IPP/1.1-2.0 client over HTTP: the printers of the card and PIN-mailer paths.

Encoding per RFC 8010 (IPP/1.1 Encoding and Transport): version (2 bytes), operation-id or
status-code (2), request-id (4), attribute groups (a delimiter tag, then attributes: value
tag, name length + name, value length + value; an additional value repeats with an empty
name), the end-of-attributes tag, then the document data. Operations and job states per
RFC 8011 (Model and Semantics). Used here: Print-Job, Get-Job-Attributes, Get-Jobs and
Get-Printer-Attributes; only what those need is decoded (collections are skipped whole).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final
from urllib.parse import urlsplit

import httpx

IppValue = int | bool | str | bytes | tuple[int, int]

# Operations (RFC 8011 §5.2, §5.3, §5.4).
PRINT_JOB: Final = 0x0002
GET_JOB_ATTRIBUTES: Final = 0x0009
GET_JOBS: Final = 0x000A
GET_PRINTER_ATTRIBUTES: Final = 0x000B

# Delimiter tags (RFC 8010 §3.5.1).
OPERATION_GROUP: Final = 0x01
JOB_GROUP: Final = 0x02
END_OF_ATTRIBUTES: Final = 0x03
PRINTER_GROUP: Final = 0x04
UNSUPPORTED_GROUP: Final = 0x05

# Value tags (RFC 8010 §3.5.2).
INTEGER: Final = 0x21
BOOLEAN: Final = 0x22
ENUM: Final = 0x23
DATE_TIME: Final = 0x31
RANGE: Final = 0x33
BEGIN_COLLECTION: Final = 0x34
END_COLLECTION: Final = 0x37
TEXT: Final = 0x41
NAME: Final = 0x42
KEYWORD: Final = 0x44
URI: Final = 0x45
CHARSET: Final = 0x47
LANGUAGE: Final = 0x48
MIME_TYPE: Final = 0x49
MEMBER_NAME: Final = 0x4A
_STRING_TAGS = frozenset(range(0x41, 0x50))


class JobState(IntEnum):
    """job-state (RFC 8011 §5.3.7)."""

    PENDING = 3
    PENDING_HELD = 4
    PROCESSING = 5
    PROCESSING_STOPPED = 6
    CANCELED = 7
    ABORTED = 8
    COMPLETED = 9

    @property
    def final(self) -> bool:
        return self >= JobState.CANCELED


class PrinterState(IntEnum):
    """printer-state (RFC 8011 §5.4.11)."""

    IDLE = 3
    PROCESSING = 4
    STOPPED = 5


class IppError(Exception):
    """The printer could not be reached, or answered something that is not IPP."""


class IppUnavailable(IppError):
    """Transport failure or a server-error status: try again later."""


class IppRejected(IppError):
    """The printer refused the request (a client-error status): retrying the same request
    may not help, but the card is not lost either."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"IPP status 0x{status:04X}: {message}")
        self.status = status


@dataclass(frozen=True)
class Attribute:
    tag: int
    name: str
    values: tuple[IppValue, ...]


@dataclass(frozen=True)
class IppMessage:
    version: tuple[int, int]
    code: int  # operation-id in a request, status-code in a response
    request_id: int
    groups: tuple[tuple[int, dict[str, Attribute]], ...] = ()
    data: bytes = b""

    def group(self, tag: int) -> dict[str, Attribute]:
        return next((attrs for t, attrs in self.groups if t == tag), {})

    def all_groups(self, tag: int) -> list[dict[str, Attribute]]:
        return [attrs for t, attrs in self.groups if t == tag]


def _encode_value(tag: int, value: IppValue) -> bytes:
    if tag in (INTEGER, ENUM):
        assert isinstance(value, int)
        return struct.pack(">i", value)
    if tag == BOOLEAN:
        return b"\x01" if value else b"\x00"
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes):
        return value
    raise ValueError(f"cannot encode {value!r} with value tag 0x{tag:02X}")


def encode(message: IppMessage) -> bytes:
    out = bytearray(struct.pack(">bbhi", *message.version, message.code, message.request_id))
    for group_tag, attrs in message.groups:
        out.append(group_tag)
        for attr in attrs.values():
            for n, value in enumerate(attr.values):
                name = attr.name.encode("ascii") if n == 0 else b""
                raw = _encode_value(attr.tag, value)
                out += struct.pack(">bh", attr.tag, len(name)) + name
                out += struct.pack(">h", len(raw)) + raw
    out.append(END_OF_ATTRIBUTES)
    return bytes(out) + message.data


def _decode_value(tag: int, raw: bytes) -> IppValue:
    if tag in (INTEGER, ENUM) and len(raw) == 4:
        return int(struct.unpack(">i", raw)[0])
    if tag == BOOLEAN and len(raw) == 1:
        return raw != b"\x00"
    if tag == RANGE and len(raw) == 8:
        low, high = struct.unpack(">ii", raw)
        return (int(low), int(high))
    if tag in _STRING_TAGS:
        return raw.decode("utf-8", errors="replace")
    return raw


def decode(body: bytes) -> IppMessage:
    """Parse an IPP message. Raises IppError on a truncated or malformed one."""
    try:
        major, minor, code, request_id = struct.unpack_from(">bbhi", body, 0)
        pos = 8
        groups: list[tuple[int, dict[str, Attribute]]] = []
        current: dict[str, Attribute] | None = None
        last: str | None = None
        depth = 0  # inside a collection: its members are skipped
        while True:
            tag = body[pos]
            pos += 1
            if tag == END_OF_ATTRIBUTES and depth == 0:
                break
            if tag < 0x10 and depth == 0:  # a delimiter: a new group
                current = {}
                groups.append((tag, current))
                last = None
                continue
            (name_len,) = struct.unpack_from(">h", body, pos)
            name = body[pos + 2 : pos + 2 + name_len].decode("ascii")
            pos += 2 + name_len
            (value_len,) = struct.unpack_from(">h", body, pos)
            raw = body[pos + 2 : pos + 2 + value_len]
            if len(raw) != value_len:
                raise IppError("truncated IPP attribute value")
            pos += 2 + value_len
            if tag == BEGIN_COLLECTION:
                depth += 1
                continue
            if tag == END_COLLECTION:
                depth -= 1
                continue
            if depth > 0 or current is None:
                continue
            if name:
                last = name
                current[name] = Attribute(tag, name, (_decode_value(tag, raw),))
            elif last is not None:  # an additional value of the previous attribute
                prev = current[last]
                current[last] = Attribute(prev.tag, last, (*prev.values, _decode_value(tag, raw)))
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise IppError(f"malformed IPP message: {exc.__class__.__name__}") from exc
    return IppMessage((major, minor), code, request_id, tuple(groups), body[pos:])


def _one(attrs: dict[str, Attribute], name: str) -> IppValue | None:
    attr = attrs.get(name)
    return attr.values[0] if attr and attr.values else None


@dataclass(frozen=True)
class JobStatus:
    job_id: int
    state: JobState
    reasons: tuple[str, ...] = ()
    name: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class PrinterStatus:
    state: PrinterState
    reasons: tuple[str, ...] = ()
    accepting: bool = True
    queued_jobs: int = 0
    name: str | None = None
    extra: dict[str, IppValue] = field(default_factory=dict)


def _job(attrs: dict[str, Attribute]) -> JobStatus:
    job_id, state = _one(attrs, "job-id"), _one(attrs, "job-state")
    if not isinstance(job_id, int) or not isinstance(state, int):
        raise IppError("the printer's job answer has no job-id or job-state")
    reasons = attrs.get("job-state-reasons")
    name, message = _one(attrs, "job-name"), _one(attrs, "job-state-message")
    return JobStatus(
        job_id=job_id,
        state=JobState(state),
        reasons=tuple(str(r) for r in reasons.values) if reasons else (),
        name=name if isinstance(name, str) else None,
        message=message if isinstance(message, str) else None,
    )


def _attr(tag: int, name: str, *values: IppValue) -> tuple[str, Attribute]:
    return name, Attribute(tag, name, values)


class IppClient:
    """One printer, addressed by its ipp:// URI. Every call is one HTTP POST (RFC 8010 §4)."""

    def __init__(self, uri: str, *, user: str, timeout_s: float = 10.0) -> None:
        parts = urlsplit(uri)
        if parts.scheme not in ("ipp", "http") or not parts.hostname:
            raise ValueError(f"printer URI {uri!r} is not ipp://host:port/path")
        self.uri = uri
        self.user = user
        self._url = f"http://{parts.netloc}{parts.path or '/'}"
        self._http = httpx.AsyncClient(timeout=timeout_s)
        self._ids = itertools.count(1)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _operation(self, *extra: tuple[str, Attribute]) -> dict[str, Attribute]:
        return dict(
            [
                _attr(CHARSET, "attributes-charset", "utf-8"),
                _attr(LANGUAGE, "attributes-natural-language", "en"),
                _attr(URI, "printer-uri", self.uri),
                _attr(NAME, "requesting-user-name", self.user),
                *extra,
            ]
        )

    async def _call(
        self, operation: int, attrs: dict[str, Attribute], data: bytes = b""
    ) -> IppMessage:
        request = IppMessage((2, 0), operation, next(self._ids), ((OPERATION_GROUP, attrs),), data)
        try:
            response = await self._http.post(
                self._url, content=encode(request), headers={"Content-Type": "application/ipp"}
            )
        except httpx.TransportError as exc:
            problem = f"printer {self.uri} unreachable: {exc.__class__.__name__}"
            raise IppUnavailable(problem) from exc
        if response.status_code != 200:
            raise IppUnavailable(f"printer {self.uri} answered HTTP {response.status_code}")
        answer = decode(response.content)
        if answer.code >= 0x0500:  # server-error-*: busy, not accepting jobs, internal error
            raise IppUnavailable(f"printer {self.uri} answered status 0x{answer.code:04X}")
        if answer.code >= 0x0400:
            message = _one(answer.group(OPERATION_GROUP), "status-message")
            raise IppRejected(answer.code, str(message or "refused"))
        return answer

    async def print_job(self, document: bytes, *, job_name: str, document_format: str) -> JobStatus:
        attrs = self._operation(
            _attr(NAME, "job-name", job_name),
            _attr(MIME_TYPE, "document-format", document_format),
        )
        answer = await self._call(PRINT_JOB, attrs, document)
        return _job(answer.group(JOB_GROUP))

    async def job(self, job_id: int) -> JobStatus:
        """Get-Job-Attributes. IppRejected (client-error-not-found) when the printer has no
        such job, for example after it restarted and forgot its history."""
        answer = await self._call(
            GET_JOB_ATTRIBUTES,
            self._operation(
                _attr(INTEGER, "job-id", job_id),
                _attr(KEYWORD, "requested-attributes", *_JOB_ATTRS),
            ),
        )
        return _job(answer.group(JOB_GROUP))

    async def jobs(self, which: str = "all") -> list[JobStatus]:
        """Get-Jobs with which-jobs `all` (completed ones too, as long as the printer keeps
        them) or `not-completed`."""
        answer = await self._call(
            GET_JOBS,
            self._operation(
                _attr(KEYWORD, "which-jobs", which),
                _attr(KEYWORD, "requested-attributes", *_JOB_ATTRS),
            ),
        )
        return [_job(attrs) for attrs in answer.all_groups(JOB_GROUP) if attrs]

    async def find_job(self, job_name: str) -> JobStatus | None:
        """The newest job of that name the printer knows (job names carry our own job id)."""
        named = [j for j in await self.jobs("all") if j.name == job_name]
        return max(named, key=lambda j: j.job_id) if named else None

    async def printer(self) -> PrinterStatus:
        answer = await self._call(
            GET_PRINTER_ATTRIBUTES,
            self._operation(_attr(KEYWORD, "requested-attributes", *_PRINTER_ATTRS)),
        )
        attrs = answer.group(PRINTER_GROUP)
        state = _one(attrs, "printer-state")
        if not isinstance(state, int):
            raise IppError("the printer's answer has no printer-state")
        reasons = attrs.get("printer-state-reasons")
        accepting = _one(attrs, "printer-is-accepting-jobs")
        queued = _one(attrs, "queued-job-count")
        name = _one(attrs, "printer-name")
        return PrinterStatus(
            state=PrinterState(state),
            reasons=tuple(str(r) for r in reasons.values) if reasons else (),
            accepting=accepting is not False,
            queued_jobs=queued if isinstance(queued, int) else 0,
            name=name if isinstance(name, str) else None,
        )


_JOB_ATTRS: Final[Sequence[str]] = (
    "job-id",
    "job-name",
    "job-state",
    "job-state-reasons",
    "job-state-message",
)
_PRINTER_ATTRS: Final[Iterable[str]] = (
    "printer-name",
    "printer-state",
    "printer-state-reasons",
    "printer-is-accepting-jobs",
    "queued-job-count",
)
