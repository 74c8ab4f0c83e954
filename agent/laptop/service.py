"""hedgerow-agent run: the laptop agent as a service.

One asyncio loop owns the state. Around it:
- the local filter (localfilter.py) on [filter] listen, and the OS pointed at it (resolver/);
- the site check (site/): a signed beacon proves "on site"; anything else is off site; every
  [site] check_interval_s and at once on a network change (netlink);
- the tamper watch: a name only our filter answers, asked through the OS's resolver;
- activity (activity/) and the sniffer child (sniffer/): bypass findings at once, the rest in
  the window's summary;
- the publisher (agent/report): sealed, spooled, receipted; urgent events first; the policy
  topics followed (applied only if signed and newer, all at once, else the old one stays);
- the control socket (control.py) for status, report-concern and flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable
from typing import Any

from agent.filter.querylog import QueryRecord
from agent.laptop.config import AgentConfig
from agent.laptop.control import ControlServer
from agent.laptop.dns_tally import DnsTally
from agent.laptop.events import Events
from agent.laptop.localfilter import LocalFilter, Mode
from agent.laptop.policy_follow import PolicyRefused, check_policy, keep, kept_policy
from agent.laptop.resolver.resolvconf import nameservers
from agent.laptop.site.beacon import BeaconOutcome, BeaconProber, SiteState
from agent.laptop.site.fingerprint import links_up
from agent.laptop.site_tracker import SiteTracker
from agent.laptop.status import StatusBoard
from agent.report import Publisher
from agent.report.mqtt import Message
from common import heap, sdnotify
from common.errors import HedgerowError
from common.identity import Identity
from common.wire import topics
from common.wire.header import Kind
from common.wire.keyfile import write_atomic

log = logging.getLogger(__name__)

SOFTWARE = "hedgerow-agent 0.1.0"
SAMPLE_S = 10.0  # activity and bypass baseline
TAMPER_S = 30.0  # the OS resolver checked
STATUS_S = 5.0  # status file rewritten
CAPTIVE_PROBES = 2  # upstream probes that must all fail before a captive spell
CAPTIVE_RETRY_S = 1.0
TRIM_EVERY = 12  # status rounds between giving freed heap back (common/heap.py)


class AgentService:
    """Everything `hedgerow-agent run` runs; start(), then wait on stopped, then stop()."""

    def __init__(self, config: AgentConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.identity = Identity.load(config.identity_dir)
        self.started = time.monotonic()
        self.stopped = asyncio.Event()
        self.self_check_key = secrets.token_bytes(32)
        self.policy = kept_policy(config.identity_dir)
        self.site = SiteTracker(clock)
        self.events = Events(lambda: self.publisher, clock)
        self.health: dict[str, str] = {}
        self.tally = DnsTally(urgent=self._blocked_now)
        self.filter = LocalFilter(config, (self.tally,), self.self_check_key)
        self.status = StatusBoard(config.status_file)
        self.resolver: Any = None
        self.tamper: Any = None
        self.netwatch: Any = None
        self.sampler: Any = None
        self.sniffer: Any = None
        self.publisher: Publisher | None = None
        self.control = ControlServer(
            config.control_socket,
            {"status": self._op_status, "concern": self._op_concern, "flush": self._op_flush},
        )
        self._window_start_ms = self.site.since_ms
        self._captive_until = 0.0
        self._captive_cooldown = 0.0
        self._check_now = asyncio.Event()
        self._sniffed_interfaces = frozenset(links_up())  # what the sniffer child was started on
        self._sniffer_restarting = False
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # Start and stop.

    async def start(self) -> None:
        """Bring every part up; a part that cannot start is a health problem, except the
        filter itself (OSError: its address cannot be bound)."""
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        if cfg.filter.manage_system_resolver:
            from agent.laptop.resolver.choose import choose

            self.resolver = choose(cfg.state_dir / "resolver", resolv_conf=cfg.filter.resolv_conf)
            if self.resolver.cleanup_leftovers():
                log.warning("removed a previous run's DNS settings (it did not stop cleanly)")
        await self._loop.run_in_executor(None, self.filter.bootstrap_upstreams)
        await self.filter.start(self.policy)
        if self.resolver is not None:
            self._apply_resolver()
            from agent.laptop.resolver.tamper import TamperWatch

            self.tamper = TamperWatch(self.self_check_key, self.resolver)
        self.publisher = Publisher.open(
            cfg.identity_dir,
            cfg.spool_dir,
            self._heartbeat,
            max_spool_bytes=cfg.report.max_spool_mb * 1024 * 1024,
            max_age_s=cfg.report.max_age_days * 86_400.0,
            broker_url=cfg.hub_url,
            subscriptions=(
                topics.device_policy(self.identity.site, self.identity.device),
                topics.site_policy(self.identity.site),
            ),
            on_message=self._policy_message,
            max_backoff_s=30,
        )
        self.publisher.start()
        self._start_watchers()
        await self.control.start()
        self._tasks = [
            asyncio.ensure_future(self._site_loop()),
            asyncio.ensure_future(self._report_loop()),
            asyncio.ensure_future(self._sample_loop()),
            asyncio.ensure_future(self._status_loop()),
        ]
        if self.tamper is not None:
            self._tasks.append(asyncio.ensure_future(self._tamper_loop()))
        # systemd: READY now that the filter answers, then watchdog pings from this loop.
        self._tasks.append(
            asyncio.ensure_future(sdnotify.ready_then_ping(sdnotify.Notifier(), "running"))
        )
        log.info(
            "running: device %s/%s, group %s", self.identity.site, self.identity.device, self.group
        )

    def _start_watchers(self) -> None:
        from agent.laptop.activity.sampler import ActivitySampler
        from agent.laptop.site.netwatch import NetWatcher

        self.netwatch = NetWatcher(self._network_changed)
        flagged = self.policy.flagged_apps if self.policy is not None else None
        self.sampler = ActivitySampler(
            flagged_apps=flagged if flagged is not None else _builtin_flagged(),
            allowed_dns=self._allowed_dns,
        )
        if self.config.sniffer.enabled:
            from agent.laptop.sniffer.supervisor import Sniffer

            self.sniffer = Sniffer(
                self._sniffed,
                allowed_dns=self._allowed_dns,
                interface=self.config.sniffer.interface,
            )
            self.sniffer.start()
        self._tasks.append(asyncio.ensure_future(self.netwatch.start()))

    async def stop(self) -> None:
        """Undo what we changed in the OS, send the last summary and a clean-stop heartbeat."""
        sdnotify.Notifier().stopping()  # systemd: a clean stop has begun
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.netwatch is not None:
            with contextlib.suppress(Exception):
                await self.netwatch.stop()
        if self.sniffer is not None:
            self.sniffer.stop()
        await self.control.stop()
        if self.resolver is not None:
            try:
                self.resolver.restore()
            except Exception:
                log.exception("could not restore the DNS settings")
        if self.publisher is not None:
            self._summarise()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.publisher.stop, 5.0)
        await self.filter.stop()
        self.status.write(self.snapshot(running=False))

    @property
    def group(self) -> str:
        """The group the device filters as."""
        return self.policy.group if self.policy is not None else (self.identity.group or "pupils")

    # Policy.

    def _policy_message(self, message: Message) -> None:
        # On the publisher's thread: hand it to the loop.
        if self._loop is not None and message.payload:
            self._loop.call_soon_threadsafe(
                lambda: self._spawn(self._apply_policy(message.payload))
            )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _apply_policy(self, data: bytes) -> None:
        """A signed policy from the hub: applied only if it verifies, is newer and builds, and
        only then kept; otherwise the old one stays (logged, and a health problem)."""
        current = self.policy.version if self.policy is not None else 0
        try:
            checked = check_policy(self.config.identity_dir, data, current)
            if checked is None:
                return
            message, policy = checked
            await self.filter.use_policy(policy)
        except (PolicyRefused, HedgerowError) as exc:
            log.warning("policy not applied, keeping version %d: %s", current, exc)
            self.health["policy"] = str(exc)[:255]
            return
        keep(self.config.identity_dir, data, message)
        self.policy = policy
        self.health.pop("policy", None)
        log.info("policy version %d applied", policy.version)
        self._check_now.set()

    # Where am I.

    def _network_changed(self) -> None:
        self._check_now.set()
        self.filter.network_changed()
        if self.resolver is not None:
            self._apply_resolver()  # NetworkManager rewrites per-link DNS after a switch
        if self.sniffer is not None and self.config.sniffer.interface is None:
            up = frozenset(links_up())
            if up != self._sniffed_interfaces and not self._sniffer_restarting:
                self._sniffed_interfaces = up
                self._sniffer_restarting = True
                self._spawn(self._restart_sniffer())

    async def _restart_sniffer(self) -> None:
        """The sniffer captures the interfaces up when its child starts: when that set
        changes (not on every netlink event: each child is a fresh interpreter importing
        scapy), a new child."""
        sniffer = self.sniffer
        try:
            if sniffer is None:
                return
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, sniffer.stop)
            await loop.run_in_executor(None, sniffer.start)
        finally:
            self._sniffer_restarting = False

    def _beacon_servers(self) -> list[tuple[str, int]]:
        servers: list[tuple[str, int]] = []
        for text in self.config.site.beacon_servers:
            if text == "system":
                servers += self._network_resolvers()
            else:
                host, _, port = text.rpartition(":")
                servers.append((host.strip("[]"), int(port)))
        return list(dict.fromkeys(servers))

    def _network_resolvers(self) -> list[tuple[str, int]]:
        if self.resolver is not None:
            return list(self.resolver.network_resolvers())
        try:  # not managed: the file is the network's as it stands
            content = self.config.filter.resolv_conf.read_bytes()
        except OSError:
            return []
        return [(address, 53) for address in nameservers(content)]

    async def _site_loop(self) -> None:
        while True:
            try:
                await self.check_site()
            except Exception:
                log.exception("site check failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._check_now.wait(), self.config.site.check_interval_s)
            self._check_now.clear()
            await asyncio.sleep(0.2)  # let a burst of network changes settle

    async def check_site(self) -> None:
        """Prove where we are, and forward accordingly."""
        keys = self.policy.beacon_keys if self.policy is not None else ()
        rtt = self.config.site.max_rtt_ms or (self.policy.max_rtt_ms if self.policy else 50.0)
        prober = BeaconProber(self.identity.site, keys, max_rtt_ms=rtt)
        outcome: BeaconOutcome = await prober.probe(self._beacon_servers())
        from agent.laptop.site.network_id import network_identity

        # `iw`/`nmcli` may take a moment: off the loop.
        self.site.network = await asyncio.to_thread(network_identity, self._network_key())
        if outcome.on_site and outcome.server is not None:
            host, _, port = outcome.server.rpartition(":")
            self.filter.go(Mode.ON_SITE, [(host.strip("[]"), int(port))])
            self._enter(SiteState.ON_SITE, outcome.reason)
            return
        now = time.monotonic()
        if self.site.state is SiteState.CAPTIVE and now < self._captive_until:
            return  # captive for at most captive_max_s, then back to the upstreams
        if self.site.state is SiteState.CAPTIVE:
            self._captive_cooldown = now + self.config.filter.captive_max_s
        if now >= self._captive_cooldown and await self._upstreams_down():
            network = self._network_resolvers()
            from agent.filter.spec import UpstreamServer

            plain = [UpstreamServer(h, p, text=f"{h}:{p}") for h, p in network]
            if plain and await self.filter.upstreams_answer(plain):
                self.filter.go(Mode.CAPTIVE, network)
                self._captive_until = now + self.config.filter.captive_max_s
                self._enter(SiteState.CAPTIVE, "upstreams unreachable, network DNS works")
                return
        self.filter.go(Mode.OFF_SITE)
        self._enter(SiteState.OFF_SITE, outcome.reason)

    async def _upstreams_down(self) -> bool:
        """The off-site upstreams unanswered CAPTIVE_PROBES times in a row, CAPTIVE_RETRY_S
        apart: one lost packet on a poor Wi-Fi link is not a captive portal."""
        for attempt in range(CAPTIVE_PROBES):
            if await self.filter.upstreams_answer():
                return False
            if attempt + 1 < CAPTIVE_PROBES:
                await asyncio.sleep(CAPTIVE_RETRY_S)
        return True

    def _enter(self, state: SiteState, reason: str) -> None:
        previous = self.site.enter(state, reason)
        if previous is None:
            return
        logged_in, active = (
            self.sampler.user_state() if self.sampler is not None else (False, False)
        )
        detail: dict[str, Any] = {
            "state": state.value,
            "previous": previous.value,
            "user_logged_in": logged_in,
            "user_active": active,
            "reason": reason[:255],
        }
        if self.site.network:
            detail["network"] = self.site.network
        log.info("site state: %s (was %s): %s", state.value, previous.value, reason)
        self.events.send("site_state", detail, urgent=True)
        self.status.write(self.snapshot())

    def _network_key(self) -> bytes:
        """The device's own key for hashing network identities: kept, so the same network
        hashes the same across restarts, and never leaves the laptop."""
        path = self.config.state_dir / "network-id.key"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            key = secrets.token_bytes(32)
            write_atomic(path, key, 0o600)
            return key

    # Reports.

    def _blocked_now(self, record: QueryRecord) -> None:
        self.events.blocked(
            record,
            client=self._client(),
            location=self.site.location,
            counts_only=self.policy is not None and self.policy.counts_only,
        )

    def _client(self) -> dict[str, Any]:
        client: dict[str, Any] = {"ip": self.config.filter.listen.host, "group": self.group}
        hostname = os.uname().nodename[:255]
        if hostname:
            client["hostname"] = hostname
        return client

    async def _report_loop(self) -> None:
        while True:
            interval = self.config.report.interval_s
            await asyncio.sleep(interval)
            self._summarise()

    def _summarise(self) -> None:
        if self.publisher is None:
            return
        counts_only = self.policy.counts_only if self.policy is not None else False
        now_ms = int(self.clock() * 1000)
        summary: dict[str, Any] = {
            "v": 1,
            "source": "agent",
            "start": self._window_start_ms,
            "end": now_ms,
            "client": self._client(),
            **self.tally.take(counts_only=counts_only),
            "location": self.site.location,
            "policy_version": self.policy.version if self.policy is not None else 0,
            "counts_only": counts_only,
            "site": {"state": self.site.state.value, **self.site.take_seconds()},
        }
        if self.site.network:
            summary["site"]["network"] = self.site.network
        if self.sampler is not None:
            summary["activity"] = self.sampler.window(counts_only=counts_only)
            if not counts_only and "user" in summary["activity"]:
                summary["client"]["user"] = summary["activity"]["user"]
        self._window_start_ms = now_ms
        if self.publisher.offer(Kind.SUMMARY, summary):
            self.events.offered(now_ms)
        self.publisher.offer(Kind.HEARTBEAT, self._heartbeat())

    def _heartbeat(self) -> dict[str, Any]:
        stats = self.publisher.stats() if self.publisher is not None else None
        beat: dict[str, Any] = {
            "v": 1,
            "uptime_s": int(time.monotonic() - self.started),
            "policy_version": self.policy.version if self.policy is not None else 0,
            "location": self.site.location,
            "filter_active": self.filter.problem is None,
            "software": SOFTWARE,
            "site_state": self.site.state.value,
            "health": [f"{k}: {v}"[:255] for k, v in sorted(self._problems().items())][:32],
        }
        if self.resolver is not None:
            with contextlib.suppress(Exception):
                beat["resolver"] = str(self.resolver.current())[:255]
        if stats is not None:
            beat["spool_depth"] = stats.spool_entries
        return beat

    # Watches.

    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_S)
            if self.sampler is None:
                continue
            try:
                findings = await asyncio.get_running_loop().run_in_executor(
                    None, self.sampler.sample
                )
            except Exception:
                log.exception("activity sample failed")
                continue
            for finding in findings:
                self._bypass(finding)

    def _sniffed(self, finding: Any) -> None:
        # On the sniffer's reader thread: hand it to the loop.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._bypass, finding)

    def _bypass(self, finding: Any) -> None:
        self.events.bypass(finding)

    def _allowed_dns(self) -> list[str]:
        allowed = [self.config.filter.listen.host, "127.0.0.53"]
        allowed += [s.host for s in self.filter.upstreams]  # our own DoT is no bypass
        if self.site.state is SiteState.ON_SITE:
            allowed += [h for h, _ in self._beacon_servers()]
        return allowed

    def _apply_resolver(self) -> None:
        listen = self.config.filter.listen
        try:
            self.resolver.apply(listen.host, listen.port)
            self.health.pop("resolver", None)
        except Exception as exc:
            log.error("cannot point the system at the local filter: %s", exc)
            self.health["resolver"] = f"cannot point the system at the filter: {exc}"

    async def _tamper_loop(self) -> None:
        while True:
            await asyncio.sleep(TAMPER_S)
            await self.check_tamper()

    async def check_tamper(self) -> bool:
        """True if the OS still asks our filter; else restore it and send a tamper event."""
        if self.tamper is None:
            return True
        result = await self.tamper.check()
        if result.ok:
            return True
        listen = self.config.filter.listen
        self._apply_resolver()
        restored = (await self.tamper.check()).ok
        log.warning(
            "the system's DNS was changed behind our back (%s): restored=%s", result.seen, restored
        )
        self.events.send(
            "tamper",
            {
                "what": "resolver_changed",
                "from": f"{listen.host}:{listen.port}",
                "to": str(result.seen)[:1024],
                "restored": restored,
            },
            urgent=True,
        )
        return False

    async def _status_loop(self) -> None:
        rounds = 0
        while True:
            self.status.write(self.snapshot())
            self.events.health(self._problems())
            if rounds % TRIM_EVERY == 1:  # the first just after start-up, then every minute
                heap.trim()
            rounds += 1
            await asyncio.sleep(STATUS_S)

    def _problems(self) -> dict[str, str]:
        problems = dict(self.health)
        if self.sniffer is not None and self.sniffer.state != "running":
            problems["sniffer"] = str(self.sniffer.state)
        if self.netwatch is not None and getattr(self.netwatch, "health", None):
            problems["netlink"] = str(self.netwatch.health)
        if self.filter.problem:
            problems["filter"] = self.filter.problem
        return problems

    def snapshot(self, *, running: bool = True) -> dict[str, Any]:
        """What `status` shows."""
        stats = self.publisher.stats() if self.publisher is not None else None
        oldest = None
        if self.publisher is not None:
            oldest = self.publisher.oldest_unreceipted_ms()
        resolver = "unmanaged"
        if self.resolver is not None:
            try:
                resolver = str(self.resolver.current())
            except Exception as exc:
                resolver = f"unknown ({exc})"
        sniffer = "off in the config"
        if self.sniffer is not None:
            sniffer = str(self.sniffer.state)
        return {
            "running": running,
            "pid": os.getpid(),
            "site": self.identity.site,
            "device": self.identity.device,
            "class": self.identity.device_class,
            "group": self.group,
            "site_state": self.site.state.value,
            "since": self.site.since_ms,
            "reason": self.site.reason,
            "policy_version": self.policy.version if self.policy is not None else 0,
            "filter": self.filter.state,
            "filter_mode": self.filter.mode.value,
            "upstreams": [s.text for s in self.filter.upstreams],
            "system_resolver": resolver,
            "spool_depth": stats.spool_entries if stats else 0,
            "oldest_unreceipted": oldest,
            "last_publish": self.events.last_publish_ms,
            "broker": "connected" if stats and stats.connected else "disconnected",
            "sniffer": sniffer,
            "health": self._problems(),
            "updated": int(self.clock() * 1000),
        }

    # Control socket.

    async def _op_status(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"status": self.snapshot()}

    async def _op_concern(self, request: dict[str, Any]) -> dict[str, Any]:
        text = request.get("text", "")
        if not isinstance(text, str):
            text = str(text)
        detail: dict[str, Any] = {"text": text[:1024]}
        user = request.get("user")
        if isinstance(user, str) and user:
            detail["user"] = user[:255]
        self.events.send("concern", detail, urgent=True, client=self._client())
        return {"sent": True}

    async def _op_flush(self, request: dict[str, Any]) -> dict[str, Any]:
        self._summarise()
        assert self.publisher is not None
        timeout = float(request.get("timeout", 30))
        loop = asyncio.get_running_loop()
        done = await loop.run_in_executor(None, self.publisher.wait_receipted, timeout)
        return {"receipted": done, "spool_depth": self.publisher.stats().spool_entries}


def _builtin_flagged() -> tuple[str, ...]:
    from agent.laptop.data import flagged_apps

    return flagged_apps()


async def run_service(config: AgentConfig) -> int:
    """Run until SIGTERM or SIGINT; the exit status."""
    service = AgentService(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stopped.set)
    try:
        await service.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        await service.stop()
        return 1
    await service.stopped.wait()
    log.info("stopping")
    await service.stop()
    return 0
