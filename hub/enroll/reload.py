"""Telling Mosquitto to reread the broker files: the optional [enroll] broker_reload command.

The command is an argv list run without a shell, with a timeout. A failure is logged and
returned, never raised: the enrolment or revocation that rewrote the files stands, and
Mosquitto picks up the accounts at its next reload (docs/enrolment.md).
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

STDERR_TAIL = 300  # characters of the command's stderr kept for the report


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What running broker_reload came to: ok, or why not ("exit status 1: ...")."""

    command: tuple[str, ...]
    ok: bool
    detail: str

    def describe(self) -> str:
        """One line for command output and logs."""
        shown = shlex.join(self.command)
        if self.ok:
            return f"broker reloaded ({shown})"
        return (
            f"broker_reload ({shown}) failed: {self.detail}; Mosquitto keeps its old accounts "
            "until it reloads"
        )


def run_reload(command: Sequence[str], timeout_s: float) -> ReloadOutcome:
    """Run the reload command (no shell, stdin closed, killed after `timeout_s`); log how it
    went at INFO, or at ERROR if it failed."""
    outcome = _run(tuple(command), timeout_s)
    if outcome.ok:
        log.info("%s", outcome.describe())
    else:
        log.error("%s", outcome.describe())
    return outcome


def _run(argv: tuple[str, ...], timeout_s: float) -> ReloadOutcome:
    if not argv:
        return ReloadOutcome(argv, False, "no command to run")
    # stderr goes to a file, not a pipe, so a grandchild that keeps it open cannot make us
    # wait past the timeout.
    with tempfile.TemporaryFile() as err:
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return ReloadOutcome(argv, False, f"timed out after {timeout_s:g} s (killed)")
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            return ReloadOutcome(argv, False, f"cannot run {argv[0]!r}: {reason}")
        if done.returncode == 0:
            return ReloadOutcome(argv, True, "exit status 0")
        err.seek(0)
        tail = err.read().decode("utf-8", "replace").strip()[-STDERR_TAIL:]
    if done.returncode < 0:
        status = f"killed by signal {-done.returncode}"
    else:
        status = f"exit status {done.returncode}"
    return ReloadOutcome(argv, False, f"{status}: {tail}" if tail else status)
