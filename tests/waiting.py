"""Waiting in tests: poll for an event, with a generous bound that only turns a hang into a
failure. No timing is ever asserted; a test that must show something did *not* happen waits for
a later event that proves the moment has passed (see tests/test_dns_refresh.py)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str | Callable[[], str] = "condition",
) -> None:
    """Call `predicate` every `interval` seconds until it returns something true; raise
    AssertionError naming `what` if it is still false once `timeout` seconds have passed
    (`what` may be a function, called then: it shows the state at the failure, not before)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            shown = what() if callable(what) else what
            raise AssertionError(f"gave up after {timeout}s waiting for {shown}")
        time.sleep(interval)
