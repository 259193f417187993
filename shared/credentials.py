"""Credentials as the settings carry them, and the production guard over them.

`BUREAU_SERVICE_TOKENS` (`name=secret,...`) and `BUREAU_PRINCIPALS`
(`role:name[:issuer]=secret,...`) give each entry either a token, which the workload presents
or checks, or a verifier `sha256:<64 hex>`, the SHA-256 of a token it only checks
(shared/auth.py compares digests), so a workload holds its own token and the verifiers of the
principals it admits, never their tokens.

Nothing here ever puts a value, or any part of one, into a message: problems name the setting
and the entry (`BUREAU_PRINCIPALS operator:olga`), which are not secret.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

VERIFIER_PREFIX = "sha256:"
_VERIFIER = re.compile(r"^sha256:[0-9a-f]{64}$")
MIN_SECRET_CHARS = 32
# Estimated bits (length x Shannon entropy of its characters): a 32-character hex string drawn
# at random carries ~120 (rarely under 90); one or two characters repeated fall well below.
MIN_SECRET_BITS = 80.0
MIN_BITS_PER_CHAR = 2.5
REPEAT = 6  # a six-character piece seen twice: a pattern (by chance in 1 of ~10^4 hex tokens)
# "dev" as a word: what every development default carries (intake-dev-token, bureau-dev, ...).
_EXPORT = re.compile(r"^export ([A-Z0-9_]+)='([^']*)'$")
_DEV_MARKER = re.compile(r"(?i)(?:^|[^a-z0-9])dev(?:[^a-z0-9]|$)")


@dataclass(frozen=True)
class Credential:
    """One configured secret: `setting` (BUREAU_*) and `entry` name where it came from."""

    setting: str
    entry: str
    value: str

    @property
    def label(self) -> str:
        return f"{self.setting} {self.entry}" if self.entry else self.setting

    @property
    def is_verifier(self) -> bool:
        return self.value.startswith(VERIFIER_PREFIX)

    def digest(self) -> str:
        return secret_digest(self.value)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def verifier_of(token: str) -> str:
    """What a workload that only checks this token is given instead of it."""
    return VERIFIER_PREFIX + token_digest(token)


def secret_digest(value: str) -> str:
    """The SHA-256 (hex) a token or a verifier stands for. ValueError: a malformed verifier."""
    if not value.startswith(VERIFIER_PREFIX):
        return token_digest(value)
    if not _VERIFIER.match(value):
        raise ValueError("a verifier is sha256: followed by 64 lowercase hex digits")
    return value.removeprefix(VERIFIER_PREFIX)


def split_entries(spec: str) -> list[tuple[str, str]]:
    """`name=value,...` as (name, value) pairs; an entry without `=` has an empty value."""
    pairs = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, value = item.partition("=")
        pairs.append((name.strip(), value.strip()))
    return pairs


def read_exports(path: Path) -> dict[str, str]:
    """The `export NAME='value'` lines of a creds file, as deploy/local/tokens.py writes them."""
    found = {}
    for line in path.read_text().splitlines():
        if match := _EXPORT.match(line.strip()):
            found[match.group(1)] = match.group(2)
    return found


def people_tokens(run_dir: Path) -> dict[str, str]:
    """The local stack's people (`role:name` -> their clear token) as deploy/local/tokens.py
    made them for the demo, tests and humans: `<run_dir>/creds/tools.tokens.env`."""
    path = run_dir / "creds" / "tools.tokens.env"
    try:
        values = read_exports(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is missing: deploy/local/stack.sh up makes the local stack's tokens"
        ) from None
    return dict(split_entries(values.get("BUREAU_PEOPLE_TOKENS", "")))


def has_dev_marker(value: str) -> bool:
    return bool(_DEV_MARKER.search(value))


def weakness(secret: str) -> str | None:
    """Why a secret is too weak for production, or None. Never quotes the secret."""
    if has_dev_marker(secret):
        return "is a development value"
    if len(secret) < MIN_SECRET_CHARS:
        return f"is shorter than {MIN_SECRET_CHARS} characters"
    counts = Counter(secret)
    per_char = -sum(n / len(secret) * math.log2(n / len(secret)) for n in counts.values())
    if per_char < MIN_BITS_PER_CHAR or per_char * len(secret) < MIN_SECRET_BITS:
        return "has too little entropy (repeated or predictable characters)"
    if _repeats(secret) or _steps(secret) * 2 > len(secret):
        return "has too little entropy (a repeated pattern or a run of characters)"
    return None


def _repeats(secret: str) -> bool:
    """Whether a piece of the secret comes back (`P@ssw0rdP@ssw0rd...`, `abcabcabc...`)."""
    pieces = [secret[i : i + REPEAT] for i in range(len(secret) - REPEAT + 1)]
    return len(set(pieces)) < len(pieces)


def _steps(secret: str) -> int:
    """Neighbours one code point apart (`abcd`, `9876`): keyboard and alphabet runs."""
    return sum(abs(ord(a) - ord(b)) == 1 for a, b in zip(secret, secret[1:], strict=False))


def production_problems(credentials: list[Credential], opaque: frozenset[str]) -> list[str]:
    """What production refuses: weak tokens, development values, one secret in two places.

    `opaque` names settings checked for development values only (a database URL, whose
    password its operator generates and which carries a user name and host).
    """
    problems: list[str] = []
    holders: dict[str, str] = {}
    for credential in credentials:
        if not credential.value:
            problems.append(f"{credential.label} is empty")
            continue
        if credential.setting in opaque:
            if has_dev_marker(credential.value):
                problems.append(f"{credential.label} is a development value")
            continue
        if not credential.is_verifier and (reason := weakness(credential.value)):
            problems.append(f"{credential.label} {reason}")
        try:
            digest = credential.digest()
        except ValueError as exc:
            problems.append(f"{credential.label}: {exc}")
            continue
        if digest in holders:
            problems.append(f"{credential.label} holds the same secret as {holders[digest]}")
        else:
            holders[digest] = credential.label
    return problems
