"""Which adapter this machine needs: systemd-resolved where it runs, else /etc/resolv.conf."""

from __future__ import annotations

import logging
from pathlib import Path

from agent.laptop.resolver.base import ResolverError, SystemResolver
from agent.laptop.resolver.resolvconf import ResolvConf
from agent.laptop.resolver.resolved import Runner, SystemdResolved, run_command

log = logging.getLogger(__name__)


def choose(
    state_dir: Path,
    *,
    resolv_conf: Path = Path("/etc/resolv.conf"),
    runner: Runner = run_command,
    resolved_dir: Path = Path("/run/systemd/resolve"),
) -> SystemResolver:
    """systemd-resolved when its runtime directory exists and resolvectl answers, else
    resolv.conf. Both keep their state in `state_dir`."""
    if resolved_dir.is_dir():
        try:
            runner(["resolvectl", "dns"])
        except ResolverError as exc:
            log.info("systemd-resolved is not answering (%s): using %s", exc, resolv_conf)
        else:
            return SystemdResolved(state_dir, runner=runner, resolv_conf=resolv_conf)
    return ResolvConf(resolv_conf, state_dir=state_dir)
