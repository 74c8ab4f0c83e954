"""serve: run the filter until SIGTERM; SIGHUP reloads config and lists.

Before anything else, serve makes sure it hashes with the installation's secret seed
(agent/filter/hashseed.py explains why and what it costs): if PYTHONHASHSEED is not that
seed, the process re-executes itself once with it set (same PID, same arguments). Under
systemd, `EnvironmentFile=` with `PYTHONHASHSEED=<the seed>` avoids the second start.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.dns.client_reports import DnsReporter
    from agent.dns.config import ReportConfig
    from agent.dns.config.model import ClientsConfig
    from agent.filter.querylog import QuerySink

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add serve to the hedgerow-dns parser."""
    p = sub.add_parser("serve", help="run the DNS filter (SIGHUP reloads, SIGTERM stops)")
    p.add_argument("--config", required=True, type=Path, help="hedgerow-dns.toml")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until told to stop."""
    import uvloop

    from agent.dns.config import load_config
    from agent.filter.hashseed import pin
    from common import heap

    pin(load_config(args.config).server.list_cache_dir)
    heap.fix_mmap_threshold()  # before the lists are parsed (common/heap.py says why)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(args.config))


def reporter_for(
    report: ReportConfig | None, clients: ClientsConfig | None = None
) -> DnsReporter | None:
    """The sink that seals and sends summaries to the hub, if [report] asks for one."""
    if report is None:
        log.info("no [report] section: nothing is reported to a hub")
        return None
    # Only a reporting filter carries cryptography and paho (about 13 MB resident).
    from agent.dns.client_reports import DnsReporter

    return DnsReporter(
        report.identity,
        report.interval_s,
        report.immediate,
        report.identity / "spool",
        broker_url=report.hub,
        resend_after_s=report.resend_after_s,
        clients=clients,
    )


async def serve(path: Path) -> int:
    """Start the service, wire up signals and wait for SIGTERM or SIGINT."""
    from agent.dns.config import load_config
    from agent.dns.service import Service
    from common.sdnotify import Notifier, ready_then_ping

    # [report] is read once: changing where reports go takes a restart, not a reload.
    # [clients] is read again on SIGHUP (reconfigure below).
    first = load_config(path)
    reporter = reporter_for(first.report, first.clients)
    sinks: list[QuerySink] = [reporter] if reporter is not None else []
    service = Service(path, sinks=sinks)
    try:
        # The lists load before the reporter starts its threads: a cold build may fork
        # helpers only while the process has one thread (lists/split.py). Records offered
        # meanwhile wait in the reporter's queue.
        await service.start()
    except OSError as exc:
        log.error("cannot listen: %s", exc.strerror or exc)  # names the address and its use
        await service.stop()
        return 1
    if reporter is not None:
        reporter.start()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    reloads: set[asyncio.Task[bool]] = set()

    def reload() -> None:
        task = asyncio.ensure_future(service.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)
        task.add_done_callback(names_again)

    def names_again(task: asyncio.Task[bool]) -> None:
        reloaded = not task.cancelled() and task.exception() is None and task.result()
        if reporter is not None and service.loaded is not None and reloaded:
            reporter.reconfigure(service.loaded.config.clients)

    loop.add_signal_handler(signal.SIGHUP, reload)
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    log.info("ready")
    # READY and the watchdog pings from this loop, the one that answers queries (systemd/).
    notifier = Notifier()
    pinging = asyncio.ensure_future(ready_then_ping(notifier, "serving"))
    await stopping.wait()
    log.info("stopping")
    notifier.stopping()
    pinging.cancel()
    for task in list(reloads):
        await task
    await service.stop()
    if reporter is not None:
        reporter.stop()  # flushes the last window and says goodbye (clean-stop heartbeat)
    return 0
