"""ActivitySampler: what the laptop does, sampled every ~10 s and summarised per window."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence

from agent.laptop.activity import host
from agent.laptop.activity.connections import connection_findings
from agent.laptop.activity.findings import BypassFinding, FindingGate, allowed_set
from agent.laptop.activity.interfaces import InterfaceWatch
from agent.laptop.activity.presence import AwakeClock, Presence
from agent.laptop.activity.processes import ProcessWatch, app_name

log = logging.getLogger(__name__)

# Active time is counted between samples; a gap longer than this (the service stalled, or
# window() called without samples) counts only this much, not the whole gap.
MAX_ACTIVE_STEP_S = 30.0


class ActivitySampler:
    """Samples processes, connections, interfaces and the user; returns new bypass findings
    from `sample()` and the window's summary fields from `window()`. Not thread-safe: call it
    from one thread (the service's)."""

    def __init__(
        self,
        *,
        flagged_apps: Sequence[str],
        allowed_dns: Callable[[], Collection[str]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`flagged_apps`: process names to flag (agent.laptop.data.flagged_apps() by default in
        the service); `allowed_dns`: addresses DNS may go to (our filter, the Pi, our upstreams),
        asked at each sample; `clock`: wall time, for de-duplication and terminal idleness."""
        self._flagged = frozenset(app_name(n) for n in flagged_apps)
        self._allowed_dns = allowed_dns
        self._clock = clock
        self._gate = FindingGate(clock)
        self._presence = Presence(clock)
        self._awake = AwakeClock()
        self._processes = ProcessWatch()
        self._interfaces = InterfaceWatch()
        self._last_step = time.monotonic()
        self._reset_window()
        # Flagged apps already running when the agent starts are reported at the first sample.
        self._pending = [self._flagged_finding(p) for p in self._running_flagged()]

    def _reset_window(self) -> None:
        """Start counting a new window."""
        self._new_names: Counter[str] = Counter()
        self._flagged_counts: Counter[str] = Counter()
        self._tunnels: list[str] = []
        self._active_s = 0.0

    def _running_flagged(self) -> list[host.ProcessStart]:
        """Flagged processes running now (read once, at start)."""
        out = []
        for pid in sorted(host.pids()):
            name = self._processes.name_of(pid)
            if name is not None and app_name(name) in self._flagged:
                start = host.process(pid)
                if start is not None:
                    out.append(start)
        return out

    def _flagged_finding(self, start: host.ProcessStart) -> BypassFinding:
        """The finding for a flagged process."""
        return BypassFinding(
            "flagged_app", "", 0, "", start.name, {"pid": start.pid, "source": "processes"}
        )

    def _step(self) -> list[BypassFinding]:
        """Read processes, interfaces and presence into the window; findings from them."""
        findings: list[BypassFinding] = []
        for start in self._processes.scan():
            self._new_names[start.name] += 1
            if app_name(start.name) in self._flagged:
                self._flagged_counts[start.name] += 1
                findings.append(self._flagged_finding(start))
        for name in self._interfaces.appeared():
            if name not in self._tunnels:
                self._tunnels.append(name)
            findings.append(BypassFinding("tunnel", "", 0, "", None, {"interface": name}))
        now = time.monotonic()
        step, self._last_step = now - self._last_step, now
        if self._presence.state()[1]:
            self._active_s += min(step, MAX_ACTIVE_STEP_S)
        return findings

    def sample(self) -> list[BypassFinding]:
        """New bypass findings since the last sample, each reported once per 10 minutes."""
        findings, self._pending = self._pending, []
        findings += self._step()
        allowed = allowed_set(self._allowed_dns())
        findings += connection_findings(
            host.connections(), allowed=allowed, name_of=self._processes.name_of
        )
        return self._gate.admit(findings)

    def window(self, *, counts_only: bool) -> dict[str, object]:
        """The summary fields since the last call (the package docstring's table), then reset."""
        # Findings found now are kept for the next sample(), not lost.
        self._pending += self._step()
        awake_s, _ = self._awake.lap()
        sessions = self._presence.users()
        fields: dict[str, object] = {}
        if not counts_only and sessions:
            fields["user"] = sessions[0].name
        fields["users"] = len({s.name for s in sessions})
        fields["awake_s"] = round(awake_s)
        fields["active_s"] = round(min(self._active_s, awake_s))
        if counts_only:
            fields["processes_new_count"] = sum(self._new_names.values())
        else:
            fields["processes_new"] = dict(sorted(self._new_names.items()))
        fields["flagged_apps"] = [
            {"name": name, "count": count} for name, count in sorted(self._flagged_counts.items())
        ]
        fields["tunnels"] = list(self._tunnels)
        fields["interfaces"] = self._interfaces.deltas()
        self._reset_window()
        return fields

    def user_state(self) -> tuple[bool, bool]:
        """(a user is logged in, that user is active now)."""
        return self._presence.state()
