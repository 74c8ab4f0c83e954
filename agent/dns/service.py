"""hedgerow-dns as a running service: load config, lists and keys, serve, reload on SIGHUP
(all-or-nothing: a bad new config or list leaves the old one serving), stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.dns.cache import AnswerCache
from agent.dns.catalog import load_index
from agent.dns.chain import Chain, build_chain
from agent.dns.config import DnsConfig, load_config
from agent.dns.groups import CategoryLookup, wall_clock
from agent.dns.lists.model import ListStats, is_url
from agent.dns.metrics import Metrics
from agent.dns.querylog import QuerySink
from agent.dns.resolvers.upstream import Forwarder
from agent.dns.server import DnsServer
from agent.dns.upstream import Upstreams
from agent.errors import HedgerowError
from agent.identity import Identity, IdentityError
from agent.wire.signing import SigningKey

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Loaded:
    """Everything read from disk for one generation of the configuration."""

    config: DnsConfig
    index: CategoryLookup
    stats: tuple[ListStats, ...]
    beacon_key: SigningKey | None


def load_all(path: Path) -> Loaded:
    """Read the config, every list and the beacon key; raises HedgerowError on any problem."""
    config = load_config(path)
    index, stats = load_index(config)
    return Loaded(config, index, tuple(stats), beacon_key_of(config))


def beacon_key_of(config: DnsConfig) -> SigningKey | None:
    """The site beacon key from the identity directory, or None (logged) if there is none."""
    if config.beacon is None:
        return None
    try:
        identity = Identity.load(config.beacon.identity)
    except IdentityError as exc:
        log.warning("beacon not answered: %s", exc)
        return None
    if identity.beacon_key is None:
        log.warning("beacon not answered: %s holds no beacon key", config.beacon.identity)
    return identity.beacon_key


class Service:
    """The server plus what it was built from; reload() swaps in a new chain atomically."""

    def __init__(
        self,
        path: Path,
        *,
        sinks: Sequence[QuerySink] = (),
        clock: Callable[[], float] = wall_clock,
    ) -> None:
        self.path = Path(path)
        self.sinks = tuple(sinks)
        self.clock = clock
        self.loaded: Loaded | None = None
        self.server: DnsServer | None = None
        self.metrics: Metrics | None = None
        self.cache: AnswerCache | None = None
        self._forwarder: Forwarder | None = None
        self._reloading: asyncio.Lock | None = None
        self._refresh: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load everything and start listening; raises HedgerowError or OSError."""
        loaded = load_all(self.path)
        config = loaded.config
        self.metrics = Metrics()
        self.cache = AnswerCache(config.cache.max_entries, config.cache.max_ttl_s)
        cache = self.cache
        self.metrics.watch_cache(lambda: (cache.hits, cache.misses, len(cache)))
        for sink in self.sinks:
            counters = getattr(sink, "counters", None)
            if callable(counters):
                self.metrics.watch(counters)
        chain = self._build(loaded)
        self.server = DnsServer(
            chain,
            sinks=self.sinks,
            metrics=self.metrics,
            max_udp_size=config.server.max_udp_size,
            tcp_idle_timeout_s=config.server.tcp_idle_timeout_s,
            max_tcp_connections=config.server.max_tcp_connections,
        )
        self.loaded = loaded
        await self.server.start(config.server.listen)
        if config.server.metrics is not None:
            self.metrics.serve(config.server.metrics)
        self._reloading = asyncio.Lock()
        self._schedule_refresh(config)
        self._freeze()
        log.info("serving %d lists, %d groups", len(loaded.stats), len(config.groups))

    def _build(self, loaded: Loaded) -> Chain:
        assert self.cache is not None and self.metrics is not None
        config = loaded.config
        old = self._forwarder
        if old is None or old.upstreams.config != config.upstream:
            upstreams = Upstreams(config.upstream, self.metrics.upstream_error)
            self._forwarder = Forwarder(self.cache, upstreams)
        self.cache.resize(config.cache.max_entries, config.cache.max_ttl_s)
        assert self._forwarder is not None
        return build_chain(
            config, loaded.index, self._forwarder, clock=self.clock, beacon_key=loaded.beacon_key
        )

    @staticmethod
    def _freeze() -> None:
        # Lists and tables are long-lived: keep them out of every future GC pass.
        gc.collect()
        gc.freeze()

    async def reload(self) -> bool:
        """Re-read config and lists off the event loop; swap only if everything loaded."""
        assert self._reloading is not None and self.server is not None and self.loaded
        async with self._reloading:
            loop = asyncio.get_running_loop()
            try:
                loaded = await loop.run_in_executor(None, load_all, self.path)
            except HedgerowError as exc:
                log.error("reload refused, still serving the previous configuration: %s", exc)
                return False
            if loaded.config.server.listen != self.loaded.config.server.listen:
                log.warning("listen addresses changed: that takes a restart, not a reload")
            self.server.chain = self._build(loaded)
            self.loaded = loaded
            self._schedule_refresh(loaded.config)
            self._freeze()
            log.info("reloaded: %d lists, %d groups", len(loaded.stats), len(loaded.config.groups))
            return True

    def _schedule_refresh(self, config: DnsConfig) -> None:
        hours = [spec.refresh_h for spec in config.lists if is_url(spec.source)]
        if self._refresh is not None:
            self._refresh.cancel()
            self._refresh = None
        if hours:
            self._refresh = asyncio.ensure_future(self._refresh_after(min(hours) * 3600))

    async def _refresh_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._refresh = None
        await self.reload()

    async def stop(self) -> None:
        """Stop serving and release everything we started."""
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
            self._refresh = None
        if self.server is not None:
            await self.server.stop()
        if self.metrics is not None:
            self.metrics.close()
