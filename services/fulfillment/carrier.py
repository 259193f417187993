"""The carrier letter of a card: one A4 page (PDF) with the cardholder's address in the window
of the envelope, where the card is affixed, and a Code 128 barcode of the chip serial and the
card id, which the inserter scans against the card before packing (DOMAIN.md, fulfillment).

The PDF is written here (PDF 1.4, ISO 32000-1: one page, the standard Helvetica font, the
bars as filled rectangles); `scan_carrier` reads it the way a scanner does: it rasterises the
page with PDFium (pypdfium2) and decodes the barcode from the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import pypdfium2  # type: ignore[import-untyped]
from PIL import Image

from services.fulfillment.barcode import (
    DARK_BELOW,
    QUIET_MODULES,
    BarcodeError,
    decode_row,
    encode_modules,
)

A4 = (595.28, 841.89)  # points
MODULE_PT = 72 / 300 * 3  # 0.254 mm: three pixels of a 300 dpi scan
BAR_HEIGHT_PT = 42.0
SCAN_DPI = 300
_LIGHT = bytes(range(DARK_BELOW, 256))  # deleted from a scanline, leaves its dark pixels


@dataclass(frozen=True)
class CarrierLetter:
    card_id: UUID
    chip_serial: str
    carrier_id: str
    cardholder_name: str
    address_lines: tuple[str, ...]
    issuer_name: str


def barcode_text(card_id: UUID, chip_serial: str) -> str:
    """What the carrier's barcode says: the chip serial, then the card id (hex)."""
    return f"{chip_serial.upper()}{card_id.hex.upper()}"


def parse_barcode(text: str) -> tuple[str, UUID]:
    """(chip serial, card id) from a scanned barcode. Raises BarcodeError."""
    if len(text) < 33:
        raise BarcodeError("the barcode is too short to hold a chip serial and a card id")
    try:
        return text[:-32], UUID(hex=text[-32:])
    except ValueError as exc:
        raise BarcodeError("the barcode does not end with a card id") from exc


def _pdf_text(value: str) -> str:
    """A PDF literal string in WinAnsi: escaped, and characters it lacks replaced by '?'."""
    raw = value.encode("cp1252", errors="replace").decode("latin-1")
    return raw.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _content(letter: CarrierLetter) -> str:
    ops: list[str] = ["0 g"]

    def text(x: float, y: float, size: float, value: str, font: str = "F1") -> None:
        ops.append(f"BT /{font} {size} Tf {x:.2f} {y:.2f} Td ({_pdf_text(value)}) Tj ET")

    text(56, 790, 16, letter.issuer_name, "F2")
    # The address in the window of a DL envelope (left window, 45 x 90 mm from the top left).
    y = 700.0
    for line in (letter.cardholder_name, *letter.address_lines):
        text(56, y, 11, line)
        y -= 14
    text(56, 560, 12, "Your new card is attached below. Sign it on the back when it arrives.")
    text(56, 544, 10, "Your PIN comes in a separate letter. Never keep the two together.")
    ops.append("0.6 G 1 w 150 330 243 153 re S")  # where the card is affixed (85.6 x 54 mm)
    text(220, 400, 9, "affix card here")
    modules = encode_modules(barcode_text(letter.card_id, letter.chip_serial))
    x = 56 + QUIET_MODULES * MODULE_PT
    for n, width in enumerate(modules):
        if n % 2 == 0:  # even elements are bars
            ops.append(f"{x:.3f} 150 {width * MODULE_PT:.3f} {BAR_HEIGHT_PT} re f")
        x += width * MODULE_PT
    text(56, 134, 8, f"carrier {letter.carrier_id}   chip {letter.chip_serial}")
    return "\n".join(ops) + "\n"


def render_carrier(letter: CarrierLetter) -> bytes:
    """The letter as a one-page PDF."""
    content = _content(letter).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {A4[0]} {A4[1]}]"
            " /Resources << /Font << /F1 4 0 R /F2 5 0 R >> >> /Contents 6 0 R >>"
        ).encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"endstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _render(pdf: bytes, dpi: int, skip_top_pt: float) -> pypdfium2.PdfBitmap:
    """The first page rendered in grey by PDFium, as the scanner sees it, without its top
    `skip_top_pt` points."""
    document = pypdfium2.PdfDocument(pdf)
    try:
        page = document[0]
        return page.render(scale=dpi / 72, grayscale=True, crop=(0, 0, 0, skip_top_pt))
    finally:
        document.close()


def rasterise(pdf: bytes, dpi: int = SCAN_DPI, *, skip_top_pt: float = 0.0) -> Image.Image:
    """The first page as a greyscale PIL image, without its top `skip_top_pt` points."""
    image: Image.Image = _render(pdf, dpi, skip_top_pt).to_pil()
    return image if image.mode == "L" else image.convert("L")


def scan_carrier(pdf: bytes) -> str:
    """The text of the barcode on a carrier letter, read from its rendered pixels.

    The scanner sweeps scanlines over the lower half of the page, where the barcode is printed;
    only that half is rendered, and a scanline with no dark pixel is passed over without being
    decoded (the page is mostly white: this was the fulfillment floor's hottest loop). The
    scanlines are read in place from PDFium's bitmap: a copy of the whole half page (a PIL
    image's bytes, 4 MB at 300 dpi) took most of the scan."""
    try:
        bitmap = _render(pdf, SCAN_DPI, A4[1] / 2)
    except pypdfium2.PdfiumError as exc:
        raise BarcodeError(f"the carrier is not a readable PDF: {exc}") from exc
    if bitmap.n_channels != 1:  # PDFium renders grey as one byte a pixel; anything else is not
        raise BarcodeError(f"the scanner got a {bitmap.n_channels}-channel page, not grey")
    pixels = memoryview(bitmap.buffer).cast("B")
    for y in range(0, bitmap.height, 6):
        row = bytes(pixels[y * bitmap.stride : y * bitmap.stride + bitmap.width])
        if not row.translate(None, _LIGHT):
            continue
        try:
            return decode_row(row, DARK_BELOW)
        except BarcodeError:
            continue
    raise BarcodeError("no readable barcode on the carrier")
