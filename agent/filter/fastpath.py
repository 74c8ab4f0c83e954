"""The resolver chain compiled for the common packets: a synchronous path inside
datagram_received that answers blocked, refused, rate-limited, ECH-filtered and cached queries
from precomputed templates, with no Request, no task and no per-label objects.

It is not a second policy. `FastPath` is built by chain.build_chain from the chain's own links,
walks them in their order (it refuses to compile a link it does not know), and hands anything
else (unusual packets, SafeSearch, bypass and beacon names) to the full chain.

A cache miss the policy lets through comes back as a `Miss`: the server asks the upstreams
itself and, when the answer comes, `fetched` answers it with the same cached-answer step the
cache hits take (targets, shape templates), after the access and rate-limit steps, which ran
once already. tests/test_dns_fastpath.py and tests/test_dns_fast_miss.py hold both to
byte-identical answers and equal verdicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

from agent.filter import packet
from agent.filter.answer_cache import AnswerCache, CacheKey, Targets
from agent.filter.groups import CategoryLookup, ClientTable, GroupPolicy
from agent.filter.request import Link
from agent.filter.resolvers.access import OUTSIDER, AccessLink
from agent.filter.resolvers.beacon import ZONE as BEACON_ZONE
from agent.filter.resolvers.beacon import BeaconLink
from agent.filter.resolvers.blocking import AllowLink, CategoryLink, StatutoryLink, TargetCheck
from agent.filter.resolvers.bypass import DDR_ZONE, NXDOMAIN_NAMES, BypassLink
from agent.filter.resolvers.forward import CacheLink, Forwarder, UpstreamLink
from agent.filter.resolvers.ratelimit import RateLimitLink, TokenBuckets
from agent.filter.resolvers.safesearch import SafeSearchLink
from agent.filter.response import Stored, render, unpack_meta
from agent.filter.sinkhole import Sinkhole
from agent.filter.templates import Template
from agent.filter.verdict import Kind, Verdict

# Packets (less their ID) seen recently, each with what is known of its name (about 230 bytes
# each: ~2.5 MB): one lookup answers a repeat; and names seen recently, for new packets of a
# known name (~2 MB). Below a working set a memo thrashes: the bench's mix of 200,000 queries
# over 27,000 names missed 31 % of packets with 4,096 entries and 16 % with 16,384 (before the
# doorkeeper below); a larger one takes the 1M-name cold mix over 64 MB (docs/benchmarks.md).
# 10,922 is the most a dict holds in a table of 32,768 slots (~0.65 MB): CPython grows a full
# dict to a power of two over 3x its entries, so 12,288 entries kept a table twice that size.
PARSED_MEMO = 10_922
NAME_MEMO = 10_922
BLOCKED_MEMO = 4_096  # blocked templates per group, by hit mask and type kind
CLIENT_MEMO = 65_536
FORGET_FRACTION = 16  # a full memo forgets its oldest sixteenth at once
# The packet and name memos take a key only the second time it comes within a while (TinyLFU's
# doorkeeper): names asked once, most of a long tail, would otherwise push out the popular ones
# and cost an insertion and a deletion each. On the bench's cold mix this raised the packet
# memo's hits from 58 % to 61 % and cut its insertions from 125,000 to 39,000 in 300,000
# queries. A doorkeeper is one bit per hash bucket (16 KiB), cleared after DOOR_MARKS marks.
DOOR_BUCKETS = 1 << 17
DOOR_MARKS = 40_000
SHAPE_MEMO = 4_096  # templates of cached answers' shapes (rcode, flags, counts)
CLOAKED_MEMO = 4_096  # verdicts of answers blocked for a target, per group
# Label bytes the fast path accepts (as packet.parse_query); others go to the full path.
_PLAIN = b"abcdefghijklmnopqrstuvwxyz0123456789-_*/"
_PLAIN_OR_DOT = _PLAIN + b"."
_LENGTHS_AS_DOTS = bytes.maketrans(bytes(range(1, 0x2A)), b"." * (0x2A - 1))
_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0
_OPT_TYPE = b"\x00\x29"

# (reply, verdict, qname or None if not looked at, qtype); False: run the full chain;
# True: run the full chain, the client's rate-limit token is already spent; a Miss: fetch it.
FastAnswer = tuple[bytes, Verdict, str | None, int]
# What the policy needs to know about one (lower-cased) name, learned once: its text, the
# categories listing it (CategoryIndex.lookup), per group the allow entry covering it (None if
# no group allows it), and whether the full chain answers it (SafeSearch, bypass, beacon). A
# plain tuple: it is made for every new name, and a dataclass costs ~100x more to build.
NameInfo = tuple[str, int, tuple[str | None, ...] | None, bool]
# (end of question, template variant, qtype, EDNS state, client's UDP size, lower-cased name,
# its label count)
Question = tuple[int, int, int, int, int, bytes, int]
# A packet's question and its name's NameInfo (None: a name byte the fast path does not take).
Parsed = tuple[int, int, int, int, int, NameInfo | None]


class GroupFast:
    """One group's precomputed verdicts and templates."""

    __slots__ = (
        "_allowed", "_resolved_allowed", "always", "blocked", "cached", "cloaked", "ech",
        "limited", "outsider", "policy", "pos", "resolved",
    )  # fmt: skip

    def __init__(self, policy: GroupPolicy | None, pos: int) -> None:
        self.policy = policy
        self.pos = pos
        self.outsider = policy is None
        # The group's blocked categories when it has no schedules; -1: ask block_mask(now).
        self.always = -1 if policy is None or policy.scheduled else policy.always_mask
        name = policy.name if policy else ""
        self.limited = Verdict(Kind.REFUSED, name, rule="rate_limit")
        self.cached = Verdict(Kind.CACHED, name)
        self.resolved = Verdict(Kind.RESOLVED, name)
        # hit mask << 2 | type kind (A, AAAA, other) -> (heads, tails, verdict)
        self.blocked: dict[int, tuple[tuple[bytes, ...], tuple[bytes, ...], Verdict]] = {}
        # (hit mask, target) -> the verdict of a cached answer blocked for that target
        self.cloaked: dict[tuple[int, str], Verdict] = {}
        self.ech: tuple[Template, Verdict] | None = None
        if policy is not None and policy.block_ech:
            ede = (packet.EDE_FILTERED, "filtered: HTTPS/SVCB withheld (ECH)")
            self.ech = (
                Template(lambda q: packet.nodata(q, ede), packet.HTTPS),
                Verdict(Kind.FILTERED, name, "ech", "block_ech"),
            )
        self._allowed: dict[str, Verdict] = {}
        self._resolved_allowed: dict[str, Verdict] = {}

    def cached_allowed(self, entry: str) -> Verdict:
        """The cached verdict naming the allow entry that let the name through."""
        verdict = self._allowed.get(entry)
        if verdict is None:
            verdict = Verdict(Kind.CACHED, self.cached.group, rule=f"allow {entry}")
            self._allowed[entry] = verdict
        return verdict

    def resolved_allowed(self, entry: str) -> Verdict:
        """The verdict of a fresh upstream answer to a name an allow entry let through."""
        verdict = self._resolved_allowed.get(entry)
        if verdict is None:
            verdict = Verdict(Kind.RESOLVED, self.cached.group, rule=f"allow {entry}")
            self._resolved_allowed[entry] = verdict
        return verdict


class Doorkeeper:
    """Keys seen once lately, by hash bucket: admit() is True for a key whose bucket was
    marked (seen before, or a collision), else marks it. Cleared after DOOR_MARKS marks."""

    __slots__ = ("marks", "seen")

    def __init__(self) -> None:
        self.seen = bytearray(DOOR_BUCKETS // 8)
        self.marks = 0

    def admit(self, key: bytes) -> bool:
        """True if `key` may enter the memo now (its hash is cached: the memo looked it up)."""
        seen = self.seen
        bucket = hash(key) & (DOOR_BUCKETS - 1)
        byte, bit = bucket >> 3, 1 << (bucket & 7)
        if seen[byte] & bit:
            return True
        seen[byte] |= bit
        self.marks += 1
        if self.marks >= DOOR_MARKS:
            self.seen = bytearray(DOOR_BUCKETS // 8)
            self.marks = 0
        return False


class Miss:
    """A query the policy lets through, not special and not in the cache (FastPath.resolve):
    the server asks `key` upstream and hands the answer to `fast.fetched`. The client's
    rate-limit token is spent."""

    __slots__ = ("fast", "group", "key", "parsed")

    def __init__(self, fast: FastPath, key: CacheKey, parsed: Parsed, group: GroupFast) -> None:
        self.fast = fast
        self.key = key
        self.parsed = parsed
        self.group = group

    def question(self, data: bytes) -> bytes:
        """The question section of the query `data` as packet.question_bytes gives it: its
        name lower-cased (the fast path took only plain labels, so nothing else differs)."""
        end = self.parsed[0]
        return data[12 : end - 4].lower() + data[end - 4 : end]


FastResult = FastAnswer | Miss | bool  # what FastPath.resolve gives (see FastAnswer)


class FastPath:
    """The chain's links compiled into one function; see the module docstring."""

    def __init__(
        self,
        links: Iterable[Link],
        groups: Iterable[GroupPolicy],
        *,
        max_udp_size: int,
        clock: Callable[[], float],
    ) -> None:
        self._clock = clock
        self._max_udp = max_udp_size
        self._groups = tuple(GroupFast(g, i) for i, g in enumerate(groups))
        self._by_name = {g.policy.name: g for g in self._groups if g.policy}
        self._outsider = GroupFast(None, -1)
        self._refused = Template(lambda q: packet.error(q, packet.REFUSED), packet.A)
        self._names: dict[bytes, NameInfo] = {}
        self._shapes: dict[int, Template] = {}
        self._parsed: dict[bytes, Parsed] = {}
        self._new_packets = Doorkeeper()
        self._new_names = Doorkeeper()
        self._clients: dict[str, GroupFast] = {}
        self._table: ClientTable | None = None
        self._buckets: TokenBuckets | None = None
        self._buckets_table: dict[str, list[Any]] = {}
        self._rate = 0.0
        self._network_rate = 0.0
        self._monotonic: Callable[[], float] = time.monotonic
        self._index: CategoryLookup | None = None
        self._sinkhole: Sinkhole | None = None
        self._sources: dict[str, str] = {}
        self._statutory = 0
        self._allowing = False
        self._cache: AnswerCache | None = None
        self._forwarder: Forwarder | None = None
        self._targets: TargetCheck | None = None
        self._special_names: set[str] = set()
        self._special_zones: list[str] = []
        for link in links:
            self._compile(link)
        # A zone and everything under it: "zone" itself, or a name ending in ".zone".
        self._special_names.update(self._special_zones)
        self._special_suffixes = tuple("." + zone for zone in self._special_zones)
        if self._table is None or self._cache is None or self._index is None:
            raise TypeError("the chain needs access, list and cache links to be compiled")
        if self._forwarder is None:
            raise TypeError("the chain needs an upstream link to be compiled")
        self.forwarder: Forwarder = self._forwarder
        self._cache_entry: Callable[[CacheKey], tuple[int, bytes, tuple[str, ...]] | None] = (
            self._cache.entry
        )

    def _compile(self, link: Link) -> None:
        """Take from each link what its fast form needs (in chain order)."""
        if isinstance(link, AccessLink):
            self._table = link.clients
        elif isinstance(link, RateLimitLink):
            self._buckets = link.buckets
            self._buckets_table = link.buckets.table
            self._rate = float(link.buckets.rate)
            self._network_rate = float(link.buckets.network_rate)
            self._monotonic = link.buckets.clock
        elif isinstance(link, StatutoryLink):
            self._index, self._sinkhole = link.index, link.sinkhole
            self._sources, self._statutory = link.sources, link.mask
        elif isinstance(link, AllowLink):
            self._allowing = any(g.policy is not None and g.policy.allow for g in self._groups)
        elif isinstance(link, CategoryLink):
            self._index, self._sinkhole, self._sources = link.index, link.sinkhole, link.sources
        elif isinstance(link, SafeSearchLink):
            for group in self._groups:
                assert group.policy is not None
                self._special_names.update(group.policy.rewrites)
        elif isinstance(link, BypassLink):
            self._special_names.update(NXDOMAIN_NAMES)
            self._special_zones.append(DDR_ZONE)
            # Public encrypted-DNS resolvers and the names below them, where a group blocks them
            # (another group's cached answer must never reach that group from here).
            if any(g.policy is not None and g.policy.block_encrypted_dns for g in self._groups):
                self._special_zones.extend(sorted(link.resolvers.names))
        elif isinstance(link, BeaconLink):
            self._special_zones.append(BEACON_ZONE)
        elif isinstance(link, CacheLink):
            self._cache, self._targets = link.cache, link.targets
        elif isinstance(link, UpstreamLink):
            self._forwarder = link.forwarder
        else:
            raise TypeError(f"no fast form for the {link.name} link")

    def resolve(self, data: bytes, client: str) -> FastResult:
        """Answer a UDP query from `client` if it is a common case; see FastAnswer."""
        # Everything but the ID decides how a packet parses: repeats skip the parsing.
        rest = data[2:]
        parsed = self._parsed.get(rest)
        if parsed is None:
            parsed = self._parse_new(data, rest)
            if parsed is None:
                return False
        qend, variant, qtype, edns, _, info = parsed
        # 1. Access (and the group), 1b. rate limit (TokenBuckets.allow, inlined).
        group = self._clients.get(client)
        if group is None:
            group = self._classify(client)
        if group.outsider:
            return self._refused.reply(data, qend, variant), OUTSIDER, None, qtype
        rate = self._rate
        if rate:
            bucket = self._buckets_table.get(client)
            if bucket is None:
                assert self._buckets is not None
                if not self._buckets.allow(client):
                    return self._refused.reply(data, qend, variant), group.limited, None, qtype
            else:
                now = self._monotonic()
                tokens = bucket[0] + (now - bucket[1]) * rate
                if tokens > rate:
                    tokens = rate
                bucket[1] = now
                if tokens < 1.0:
                    bucket[0] = tokens
                    return self._refused.reply(data, qend, variant), group.limited, None, qtype
                shared = bucket[2]  # the client's network's bucket, if limited per network
                if shared is not None:
                    network_rate = self._network_rate
                    left = shared[0] + (now - shared[1]) * network_rate
                    if left > network_rate:
                        left = network_rate
                    shared[1] = now
                    if left < 1.0:
                        shared[0] = left
                        bucket[0] = tokens
                        return self._refused.reply(data, qend, variant), group.limited, None, qtype
                    shared[0] = left - 1.0
                bucket[0] = tokens - 1.0
        if info is None:
            return True
        qname, mask, allowed, special = info
        if mask:
            # 2. Statutory lists, 3. the group's allowlist, 4. the group's categories.
            hit = mask & self._statutory
            if not hit and (allowed is None or allowed[group.pos] is None):
                always = group.always
                if always < 0:
                    assert group.policy is not None
                    always = group.policy.block_mask(self._clock())
                hit = mask & always
            if hit:
                kind = 0 if qtype == packet.A else 1 if qtype == packet.AAAA else 2
                found = group.blocked.get(hit << 2 | kind)
                if found is None:
                    found = self._blocked_template(group, hit, kind)
                heads, tails, verdict = found
                wire = b"".join((data[:2], heads[variant], data[12:qend], tails[variant]))
                return wire, verdict, qname, qtype
        # 5-7. SafeSearch, bypass and beacon names are the full chain's.
        if special:
            return True
        if group.ech is not None and (qtype == packet.HTTPS or qtype == packet.SVCB):
            template, verdict = group.ech
            return template.reply(data, qend, variant), verdict, qname, qtype
        # 8. The cache; a miss is the server's to fetch (Miss), then fetched() answers it.
        key = (qname, qtype, packet.CLASS_IN, edns == 2)
        cached = self._cache_entry(key)
        if cached is None:
            return Miss(self, key, parsed, group)
        answer = self._reply(data, parsed, info, group, cached[0], cached[1], cached[2], False)
        return True if answer is None else answer  # too big: the full path sends TC

    def fetched(
        self, miss: Miss, data: bytes, stored: Stored, targets: Targets
    ) -> FastAnswer | None:
        """The reply to a Miss of this fast path once its upstream answer came (and was kept,
        with `targets`): as the full chain's upstream link gives it (RESOLVED, or blocked for
        a target), or None when it is too big for the client (the full path sends TC). Only
        the cached-answer step runs: access and rate limit took the client's token already."""
        info = miss.parsed[5]
        assert info is not None  # a Miss is made only for a looked-up name
        return self._reply(
            data, miss.parsed, info, miss.group, stored.meta, stored.body, targets, True
        )

    def _reply(
        self,
        data: bytes,
        parsed: Parsed,
        info: NameInfo,
        group: GroupFast,
        shape_meta: int,
        records: bytes,
        targets: Targets,
        fresh: bool,
    ) -> FastAnswer | None:
        """An answer's records (cached, or `fresh` from upstream) as this client's reply, as
        CacheLink or UpstreamLink render it; None if too big for the client."""
        qend, variant, qtype, edns, limit, _ = parsed
        qname, _, allowed, _ = info
        if targets:  # it names other owners: they meet the policy too (TargetCheck)
            cloaked = self._cloaked(group, allowed, targets, qtype)
            if cloaked is not None:
                heads, tails, verdict = cloaked
                wire = b"".join((data[:2], heads[variant], data[12:qend], tails[variant]))
                return wire, verdict, qname, qtype
        shape = self._shapes.get(shape_meta)
        if shape is None:
            shape = self._shape_template(shape_meta)
        wire = b"".join(
            (data[:2], shape.heads[variant], data[12:qend], records, shape.tails[variant])
        )
        if len(wire) > 512 and (not edns or len(wire) > max(512, min(limit, self._max_udp))):
            return None
        entry_name = allowed[group.pos] if allowed is not None else None
        if fresh:
            verdict = group.resolved if entry_name is None else group.resolved_allowed(entry_name)
        else:
            verdict = group.cached if entry_name is None else group.cached_allowed(entry_name)
        return wire, verdict, qname, qtype

    def _cloaked(
        self,
        group: GroupFast,
        allowed: tuple[str | None, ...] | None,
        targets: tuple[str, ...],
        qtype: int,
    ) -> tuple[tuple[bytes, ...], tuple[bytes, ...], Verdict] | None:
        """The blocked reply parts of a cached answer one of whose targets the group blocks,
        as CacheLink builds it with TargetCheck.check; None if none is blocked."""
        assert self._targets is not None and group.policy is not None
        blocking = 0
        if allowed is None or allowed[group.pos] is None:
            blocking = group.always
            if blocking < 0:
                blocking = group.policy.block_mask(self._clock())
        found = self._targets.find(group.policy, blocking, targets)
        if found is None:
            return None
        hit, target = found
        kind = 0 if qtype == packet.A else 1 if qtype == packet.AAAA else 2
        template = group.blocked.get(hit << 2 | kind)
        if template is None:
            template = self._blocked_template(group, hit, kind)
        heads, tails, direct = template
        verdict = group.cloaked.get((hit, target))
        if verdict is None:
            verdict = Verdict(
                direct.kind, direct.group, direct.category, f"{direct.rule} via {target}"
            )
            if len(group.cloaked) < CLOAKED_MEMO:
                group.cloaked[hit, target] = verdict
        return heads, tails, verdict

    def forget(self, count: int) -> bool:
        """Drop up to `count` memo entries, oldest first; False once the memos are empty. A
        fast path retired by a reload is emptied this way, a slice between two batches of
        packets: freeing its ~25,000 entries at once held the event loop about 6 ms."""
        memos: tuple[dict[Any, Any], ...] = (self._parsed, self._names, self._clients, self._shapes)
        for memo in memos:
            if memo:
                _drop_oldest(memo, count)
                return True
        return False

    def _classify(self, client: str) -> GroupFast:
        assert self._table is not None
        policy = self._table.classify(client)
        group = self._outsider if policy is None else self._by_name[policy.name]
        if len(self._clients) >= CLIENT_MEMO:
            _forget_oldest(self._clients)
        self._clients[client] = group
        return group

    def _parse_new(self, data: bytes, rest: bytes) -> Parsed | None:
        """Parse a packet not seen recently and learn its name (if new); remember both (if
        seen before: Doorkeeper)."""
        question = _parse(data)
        if question is None:
            return None
        qend, variant, qtype, edns, limit, key, labels = question
        info = self._names.get(key)
        if info is None:
            info = self._learn(key, labels)
        parsed = (qend, variant, qtype, edns, limit, info)
        if self._new_packets.admit(rest):
            if len(self._parsed) >= PARSED_MEMO:
                _forget_oldest(self._parsed)
            self._parsed[rest] = parsed
        return parsed

    def _learn(self, key: bytes, labels: int) -> NameInfo | None:
        """Look a new name up once: its text, categories, allow entries, special handling.
        `key` is its wire form, lower-cased, with `labels` labels. None: a byte the fast path
        does not take (the full path's parser decides)."""
        # Each length byte becomes a dot: the dotted name after its first byte. In a key under
        # 43 bytes no label is over 41 bytes long, so every length byte is below "*" (0x2A),
        # the lowest byte a plain label has: one translate finds them all. A label holding a
        # dot, or any byte below "*", shows up as one dot too many.
        if len(key) < 43:
            dotted = key.translate(_LENGTHS_AS_DOTS)
        else:
            walked = bytearray(key)
            pos = 0
            while pos < len(key):
                walked[pos] = 46  # "."
                pos += key[pos] + 1
            dotted = bytes(walked)
        if dotted.translate(None, _PLAIN_OR_DOT) or dotted.count(46) != labels:
            return None
        qname = dotted[1:].decode("ascii")
        assert self._index is not None
        mask = self._index.lookup(qname)
        allowed: tuple[str | None, ...] | None = None
        if self._allowing:
            allowed = tuple(g.policy.allowed_by(qname) if g.policy else None for g in self._groups)
            if not any(allowed):
                allowed = None
        special = qname in self._special_names or qname.endswith(self._special_suffixes)
        info = (qname, mask, allowed, special)
        if self._new_names.admit(key):
            if len(self._names) >= NAME_MEMO:
                _forget_oldest(self._names)
            self._names[key] = info
        return info

    def _shape_template(self, meta: int) -> Template:
        """The replies of a cached answer's shape (Stored.meta) with no records: render()
        of that shape with the records spliced in before the OPT is the reply, byte for byte."""
        rcode, aa, ad, counts = unpack_meta(meta)
        empty = Stored(rcode, aa, ad, False, counts, b"", b"", 0)
        template = Template(lambda q: render(empty, q), packet.A)
        if len(self._shapes) < SHAPE_MEMO:
            self._shapes[meta] = template
        return template

    def _blocked_template(
        self, group: GroupFast, hit: int, kind: int
    ) -> tuple[tuple[bytes, ...], tuple[bytes, ...], Verdict]:
        """As resolvers.blocking._Blocker.block builds it, for one hit mask and type kind."""
        assert self._index is not None and self._sinkhole is not None and group.policy
        statutory = bool(hit & self._statutory)  # a category hit never holds statutory bits
        bit = (hit & -hit).bit_length() - 1
        category = self._index.categories[bit]
        rule = self._sources.get(category, category)
        ede = (packet.EDE_BLOCKED, f"blocked: {category}" + (" (statutory)" if statutory else ""))
        sinkhole = self._sinkhole
        qtype = (packet.A, packet.AAAA, packet.TXT)[kind]
        template = Template(lambda q: sinkhole.reply(q, ede), qtype)
        verdict = Verdict(Kind.BLOCKED, group.policy.name, category, rule)
        found = template.heads, template.tails, verdict
        if len(group.blocked) < BLOCKED_MEMO:
            group.blocked[hit << 2 | kind] = found
        return found


def _forget_oldest(memo: dict[Any, Any]) -> None:
    """Drop the oldest 1/FORGET_FRACTION of a full memo (dicts keep insertion order). Clearing
    it whole freed 16,384 names at once, a pause of a few ms between two packets; a slice of
    them costs a fraction of a millisecond."""
    _drop_oldest(memo, max(1, len(memo) // FORGET_FRACTION))


def _drop_oldest(memo: dict[Any, Any], count: int) -> None:
    for key in list(islice(memo, count)):
        del memo[key]


def _parse(data: bytes) -> Question | None:
    """Parse a standard query by hand, or None if the full parser should see it."""
    try:
        # A standard query with one question and no answer/authority records.
        if data[2] & 0xF8 or data[4:10] != _ONE_QUESTION or data[10]:
            return None
        off = 12
        labels = 0
        n = data[12]
        while n:  # one step per label: only the length bytes are read
            if n > 63:
                return None  # compressed or a bad label type: the full parser says which
            off += n + 1
            labels += 1
            n = data[off]
        if off > 266 or data[off + 3] or data[off + 4] != packet.CLASS_IN:
            return None  # longer than 255 bytes, or a class the access link refuses
        qend = off + 5
        ar = data[11]
        if ar == 0:
            if len(data) != qend:
                return None
            edns = 0
            limit = 512
        elif (
            ar == 1
            and data[qend] == 0
            and data[qend + 1 : qend + 3] == _OPT_TYPE
            and data[qend + 6] == 0  # EDNS version 0 (others get BADVERS)
            and len(data) == qend + 11 + (data[qend + 9] << 8 | data[qend + 10])
        ):
            edns = 2 if data[qend + 7] & 0x80 else 1
            limit = data[qend + 3] << 8 | data[qend + 4]
        else:
            return None
    except IndexError:
        return None
    variant = edns << 3 | (data[2] & 1) << 2 | (data[3] & 0x30) >> 4
    qtype = data[off + 1] << 8 | data[off + 2]
    return qend, variant, qtype, edns, limit, data[12:off].lower(), labels
