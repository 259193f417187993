"""PAN helpers: Luhn check, masking, and the redaction every log line goes through."""

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
    for digit in "0123456789":
        if luhn_valid(partial + digit):
            return digit
    raise ValueError("no Luhn digit")  # unreachable for digit strings


def mask_pan(pan: str) -> str:
    """PCI DSS display masking: first six and last four digits at most."""
    if len(pan) < 13:
        raise ValueError("a PAN has at least 13 digits")
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def redact_pans(text: str) -> str:
    """Mask every digit run that passes Luhn and looks like a PAN."""

    def _mask(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group(0))
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return mask_pan(digits)
        return match.group(0)

    return _PAN_CANDIDATE.sub(_mask, text)
