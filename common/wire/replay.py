"""An in-memory replay window, for devices' own checks, tests and as a hub cache.

The rules (docs/protocol.md, "Replay"): an exact copy of an accepted (device, seq) is a
duplicate, acknowledged and dropped; a different envelope with an accepted seq, or a seq older
than the window that was never accepted, is a replay; so is a seq more than 2^20 past the highest
accepted (which would silence the device's genuine reports).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.wire.errors import OpenError, Reason
from common.wire.header import Header

DEFAULT_WINDOW = 65_536
MAX_JUMP = 1 << 20  # the furthest a seq may lead the highest accepted (a device's first: 1..2^20)


@dataclass(slots=True)
class _DeviceWindow:
    highest: int = 0
    seen: dict[int, bytes] = field(default_factory=dict)


def judge(seq: int, known: bytes | None, digest: bytes, highest: int, window: int) -> bool:
    """The replay rule, in one place: True for an exact duplicate of an accepted envelope
    (`known` is the digest accepted under this seq, if any), False for a new one; raises
    OpenError(replay) for a different envelope under an accepted seq, or for a seq older than
    the window that was never accepted."""
    if known is not None:
        if known == digest:
            return True
        raise OpenError(Reason.REPLAY, f"seq {seq} was already used by another envelope")
    if seq <= highest - window:
        raise OpenError(Reason.REPLAY, f"seq {seq} is older than the replay window")
    if seq > highest + MAX_JUMP:
        # One accepted envelope with seq 2^63-1 would make every later genuine report a replay:
        # a device counts up from 1 and skips at most a block per crash, never this far.
        raise OpenError(
            Reason.REPLAY, f"seq {seq} jumps more than 2^20 past the highest accepted ({highest})"
        )
    return False


class ReplayWindow:
    """Remembers the last `window` sequence numbers accepted per device."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        self.window = window
        self._devices: dict[tuple[str, str], _DeviceWindow] = {}

    def check(self, header: Header, digest: bytes) -> bool:
        """True for an exact duplicate; raise OpenError(replay) for a replay; False if new."""
        state = self._devices.get((header.site, header.device))
        if state is None:
            return judge(header.seq, None, digest, 0, self.window)
        return judge(header.seq, state.seen.get(header.seq), digest, state.highest, self.window)

    def accept(self, header: Header, digest: bytes) -> None:
        """Record an envelope as stored (call after the store commits)."""
        state = self._devices.setdefault((header.site, header.device), _DeviceWindow())
        state.seen[header.seq] = digest
        if header.seq > state.highest:
            state.highest = header.seq
            floor = state.highest - self.window
            if len(state.seen) > self.window:
                state.seen = {s: d for s, d in state.seen.items() if s > floor}
