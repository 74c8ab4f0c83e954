"""Password hashing: Argon2id from argon2-cffi, the only module that imports it.

Hashing is memory-hard on purpose (64 MiB each), so at most two run at once: a burst of logins
waits its turn instead of exhausting the hub's memory and CPU.
"""

from __future__ import annotations

import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from hub.errors import HubError

MIN_LENGTH = 12  # NCSC: length, not composition rules
MAX_LENGTH = 1024  # bounds the work one attempt can ask for
_HASHER = PasswordHasher()  # Argon2id, RFC 9106 low-memory profile (t=3, m=64 MiB, p=4)
_SLOTS = threading.BoundedSemaphore(2)
# Verified when the account does not exist, so an unknown name costs the same time as a
# wrong password and does not tell who has an account.
_DUMMY = _HASHER.hash("hedgerow: no such account")


class PasswordError(HubError):
    """A new password is not acceptable."""


def check_new(password: str) -> None:
    """Raise PasswordError unless `password` is acceptable as a new password."""
    if len(password) < MIN_LENGTH:
        raise PasswordError(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordError(f"a password may have at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    """The Argon2id PHC string of a new password (checked with check_new first)."""
    check_new(password)
    with _SLOTS:
        return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches the stored hash; None (no such account) never matches but
    costs the same."""
    if len(password) > MAX_LENGTH:
        return False
    with _SLOTS:
        try:
            return _HASHER.verify(stored or _DUMMY, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


def needs_rehash(stored: str) -> bool:
    """Whether a stored hash was made with weaker parameters than today's."""
    return _HASHER.check_needs_rehash(stored)
