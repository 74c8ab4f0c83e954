"""hedgerow-dns as a running service: load config, lists and keys, serve, reload on SIGHUP
(all-or-nothing: a bad new config or list leaves the old one serving), stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from urllib.parse import urlsplit

from agent.dns import prebuild
from agent.dns.config import DnsConfig, load_config
from agent.dns.config.categories import category_warnings
from agent.filter.answer_cache import AnswerCache
from agent.filter.catalog import load_index, serving
from agent.filter.chain import Chain, build_chain
from agent.filter.fastpath import FastPath
from agent.filter.groups import CategoryLookup, wall_clock
from agent.filter.lists import CategoryIndex, ListRefresher
from agent.filter.lists.model import ListSpec, ListStats, StaleIndex
from agent.filter.metrics import ListHealth, Metrics
from agent.filter.querylog import QuerySink
from agent.filter.resolvers.forward import Forwarder
from agent.filter.server import DnsServer
from agent.filter.upstreams import Upstreams
from common.errors import HedgerowError

if TYPE_CHECKING:
    from common.wire.signing import SigningKey

log = logging.getLogger(__name__)


REFRESH_CHECK_S = 300.0  # how often to look for lists whose refresh_h has passed


@runtime_checkable
class HealthSink(Protocol):
    """A sink that tells the hub about the filter's own health (a `health` event). Called on
    the event loop, so it must hand the event off without blocking."""

    def report_health(
        self, source: str, category: str, statutory: bool, problem: str, detail: str
    ) -> None:
        """problem: "missing" (a list has no copy: served without it) or "recovered"."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """Everything read from disk for one generation of the configuration."""

    config: DnsConfig
    index: CategoryLookup
    stats: tuple[ListStats, ...]
    beacon_key: SigningKey | None
    refresher: ListRefresher | None = None


def load_all(
    path: Path,
    list_clock: Callable[[], float] = time.time,
    *,
    compiled_only: bool = False,
    save_later: bool = False,
    missing_ok: bool = False,
) -> Loaded:
    """Read the config, every list and the beacon key; raises HedgerowError on any problem
    (StaleIndex if `compiled_only` and the compiled index is not that of the current lists).
    `save_later`, `missing_ok`: see load_index."""
    config = load_config(path)
    refresher, index, stats = load_index(
        config.spec,
        list_clock,
        compiled_only=compiled_only,
        save_later=save_later,
        missing_ok=missing_ok,
    )
    return Loaded(config, index, tuple(stats), beacon_key_of(config), refresher)


def beacon_key_of(config: DnsConfig) -> SigningKey | None:
    """The site beacon key from the identity directory, or None (logged) if there is none."""
    if config.beacon is None:
        return None
    # Only a configured beacon loads the identity (and with it cryptography, ~7 MB resident).
    from common.identity import Identity, IdentityError

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
        list_clock: Callable[[], float] = time.time,
        refresh_check_s: float = REFRESH_CHECK_S,
    ) -> None:
        self.path = Path(path)
        self.sinks = tuple(sinks)
        self.clock = clock
        self.list_clock = list_clock
        self.refresh_check_s = refresh_check_s
        self.loaded: Loaded | None = None
        self.server: DnsServer | None = None
        self.metrics: Metrics | None = None
        self.cache: AnswerCache | None = None
        self._forwarder: Forwarder | None = None
        self._reloading: asyncio.Lock | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._saving: asyncio.Future[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()  # old fast paths being emptied
        self._missing: frozenset[ListSpec] = frozenset()  # lists told to the hub as missing

    async def start(self) -> None:
        """Load everything and start listening; raises HedgerowError or OSError. A list that
        cannot be had at all is left out and retried (docs/dns.md), not an error."""
        loaded = load_all(self.path, self.list_clock, save_later=True, missing_ok=True)
        config = loaded.config
        self.metrics = Metrics()
        self.cache = AnswerCache(config.cache.max_entries, config.cache.max_ttl_s)
        cache = self.cache
        self.metrics.watch_cache(lambda: (cache.hits, cache.misses, len(cache)))
        self.metrics.watch(self._list_counters)
        self.metrics.watch_lists(self._list_health)
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
            max_tcp_per_client=config.server.max_tcp_per_client,
            tcp_message_timeout_s=config.server.tcp_message_timeout_s,
            udp_batch=config.server.udp_batch,
        )
        self.loaded = loaded
        await self.server.start(config.server.listen)
        if loaded.refresher is not None:  # answering already; the compiled index can wait
            self._saving = asyncio.get_running_loop().run_in_executor(
                None, loaded.refresher.save_pending
            )
        if config.server.metrics is not None:
            self.metrics.serve(config.server.metrics)
        self._reloading = asyncio.Lock()
        self._refresh = asyncio.ensure_future(self._refresh_lists())
        self._freeze()
        log.info("serving %d lists, %d groups", len(loaded.stats), len(config.groups))
        _warn_categories(config)
        self._tell_health(loaded)

    def _build(self, loaded: Loaded) -> Chain:
        assert self.cache is not None and self.metrics is not None
        config = loaded.config
        old = self._forwarder
        if old is None or old.upstreams.config != config.upstream:
            upstreams = Upstreams(config.upstream, self.metrics.upstream_error)
            self._forwarder = Forwarder(self.cache, upstreams)
            if old is None:  # the pool's counters, of whichever Upstreams serves now
                self.metrics.watch(self._upstream_counters)
        self.cache.resize(config.cache.max_entries, config.cache.max_ttl_s)
        assert self._forwarder is not None
        # A statutory list with no copy at all: every name blocked but the filter's own.
        missing = loaded.refresher.missing() if loaded.refresher is not None else []
        hub = [urlsplit(config.report.hub).hostname or ""] if config.report is not None else []
        spec, index = serving(config.spec, loaded.index, missing, hub)
        return build_chain(
            spec, index, self._forwarder, clock=self.clock, beacon_key=loaded.beacon_key
        )

    @staticmethod
    def _freeze() -> None:
        # At start: what was loaded is long-lived; keep it out of every future GC pass.
        gc.collect()
        gc.freeze()

    def _swap(self, loaded: Loaded) -> None:
        """Serve a new generation. The old fast path's memos are emptied a slice at a time
        (_retire). No GC pass here: a full one held the loop 4-14 ms with nothing to collect,
        and what a reload makes is few objects (the new index is arrays, which GC never
        visits)."""
        assert self.server is not None
        old = self.server.chain.fast
        self.server.chain = self._build(loaded)
        self.loaded = loaded
        task = asyncio.ensure_future(_retire(old))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def reload(self) -> bool:
        """Re-read config and lists off the event loop (the lists parsed in a child process
        when the hash seed is pinned: agent/dns/prebuild.py); swap only if everything loaded."""
        assert self._reloading is not None and self.server is not None and self.loaded
        async with self._reloading:
            try:
                loaded = await self._load_for_reload()
            except HedgerowError as exc:
                log.error("reload refused, still serving the previous configuration: %s", exc)
                return False
            if loaded.config.server.listen != self.loaded.config.server.listen:
                log.warning("listen addresses changed: that takes a restart, not a reload")
            self._swap(loaded)
            log.info("reloaded: %d lists, %d groups", len(loaded.stats), len(loaded.config.groups))
            _warn_categories(loaded.config)
            self._tell_health(loaded)
            return True

    async def _load_for_reload(self) -> Loaded:
        """The new generation, its lists built by a child process (prebuild.py) and only loaded
        here; parsed in a worker thread of this process only if no child can be run."""
        assert self.loaded is not None
        loop = asyncio.get_running_loop()
        load = functools.partial(load_all, self.path, self.list_clock)
        if not prebuild.usable(self.loaded.config.server.list_cache_dir):
            return await loop.run_in_executor(None, load)
        for attempt in range(1, prebuild.ATTEMPTS + 1):
            built = await prebuild.prebuild(self.path)
            if built is prebuild.Built.UNAVAILABLE:
                log.warning("no list builder process: parsing the lists in this process")
                return await loop.run_in_executor(None, load)
            try:
                # compiled_only: if a list or the config changed after the child read it, the
                # child's index is stale; build again rather than parse in this process.
                return await loop.run_in_executor(None, functools.partial(load, compiled_only=True))
            except StaleIndex:
                log.info(
                    "a list changed during build %d of %d: building again",
                    attempt,
                    prebuild.ATTEMPTS,
                )
        raise HedgerowError(
            f"the compiled index still did not match the lists after {prebuild.ATTEMPTS} builds "
            "(a list still being written, or a local list missing); send SIGHUP again"
        )

    async def _refresh_lists(self) -> None:
        """Forever: every refresh_check_s, refresh the lists that are due (in a child process,
        see _refreshed) and swap in a new chain if an index changed. A bad copy keeps the old
        list (logged; metrics show it as hedgerow_dns_lists_with_problems)."""
        while True:
            await asyncio.sleep(self._until_due())
            assert self._reloading is not None and self.server is not None
            async with self._reloading:  # never at the same time as a SIGHUP reload
                loaded = self.loaded
                if loaded is None or loaded.refresher is None or not loaded.refresher.due():
                    continue
                try:
                    index = await self._refreshed(loaded.refresher)
                except Exception:  # the refresher should not raise; keep serving if it does
                    log.exception("list refresh failed; still serving the previous lists")
                    continue
                self._tell_health(loaded)
                if index is loaded.index:
                    continue
                fresh = replace(loaded, index=index, stats=tuple(loaded.refresher.stats()))
                self._swap(fresh)
                log.info("lists refreshed: %d names", len(index))

    async def _refreshed(self, refresher: ListRefresher) -> CategoryIndex:
        """The index after refreshing the due lists: downloaded, parsed and built by a child
        process (prebuild.py) and only loaded here; in a worker thread of this process (as
        before) only if no child can run."""
        loop = asyncio.get_running_loop()
        if not prebuild.usable(refresher.cache_dir):
            return await loop.run_in_executor(None, refresher.refresh)
        if self._saving is not None:
            await self._saving  # the start's compiled index must not land over the child's
        handed = await prebuild.refresh(refresher, self.list_clock())
        if handed is None:
            log.warning("no list refresher process: refreshing the lists in this process")
            # A child that died may have taken new copies into the cache: build from them too.
            rebuild = functools.partial(refresher.refresh, rebuild=True)
            return await loop.run_in_executor(None, rebuild)
        adopt = functools.partial(refresher.adopt, handed.status, handed.stats, handed.rebuilt)
        return await loop.run_in_executor(None, adopt)

    def _until_due(self) -> float:
        """Seconds to the next look at the lists: refresh_check_s, or sooner when a missing
        list's retry (with backoff) comes first."""
        loaded = self.loaded
        if loaded is None or loaded.refresher is None:
            return self.refresh_check_s
        wait = loaded.refresher.next_due() - self.list_clock()
        return max(0.0, min(self.refresh_check_s, wait))

    def _tell_health(self, loaded: Loaded) -> None:
        """Tell the sinks that speak to the hub (HealthSink) about each list newly missing or
        back since the last call: one `health` event each (the refresher logs the state)."""
        refresher = loaded.refresher
        if refresher is None:
            return
        now = frozenset(refresher.missing())
        status = {(s.source, s.category): s for s in refresher.status()}
        changes = [(spec, "missing") for spec in now - self._missing]
        changes += [(spec, "recovered") for spec in self._missing - now]
        self._missing = now
        for spec, problem in changes:
            one = status.get((spec.source, spec.category))
            detail = (one.problem or "") if one is not None else ""
            for sink in self.sinks:
                if isinstance(sink, HealthSink):
                    sink.report_health(spec.source, spec.category, spec.statutory, problem, detail)

    def _list_health(self) -> list[ListHealth]:
        """Each list's health for /metrics: missing (no copy at all) and failed fetches."""
        loaded = self.loaded
        if loaded is None or loaded.refresher is None:
            return []
        refresher = loaded.refresher
        missing = set(refresher.missing())
        return [
            (spec.category, spec.source, spec in missing, failed)
            for spec, failed in refresher.failures().items()
        ]

    def _list_counters(self) -> dict[str, float]:
        """List health for /metrics (read at scrape time)."""
        loaded = self.loaded
        if loaded is None or loaded.refresher is None:
            return {}
        status = loaded.refresher.status()
        return {
            "lists_with_problems": sum(1 for s in status if s.problem),
            "lists_served_from_cache": sum(1 for s in status if s.serving_from == "cache"),
        }

    async def stop(self) -> None:
        """Stop serving and release everything we started."""
        if self._saving is not None:
            await self._saving  # never leave a half-written compiled index behind
            self._saving = None
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
            self._refresh = None
        for task in list(self._retiring):
            task.cancel()
        if self.server is not None:
            await self.server.stop()
        if self._forwarder is not None:
            self._forwarder.upstreams.close()  # pooled sockets, DoT connections
            await asyncio.sleep(0)  # let the aborted connections finish closing
        if self.metrics is not None:
            self.metrics.close()

    def _upstream_counters(self) -> dict[str, float]:
        return self._forwarder.upstreams.counters() if self._forwarder is not None else {}


RETIRE_STEP = 1_000  # memo entries freed per slice (~0.3 ms)


async def _retire(fast: FastPath) -> None:
    """Empty a retired fast path's memos a slice at a time, letting packets in between."""
    while fast.forget(RETIRE_STEP):
        await asyncio.sleep(0)


def _warn_categories(config: DnsConfig) -> None:
    """The `check` warnings about categories no hub rule covers, in the log too: a blocked
    lookup in such a category reaches the hub and raises nothing."""
    for warning in category_warnings(config.categories):
        log.warning("%s", warning)
