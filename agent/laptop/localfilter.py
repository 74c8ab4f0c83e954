"""The laptop's own DNS filter: the hedgerow-dns engine (agent.filter), built from the device's
signed policy, serving on [filter] listen. Where it forwards depends on where the laptop is:

- off site (and before the first check): filters by its group's policy itself and forwards to
  [filter] offsite_upstreams (DNS over TLS);
- captive portal: the same filtering, forwarded to the network's (DHCP) resolvers, for at most
  [filter] captive_max_s;
- on site: forwards everything to the school's Pi that proved itself by the beacon, which
  filters by the laptop's group and keeps the school's records complete.

It fails closed: with no upstream answering, blocked names stay blocked (the chain decides
before it forwards) and the rest gets SERVFAIL. It never falls back to an unfiltered resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import replace

from agent.filter.addresses import parse_upstream, split_upstream_name
from agent.filter.answer_cache import AnswerCache
from agent.filter.catalog import load_index, serving
from agent.filter.chain import Chain, build_chain
from agent.filter.groups import CategoryLookup, wall_clock
from agent.filter.lists import ListRefresher
from agent.filter.packet import A
from agent.filter.querylog import QuerySink
from agent.filter.resolvers.forward import Forwarder
from agent.filter.server import DnsServer
from agent.filter.spec import FilterSpec, UpstreamServer, UpstreamSpec
from agent.filter.upstreams import Upstreams
from agent.laptop.config import AgentConfig
from agent.laptop.policy_spec import AgentPolicy, default_policy, on_site_spec
from common.errors import HedgerowError
from common.wire.keyfile import read_json, write_json

log = logging.getLogger(__name__)

REFRESH_CHECK_S = 300.0
PROBE_NAME = "example.com"  # IANA's: every working resolver answers it


class Mode(enum.StrEnum):
    """Where the local filter forwards."""

    OFF_SITE = "off_site"
    CAPTIVE = "captive"
    ON_SITE = "on_site"


class LocalFilter:
    """The engine on the laptop; rebuilt (atomically, between two packets) when the policy or
    the mode changes."""

    def __init__(
        self, config: AgentConfig, sinks: Sequence[QuerySink], self_check_key: bytes
    ) -> None:
        self.config = config
        self.sinks = tuple(sinks)
        self.self_check_key = self_check_key
        self.policy: AgentPolicy | None = None
        self.mode = Mode.OFF_SITE
        self.problem: str | None = "not started"
        self.server: DnsServer | None = None
        self.cache = AnswerCache(5_000, 86_400)
        self._refresher: ListRefresher | None = None
        self._index: CategoryLookup | None = None
        self._spec: FilterSpec | None = None
        self._forwarders: dict[tuple[UpstreamServer, ...], Forwarder] = {}
        self._via: tuple[UpstreamServer, ...] = ()
        self._refresh: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._upstream_file = config.state_dir / "upstreams.json"

    @property
    def state(self) -> str:
        """ "active", or why not."""
        return self.problem or "active"

    @property
    def upstreams(self) -> tuple[UpstreamServer, ...]:
        """Where queries go now."""
        return self._via

    async def start(self, policy: AgentPolicy | None) -> None:
        """Load the policy's lists (what can be had; the rest is retried) and listen. Raises
        OSError if [filter] listen cannot be bound."""
        self.policy = policy
        await self._load()
        self._via = self.offsite_servers()
        chain = self._chain()
        self.server = DnsServer(chain, sinks=self.sinks)
        await self.server.start((self.config.filter.listen,))
        self._refresh = asyncio.ensure_future(self._refresh_lists())
        self.problem = None

    async def use_policy(self, policy: AgentPolicy) -> None:
        """Serve a newly accepted policy; on any error the previous one keeps serving."""
        async with self._lock:
            old = (self.policy, self._refresher, self._index, self._spec)
            self.policy = policy
            try:
                await self._load()
                self._swap()
            except Exception as exc:  # a list, a spec value, a build: all leave the old one
                self.policy, self._refresher, self._index, self._spec = old
                log.error(
                    "policy version %d not applied, keeping the previous: %s", policy.version, exc
                )
                if isinstance(exc, HedgerowError):
                    raise
                raise HedgerowError(
                    f"policy version {policy.version} does not build: {exc}"
                ) from exc

    def go(self, mode: Mode, servers: Sequence[tuple[str, int]] = ()) -> None:
        """Forward as `mode` says: ON_SITE to the Pi (servers[0]), CAPTIVE to `servers` (the
        network's resolvers), OFF_SITE to [filter] offsite_upstreams."""
        if mode is Mode.OFF_SITE:
            via = self.offsite_servers()
        else:
            via = tuple(UpstreamServer(h, p, text=f"{h}:{p}") for h, p in servers)
            if not via:
                raise ValueError(f"{mode} needs at least one server")
            if mode is Mode.ON_SITE:
                via = via[:1]
        if (mode, via) == (self.mode, self._via):
            return
        log.info(
            "local filter: %s, forwarding to %s", mode, ", ".join(s.text for s in via) or "nothing"
        )
        self.mode, self._via = mode, via
        self._swap()

    def network_changed(self) -> None:
        """The laptop's links or routes changed: every upstream's next questions leave on new
        sockets and connections (a connected socket keeps the old network's source address,
        and its answers would be lost)."""
        for forwarder in self._forwarders.values():
            forwarder.upstreams.renew()

    def offsite_servers(self) -> tuple[UpstreamServer, ...]:
        """[filter] offsite_upstreams, host names as last resolved (bootstrap_upstreams)."""
        known = self._resolved_names()
        out = []
        for text in self.config.filter.offsite_upstreams:
            named = split_upstream_name(text)
            if named is None:
                out.append(parse_upstream(text))
                continue
            name, port = named
            out += [UpstreamServer(ip, port, True, name, text) for ip in known.get(name, [])]
        return tuple(out)

    def bootstrap_upstreams(self) -> None:
        """Resolve the host names in offsite_upstreams with the OS resolver while it is still
        the network's (at start, before the OS is pointed at us), and remember them: off site
        later there may be nothing else to ask."""
        names = {}
        for text in self.config.filter.offsite_upstreams:
            named = split_upstream_name(text)
            if named is None:
                continue
            try:
                infos = socket.getaddrinfo(named[0], named[1], type=socket.SOCK_STREAM)
            except OSError as exc:
                log.warning(
                    "cannot resolve %s now (%s): using the last known addresses", named[0], exc
                )
                continue
            names[named[0]] = sorted({str(info[4][0]) for info in infos})
        if names:
            write_json(self._upstream_file, {**self._resolved_names(), **names}, private=False)

    def _resolved_names(self) -> dict[str, list[str]]:
        if not self._upstream_file.exists():
            return {}
        try:
            doc = read_json(self._upstream_file)
        except (OSError, ValueError, HedgerowError):
            return {}
        return {k: [str(a) for a in v] for k, v in doc.items() if isinstance(v, list)}

    async def upstreams_answer(self, servers: Sequence[UpstreamServer] | None = None) -> bool:
        """True if the off-site upstreams (or `servers`) answer a question now: captive-portal
        detection asks this while off site."""
        via = tuple(servers) if servers is not None else self.offsite_servers()
        if not via:
            return False
        upstreams = self._forwarder(via).upstreams
        try:
            await asyncio.wait_for(upstreams.ask(PROBE_NAME, A, 1, False), timeout=3.0)
        except (HedgerowError, TimeoutError, OSError):
            return False
        return True

    async def stop(self) -> None:
        """Stop serving and close every upstream connection."""
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        if self.server is not None:
            await self.server.stop()
        for forwarder in self._forwarders.values():
            forwarder.upstreams.close()
        await asyncio.sleep(0)
        self.problem = "stopped"

    # Building.

    def _base_spec(self) -> FilterSpec:
        upstream = UpstreamSpec(
            self._via or self.offsite_servers() or (UpstreamServer("127.0.0.1", 9, text="none"),),
            timeout_ms=self.config.filter.timeout_ms,
            tls_ca=self.config.filter.tls_ca,
        )
        cache = self.config.list_cache_dir
        if self.policy is None:
            return default_policy().filter_spec(cache, upstream)
        return self.policy.filter_spec(cache, upstream)

    async def _load(self) -> None:
        spec = self._base_spec()
        loop = asyncio.get_running_loop()
        load = functools.partial(load_index, spec, time.time, missing_ok=True)
        refresher, index, _stats = await loop.run_in_executor(None, load)
        self._refresher, self._index, self._spec = refresher, index, spec

    def _forwarder(self, via: tuple[UpstreamServer, ...]) -> Forwarder:
        forwarder = self._forwarders.get(via)
        if forwarder is None:
            spec = UpstreamSpec(via, self.config.filter.timeout_ms, self.config.filter.tls_ca)
            forwarder = Forwarder(self.cache, Upstreams(spec))
            self._forwarders[via] = forwarder
        return forwarder

    def _chain(self) -> Chain:
        assert self._spec is not None and self._index is not None
        if self.mode is Mode.ON_SITE:
            spec = on_site_spec(
                self._spec.list_cache_dir, self._via[0], self.config.filter.timeout_ms
            )
            spec = replace(spec, self_check_key=self.self_check_key)
            return build_chain(spec, _Empty(), self._forwarder(self._via), clock=wall_clock)
        missing = self._refresher.missing() if self._refresher is not None else []
        exempt = [s.server_name or s.host for s in self._via]
        spec, index = serving(self._spec, self._index, missing, exempt)
        spec = replace(spec, self_check_key=self.self_check_key)
        return build_chain(spec, index, self._forwarder(self._via), clock=wall_clock)

    def _swap(self) -> None:
        if self.server is not None:
            self.cache.clear()  # answers from another mode's upstream are not this one's
            self.server.chain = self._chain()

    async def _refresh_lists(self) -> None:
        """Forever: lists due (or missing, with backoff) are fetched again in a worker thread."""
        while True:
            refresher = self._refresher
            wait = REFRESH_CHECK_S
            if refresher is not None:
                wait = max(1.0, min(REFRESH_CHECK_S, refresher.next_due() - time.time()))
            await asyncio.sleep(wait)
            async with self._lock:
                refresher = self._refresher
                if refresher is None or not refresher.due():
                    continue
                try:
                    index = await asyncio.get_running_loop().run_in_executor(
                        None, refresher.refresh
                    )
                except Exception:  # keep serving the previous lists
                    log.exception("list refresh failed; still serving the previous lists")
                    continue
                if index is not self._index:
                    self._index = index
                    self._swap()
                    log.info("lists refreshed: %d names", len(index))


class _Empty:
    """The category index of the on-site pass-through filter: no lists at all."""

    categories: tuple[str, ...] = ()

    def lookup(self, qname: str) -> int:
        """No categories."""
        return 0

    def __len__(self) -> int:
        return 0
