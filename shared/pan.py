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
    """Mask every digit run that passes Luhn and looks like a PAN."""

    def _mask(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group(0))
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return mask_pan(digits)
        return match.group(0)

    return _PAN_CANDIDATE.sub(_mask, text)
