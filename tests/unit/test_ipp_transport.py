"""How a printer URI becomes an HTTP(S) endpoint (RFC 8010 §4, RFC 7472), and the PIN printer's
refusal of plain IPP (issue 16). The TLS handshake itself meets a real printer in
tests/integration/test_pin_printer_ipps.py."""

from __future__ import annotations

import pytest

from services.keymgmt.pin_mailer.printing import PinPrinter
from services.keymgmt.pin_mailer.schemas import PinPrinterUnavailable
from shared.ipp import IppClient, printer_url


@pytest.mark.parametrize(
    ("uri", "url", "tls"),
    [
        ("ipp://localhost:8631/ipp/print", "http://localhost:8631/ipp/print", False),
        ("ipps://localhost:8632/ipp/print", "https://localhost:8632/ipp/print", True),
        ("ipps://printer.example/ipp/print", "https://printer.example:631/ipp/print", True),
        ("ipp://[::1]/ipp/print", "http://[::1]:631/ipp/print", False),
        ("https://printer.example/ipp", "https://printer.example/ipp", True),
    ],
)
def test_printer_uris_map_to_their_http_endpoint(uri: str, url: str, tls: bool) -> None:
    assert printer_url(uri) == (url, tls)


@pytest.mark.parametrize("uri", ["lpd://host/queue", "ipps:///no-host", "localhost:631"])
def test_what_is_not_a_printer_uri_is_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="is not ipp://"):
        printer_url(uri)


def test_a_client_that_requires_tls_refuses_plain_ipp() -> None:
    with pytest.raises(ValueError, match="must be ipps://"):
        IppClient("ipp://localhost:8632/ipp/print", user="keymgmt", require_tls=True)


def test_the_pin_printer_refuses_a_plain_ipp_uri_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BUREAU_PIN_PRINTER_URI", "ipp://localhost:8632/ipp/print")
    with pytest.raises(PinPrinterUnavailable, match="pin_printer_uri: .*ipps:// only"):
        PinPrinter().get()


async def test_the_pin_printer_speaks_ipps_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUREAU_PIN_PRINTER_URI", raising=False)
    printer = PinPrinter()
    _, settings = printer.get()
    assert settings.pin_printer_uri.startswith("ipps://")
    await printer.aclose()
