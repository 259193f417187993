"""A small IPP/1.1-2.0 client over HTTP: the printers of the card and PIN-mailer paths.

The messages are encoded by shared/ipp_codec.py (RFC 8010). Operations and job states per
RFC 8011 (Model and Semantics). Used here: Print-Job, Get-Job-Attributes, Get-Jobs and
Get-Printer-Attributes.
"""

from __future__ import annotations

import itertools
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final
from urllib.parse import urlsplit

import httpx

from shared.ipp_codec import (
    CHARSET,
    GET_JOB_ATTRIBUTES,
    GET_JOBS,
    GET_PRINTER_ATTRIBUTES,
    INTEGER,
    JOB_GROUP,
    KEYWORD,
    LANGUAGE,
    MAX_MESSAGE_BYTES,
    MIME_TYPE,
    NAME,
    OPERATION_GROUP,
    PRINT_JOB,
    PRINTER_GROUP,
    URI,
    Attribute,
    IppMessage,
    IppValue,
    decode,
    encode,
)
from shared.ipp_codec import IppError as IppError


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


class IppUnavailable(IppError):
    """Transport failure or a server-error status: try again later."""


class IppServerError(IppUnavailable):
    """The printer answered a server-error status (RFC 8011 §13.1.5): the operation was not
    performed (a Print-Job so answered created no job), and may succeed later."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class IppBusy(IppServerError):
    """server-error-busy (0x0507): the printer is working on another job and takes no new one
    now. Not an outage: try again in a moment."""


class IppHistoryTooLong(IppError):
    """The printer keeps more newer jobs than a lookup reads: whether a job of that name is
    among the older ones cannot be told."""


class IppUntrusted(IppUnavailable):
    """An ipps:// printer whose certificate does not verify: nothing was sent to it. Retried
    like any unavailable printer, so a card is not lost while the certificate is fixed."""


class IppRejected(IppError):
    """The printer refused the request (a client-error status): retrying the same request
    may not help, but the card is not lost either."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"IPP status 0x{status:04X}: {message}")
        self.status = status


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


IPP_PORT: Final = 631  # RFC 8010 §4.2 (ipp) and RFC 7472 §4 (ipps): both default to 631


def printer_url(uri: str) -> tuple[str, bool]:
    """The HTTP(S) URL an ipp:// or ipps:// printer URI is posted to, and whether it is TLS."""
    parts = urlsplit(uri)
    if parts.scheme not in ("ipp", "ipps", "http", "https") or not parts.hostname:
        raise ValueError(f"printer URI {uri!r} is not ipp://host:port/path or ipps://...")
    tls = parts.scheme in ("ipps", "https")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = parts.port or (IPP_PORT if parts.scheme in ("ipp", "ipps") else None)
    netloc = f"{host}:{port}" if port else host
    return f"{'https' if tls else 'http'}://{netloc}{parts.path or '/'}", tls


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verify the printer's chain (against `ca_file`, or the system's trust store) and its host
    name; TLS 1.2 at least."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def _bounded_body(response: httpx.Response, uri: str) -> bytes:
    """The answer's body, refused past MAX_MESSAGE_BYTES while it streams."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_MESSAGE_BYTES:
            raise IppError(f"printer {uri} answered more than {MAX_MESSAGE_BYTES} bytes")
    return bytes(body)


class IppClient:
    """One printer, addressed by its ipp:// or ipps:// URI. Every call is one HTTP POST (RFC 8010
    §4); ipps is IPP over HTTPS (RFC 7472), the printer's certificate verified against `ca_file`
    (a PEM bundle; None: the system's trust store) and its name against the URI's host."""

    def __init__(
        self,
        uri: str,
        *,
        user: str,
        timeout_s: float = 10.0,
        ca_file: str | None = None,
        require_tls: bool = False,
    ) -> None:
        self.uri = uri
        self.user = user
        self._url, tls = printer_url(uri)
        if require_tls and not tls:
            raise ValueError(f"printer URI {uri!r} must be ipps:// (IPP over TLS), not plain IPP")
        self._ca_file = ca_file
        verify: ssl.SSLContext | bool = tls_context(ca_file) if tls else False
        self._http = httpx.AsyncClient(timeout=timeout_s, verify=verify, trust_env=False)
        self._ids = itertools.count(1)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _transport_problem(self, exc: httpx.TransportError) -> IppUnavailable:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, ssl.SSLCertVerificationError):
            trust = self._ca_file or "the system's trust store"
            return IppUntrusted(
                f"printer {self.uri} refused: its TLS certificate does not verify against "
                f"{trust} ({cause.verify_message or cause.reason})"
            )
        return IppUnavailable(f"printer {self.uri} unreachable: {exc.__class__.__name__}")

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
        headers = {"Content-Type": "application/ipp"}
        try:
            async with self._http.stream(
                "POST", self._url, content=encode(request), headers=headers
            ) as response:
                if response.status_code != 200:
                    raise IppUnavailable(f"printer {self.uri} answered HTTP {response.status_code}")
                body = await _bounded_body(response, self.uri)
        except httpx.TransportError as exc:
            raise self._transport_problem(exc) from exc
        answer = decode(body)
        if answer.code >= 0x0500:  # server-error-*: busy, not accepting jobs, internal error
            problem = f"printer {self.uri} answered status 0x{answer.code:04X}"
            if answer.code == SERVER_ERROR_BUSY:
                raise IppBusy(answer.code, problem + " (busy)")
            raise IppServerError(answer.code, problem)
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

    async def jobs(
        self, which: str = "all", *, limit: int | None = None, attrs: Sequence[str] = ()
    ) -> list[JobStatus]:
        """Get-Jobs with which-jobs `all` (completed ones too, as long as the printer keeps
        them) or `not-completed`; at most `limit` jobs (a printer answers the newest first),
        each with `attrs` (default: id, name, state and its reasons and message)."""
        extra = [_attr(INTEGER, "limit", limit)] if limit is not None else []
        answer = await self._call(
            GET_JOBS,
            self._operation(
                _attr(KEYWORD, "which-jobs", which),
                *extra,
                _attr(KEYWORD, "requested-attributes", *(attrs or _JOB_ATTRS)),
            ),
        )
        return [_job(attrs) for attrs in answer.all_groups(JOB_GROUP) if attrs]

    async def find_job(self, job_name: str) -> JobStatus | None:
        """The newest job of that name the printer knows (job names carry our own job id).

        Reads the newest jobs first, a window that widens (FIND_FIRST, x4 each time, up to
        FIND_MAX) until it holds the job or the printer's whole history: a busy printer keeps
        hundreds of jobs, more than one answer may carry. None only when the whole history
        was read; IppHistoryTooLong when FIND_MAX newer jobs hide the older ones."""
        window = FIND_FIRST
        while True:
            listed = await self.jobs("all", limit=window, attrs=_FIND_ATTRS)
            named = [j for j in listed if j.name == job_name]
            if named:
                return max(named, key=lambda j: j.job_id)
            if len(listed) < window:
                return None
            if window >= FIND_MAX:
                raise IppHistoryTooLong(
                    f"printer {self.uri} keeps over {FIND_MAX} jobs newer than any named "
                    f"{job_name!r}: cannot tell whether it has that job"
                )
            window = min(window * 4, FIND_MAX)

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


SERVER_ERROR_BUSY: Final = 0x0507
FIND_FIRST: Final = 32  # jobs the first lookup reads
FIND_MAX: Final = 1024  # and the most it reads: 3 attributes each, within the decoder's ceiling
_FIND_ATTRS: Final = ("job-id", "job-name", "job-state")
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
