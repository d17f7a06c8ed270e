"""The password policy: 8-128 characters, no composition rules, not a common password.

Following NIST SP 800-63B: length over composition, and a blocklist of passwords that attackers
try first. `common_passwords.txt` holds the 10,000 most common passwords of 8 characters or more
(shorter ones fail the length rule anyway), in rank order, taken from the password frequency
list that zxcvbn 4.5.0 (MIT) ships, itself from leaked-password corpora. Comparison ignores case.
Passwords are never stripped: a space is a character like any other.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

MIN_LENGTH = 8
MAX_LENGTH = 128


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    text = files(__package__).joinpath("common_passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


def is_common(password: str) -> bool:
    return password.lower() in common_passwords()


def policy_problem(password: str) -> str | None:
    """Why `password` is refused, or None (for callers outside request validation, e.g. CLI)."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        return f"must be {MIN_LENGTH} to {MAX_LENGTH} characters long"
    if is_common(password):
        return "is one of the most common passwords; choose another"
    return None


def _not_common(password: str) -> str:
    if is_common(password):
        raise ValueError("This password is one of the most common ones; choose another")
    return password


NewPassword = Annotated[
    str,
    StringConstraints(strip_whitespace=False, min_length=MIN_LENGTH, max_length=MAX_LENGTH),
    AfterValidator(_not_common),
]
"""A password being set: the whole policy, checked during request validation (422)."""

GivenPassword = Annotated[str, StringConstraints(strip_whitespace=False, max_length=1024)]
"""A password being checked (login, current password): no policy, just a sanity bound."""
