"""serve: the hub service (ingest, rules, notifications), until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from common.sdnotify import Notifier, Pinger
from hub.config import load_config
from hub.daemon import HubService
from hub.errors import HubError
from hub.ingest.settings import load_ingest_settings
from hub.web.server import WebServer

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add serve to the hedgerow-hub parser."""
    p = sub.add_parser(
        "serve",
        help="run the hub: ingest, rules, notifications (SIGHUP reloads keys, rules, contacts)",
    )
    p.add_argument("--config", required=True, type=Path)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """hedgerow-hub serve: SIGTERM/SIGINT stop cleanly, SIGHUP reloads the keys, the rules and
    the contacts."""
    config = load_config(args.config)
    stop = threading.Event()
    reload = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        reload.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    service = HubService(config)
    notifier = Notifier()
    # Refuses unreadable TLS files before anything starts.
    web = WebServer(config) if config.web.enabled else None
    try:
        service.start()
        if web is not None:
            web.start()
            web.wait_ready(30)  # logs, never raises: ingest goes on without the dashboard
        if service.wait_ready(30):
            log.info("hedgerow-hub serving (site %s, %s)", config.site, config.mqtt.url)
            notifier.ready(f"serving site {config.site}")
        else:
            log.warning("not yet connected to %s; retrying in the background", config.mqtt.url)
            notifier.ready(f"not yet connected to {config.mqtt.url}; retrying")
        # The watchdog is pinged from this loop, after its checks: a wedged loop (or a reload
        # that hangs) stops the pings; a dead ingest thread raises below before the ping.
        pinger = Pinger(notifier, time.monotonic())
        stall_s = load_ingest_settings(config).stall_s
        warned = False
        while not stop.wait(0.5):
            if reload.is_set():
                reload.clear()
                notifier.status("reloading keys, rules and contacts")
                service.reload()
                notifier.status(f"serving site {config.site}")
            if not service.healthy:
                raise HubError("the ingest thread stopped unexpectedly")
            if web is not None:
                web.check_health()
            now = time.monotonic()
            stalled = service.stalled_s(now)
            if stalled < stall_s:
                pinger.due(now)
                warned = False
            elif not warned:
                # No ping: systemd's watchdog restarts the hub (WatchdogSec=30s).
                log.error(
                    "ingest has not gone round for %.0f s (a hung commit, rules tick or "
                    "database call): the watchdog is no longer pinged",
                    stalled,
                )
                warned = True
    finally:
        notifier.stopping()
        if web is not None:
            web.stop()
        service.stop()
        log.info("hedgerow-hub stopped")
    return 0
