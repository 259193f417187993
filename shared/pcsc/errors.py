"""PC/SC status codes as exceptions a station or QA can act on (pcsc-lite 1.9 codes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from smartcard import scard as sc

_U32: Final = 0xFFFFFFFF


def _code(value: int) -> int:
    return value & _U32


SUCCESS: Final = _code(sc.SCARD_S_SUCCESS)
_TIMEOUT: Final = _code(sc.SCARD_E_TIMEOUT)
_CANCELLED: Final = _code(sc.SCARD_E_CANCELLED)
_NOT_TRANSACTED: Final = _code(sc.SCARD_E_NOT_TRANSACTED)
_SERVICE_DOWN: Final = frozenset(
    _code(c)
    for c in (
        sc.SCARD_E_NO_SERVICE,
        sc.SCARD_E_SERVICE_STOPPED,
        sc.SCARD_F_COMM_ERROR,
        sc.SCARD_E_INVALID_HANDLE,  # a context or card handle of a pcscd that has restarted
    )
)
_READER_GONE: Final = frozenset(
    _code(c)
    for c in (
        sc.SCARD_E_UNKNOWN_READER,
        sc.SCARD_E_READER_UNAVAILABLE,
        sc.SCARD_E_NO_READERS_AVAILABLE,
    )
)
_CARD_GONE: Final = frozenset(
    _code(c)
    for c in (
        sc.SCARD_W_REMOVED_CARD,
        sc.SCARD_E_NO_SMARTCARD,
        sc.SCARD_W_UNPOWERED_CARD,
        sc.SCARD_W_UNRESPONSIVE_CARD,
    )
)


class PcscError(Exception):
    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message if code is None else f"{message}: {_describe(code)}")
        self.code = code


class PcscUnavailable(PcscError):
    """pcscd is not running (or restarted under an open handle)."""


class ReaderGone(PcscError):
    """The reader is unknown to pcscd or has been removed."""


class CardRemoved(PcscError):
    """No card in the reader, or the card left it during the operation."""


class PcscTimeout(PcscError, TimeoutError):
    pass


def _describe(code: int) -> str:
    try:
        message = str(sc.SCardGetErrorMessage(code))
    except Exception:  # pyscard has no text for some codes
        message = "unknown"
    return f"{message} (0x{_code(code):08X})"


def error_for(code: int, message: str) -> PcscError:
    code = _code(code)
    if code in _SERVICE_DOWN:
        return PcscUnavailable(message, code)
    if code in _READER_GONE:
        return ReaderGone(message, code)
    if code in _CARD_GONE:
        return CardRemoved(message, code)
    if code == _TIMEOUT:
        return PcscTimeout(message, code)
    return PcscError(message, code)


def _call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """pyscard raises SystemError instead of returning a code when a handle died under it."""
    try:
        return fn(*args)
    except SystemError as exc:
        raise PcscUnavailable(f"{what}: pyscard failed ({exc}); pcscd restarted?") from exc
