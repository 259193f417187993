"""PAN helpers: Luhn check, masking, and the redaction every log line goes through. The one
place for these rules: intake validates with them, keymgmt masks what it vaults, logs redact."""

from __future__ import annotations

import re

# 12-19 digit runs, optionally split by spaces or dashes, as PANs appear in text.
_PAN_CANDIDATE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")


def luhn_valid(number: str) -> bool:
    if not number.isdigit() or len(number) < 2:
        return False
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def luhn_check_digit(partial: str) -> str:
    """The Luhn (ISO/IEC 7812-1 Annex B) check digit that completes `partial` (a PAN's or an
    ICCID's digits before it)."""
    if not partial.isdigit():
        raise ValueError("digits only")
    total = 0
    for index, char in enumerate(reversed(partial)):
        digit = int(char) * (2 if index % 2 == 0 else 1)  # the check digit will sit at index 0
        total += digit - 9 if digit > 9 else digit
    return str((10 - total % 10) % 10)


def mask_pan(pan: str) -> str:
    """PCI DSS display masking: the first six and last four digits at most are shown, every
    other digit is '*' (v3.2.1 req. 3.3; v4.0 req. 3.4.1 allows the BIN, six or eight digits,
    and the last four: six and four satisfy both). PANs are 13-19 digits, as intake accepts
    them: a shorter number would be shown nearly whole, so it is refused."""
    if not pan.isdigit() or not 13 <= len(pan) <= 19:
        raise ValueError("a PAN is digits only, at least 13 digits and at most 19")
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def redact_pans(text: str) -> str:
    """Mask every PAN in `text`: digit runs that pass Luhn and look like a PAN, and PANs inside
    hex strings (APDU traces, BER-TLV dumps): see redact_hex_pans."""

    def _mask(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group(0))
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return mask_pan(digits)
        return match.group(0)

    return _PAN_CANDIDATE.sub(_mask, redact_hex_pans(text))


# -- PANs inside hex --------------------------------------------------------------------------
# A hex string as traces print it: byte groups of at least two hex digits, joined by nothing or
# by single spaces or colons ('5A08 4761 7390 0101 0010', '5a:08:47:61', '5A0847617390...').
_HEX_RUN = re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{2,}(?:[ :][0-9A-Fa-f]{2,})*(?![0-9A-Fa-f])")
# EMV tags whose value starts with the PAN (EMV Book 3 Annex A): 5A Application PAN, 'cn'
# (BCD, padded with F); 57 Track 2 Equivalent Data and 9F6B Track 2 Data (PAN, separator D,
# expiry, service code, discretionary data, padded with F).
_PAN_TAGS = re.compile(r"(?=(5A|57|9F6B)([0-9A-F]{2}))")
# Outside a tag: a byte-aligned run of 13-19 BCD digits, ended by a track 2 separator (D), an F
# pad, a byte boundary or the end; or 13-19 ASCII digits (3X bytes, as in track 1).
_BCD_RUN = re.compile(r"(?<![0-9])[0-9]{13,19}(?![0-9])")
_ASCII_RUN = re.compile(r"(?:3[0-9]){13,19}")


def _masked_digits(digits: str) -> str | None:
    if 13 <= len(digits) <= 19 and digits.isdigit() and luhn_valid(digits):
        return mask_pan(digits)
    return None


def _tag_spans(nibbles: str) -> list[tuple[int, str]]:
    """(nibble offset, replacement) of the PANs (and track 2 data after the PAN) in tags."""
    spans: list[tuple[int, str]] = []
    for match in _PAN_TAGS.finditer(nibbles):
        start = match.start() + len(match.group(1)) + 2
        value = nibbles[start : start + 2 * int(match.group(2), 16)]
        if match.group(1) == "5A":
            masked = _masked_digits(value.split("F", 1)[0])
            if masked is not None:
                spans.append((start, masked))
            continue
        pan, separator, rest = value.partition("D")
        masked = _masked_digits(pan) if separator else None
        if masked is not None:  # the rest of track 2 is sensitive too (CVV, iCVV inside)
            spans.append((start, masked + "D" + "*" * len(rest.rstrip("F"))))
    return spans


def _loose_spans(nibbles: str) -> list[tuple[int, str]]:
    """(nibble offset, replacement) of byte-aligned BCD or ASCII PANs outside any tag."""
    spans: list[tuple[int, str]] = []
    for match in _BCD_RUN.finditer(nibbles):
        start, end = match.start(), match.end()
        if nibbles[start - 2 : start] in ("5A", "57") or nibbles[start - 4 : start] == "9F6B":
            continue  # a run from a PAN tag's length byte: the tag's value was checked above
        aligned_end = end % 2 == 0 or nibbles[end : end + 1] in ("D", "F")
        masked = _masked_digits(match.group(0))
        if start % 2 == 0 and aligned_end and masked is not None:
            spans.append((start, masked))
    for match in _ASCII_RUN.finditer(nibbles):
        if match.start() % 2:
            continue
        masked = _masked_digits(match.group(0)[1::2])
        if masked is not None:  # a masked digit's byte is masked whole
            spans.append((match.start(), "".join("**" if m == "*" else f"3{m}" for m in masked)))
    return spans


def _redact_run(match: re.Match[str]) -> str:
    run = match.group(0)
    where = [i for i, char in enumerate(run) if char not in " :"]
    nibbles = "".join(run[i] for i in where).upper()
    spans = _tag_spans(nibbles) + _loose_spans(nibbles)
    if not spans:
        return run
    chars = list(run)
    for start, replacement in spans:
        for offset, char in enumerate(replacement[: len(where) - start]):
            if char == "*":
                chars[where[start + offset]] = "*"
    return "".join(chars)


def redact_hex_pans(text: str) -> str:
    """Mask the PANs inside hex strings: in tags 5A, 57 and 9F6B (with the rest of track 2),
    and byte-aligned BCD or ASCII digit runs of a Luhn-valid PAN's length. Hex that holds no
    Luhn-valid PAN is left as it is."""
    return _HEX_RUN.sub(_redact_run, text)
