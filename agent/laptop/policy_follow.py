"""Following the hub's signed policies on the laptop: the one kept from before, and each new
one checked (signature, version higher, readable) before the service applies it. Only once the
filter is rebuilt from it is it kept; on any error the previous policy stays."""

from __future__ import annotations

import logging
from pathlib import Path

from agent.laptop.policy_spec import AgentPolicy, PolicyError, read_policy
from agent.policy_client import current_policy, keep_policy, policy_stream, verify_policy
from common.errors import HedgerowError
from common.wire.errors import OpenError, Reason
from common.wire.signed import SignedMessage

log = logging.getLogger(__name__)


class PolicyRefused(HedgerowError):
    """A policy that must not be applied: forged, for someone else, older, or unreadable."""


def kept_policy(identity_dir: Path) -> AgentPolicy | None:
    """The device policy accepted before (verified again), or None: filter with the defaults."""
    try:
        message = current_policy(identity_dir, "device")
    except OpenError as exc:
        log.error("the kept policy does not verify (%s): filtering with the defaults", exc)
        return None
    if message is None:
        return None
    try:
        return read_policy(message.version, message.payload.get("document"))
    except PolicyError as exc:
        log.error("%s: filtering with the defaults", exc)
        return None


def check_policy(
    identity_dir: Path, data: bytes, current: int
) -> tuple[SignedMessage, AgentPolicy] | None:
    """A device policy to apply, or None when there is nothing new (the same version again, as
    a retained message is at every connection; a site policy, kept at once: the device policy
    carries everything the filter needs). Raises PolicyRefused."""
    try:
        stream = policy_stream(data)
        message = verify_policy(identity_dir, data)
    except OpenError as exc:
        if exc.reason is Reason.REPLAY:
            raise PolicyRefused(f"an older policy was refused: {exc}") from exc
        raise PolicyRefused(f"a policy was refused: {exc}") from exc
    if stream == "site":
        keep_policy(identity_dir, data, message)
        return None
    if message.version <= current:
        return None
    try:
        return message, read_policy(message.version, message.payload.get("document"))
    except PolicyError as exc:
        raise PolicyRefused(str(exc)) from exc


def keep(identity_dir: Path, data: bytes, message: SignedMessage) -> None:
    """Keep an applied policy as the last accepted."""
    keep_policy(identity_dir, data, message)
