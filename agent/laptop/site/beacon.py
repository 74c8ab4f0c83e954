"""Where am I: ask the school's DNS filter for a signed statement about a fresh nonce
(docs/protocol.md section 11) and decide whether this laptop is on site.

Only a resolver holding the site beacon key can sign, so no home router can fake the answer;
the nonce is fresh, so a recorded answer is useless; and the round trip must be short, so a
relay from home through some device at school does not pass either. Everything else is off
site: this module fails closed and never raises on what the network sends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from agent.filter import packet, replies
from agent.filter.response import matches
from common.beacon_statement import PREFIX, SUFFIX, BeaconError, verify_statement
from common.wire.signing import SIGNATURE_LEN, VerifyKey

log = logging.getLogger(__name__)

NONCE_BYTES = 16  # 32 hex characters: inside the protocol's [a-z0-9]{16,63}
NONCES_REMEMBERED = 4096  # nonces drawn lately, never drawn again while remembered
QUEUE_LIMIT = 64  # datagrams held per server; a flood beyond this is dropped


class SiteState(StrEnum):
    """Where the laptop is, as status and the hub see it."""

    ON_SITE = "on_site"
    OFF_SITE = "off_site"
    CAPTIVE = "captive"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class BeaconOutcome:
    """One probe's result: on site or not, and why."""

    on_site: bool
    reason: str  # one of REASONS
    server: str | None  # "10.0.0.53:53" of the server that proved it (None if none did)
    rtt_ms: float | None  # the deciding answer's round trip (a "slow" one's too), None if none


# Most telling first: when no server proves the site, the reason closest to a proof is kept
# ("slow" is a valid statement that came too late: a relay; "no_answer" says nothing).
REASONS = (
    "signed",
    "slow",
    "stale",
    "wrong_nonce",
    "wrong_key",
    "unsigned",
    "malformed",
    "no_answer",
    "no_keys",
    "no_servers",
)
_RANK = {reason: rank for rank, reason in enumerate(REASONS)}


def _better(a: BeaconOutcome, b: BeaconOutcome) -> BeaconOutcome:
    return a if _RANK[a.reason] <= _RANK[b.reason] else b


def server_text(host: str, port: int) -> str:
    """ "10.0.0.53:53", or "[fd00::53]:53" for IPv6."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class BeaconProber:
    """Asks beacon servers for a statement about a fresh nonce; one probe at a time or many."""

    def __init__(
        self,
        site: str,
        keys: Sequence[VerifyKey],
        *,
        max_rtt_ms: float = 50.0,
        clock_window_ms: int = 30_000,
        timeout_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.site = site
        self.keys = tuple(keys)
        self.max_rtt_ms = max_rtt_ms
        self.clock_window_ms = clock_window_ms
        self.timeout_s = timeout_s
        self.clock = clock
        self._recent: deque[str] = deque()
        self._recent_set: set[str] = set()

    def fresh_nonce(self) -> str:
        """A random nonce not drawn in the last NONCES_REMEMBERED probes."""
        while True:
            nonce = secrets.token_hex(NONCE_BYTES)
            if nonce not in self._recent_set:
                break
            log.warning("beacon nonce drawn twice; drawing again")
        self._recent.append(nonce)
        self._recent_set.add(nonce)
        if len(self._recent) > NONCES_REMEMBERED:
            self._recent_set.discard(self._recent.popleft())
        return nonce

    async def probe(self, servers: Sequence[tuple[str, int]]) -> BeaconOutcome:
        """Ask every server at once; the first signed, fresh and fast answer wins, else the
        most telling reason. Never raises on what servers send."""
        if not self.keys:
            return BeaconOutcome(False, "no_keys", None, None)
        if not servers:
            return BeaconOutcome(False, "no_servers", None, None)
        nonce = self.fresh_nonce()
        tasks = {asyncio.create_task(self._ask(host, port, nonce)) for host, port in servers}
        best = BeaconOutcome(False, "no_answer", None, None)
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    outcome = task.result()
                    if outcome.on_site:
                        return outcome
                    best = _better(best, outcome)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return best

    async def _ask(self, host: str, port: int, nonce: str) -> BeaconOutcome:
        """One server's outcome; never raises (but can be cancelled)."""
        name = server_text(host, port)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            # Never a host name: resolving it would ask the very network we are judging.
            log.warning("beacon server %s is not an IP address", name)
            return BeaconOutcome(False, "no_answer", None, None)
        loop = asyncio.get_running_loop()
        receiver = _Receiver(address, port)
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: receiver, remote_addr=(str(address), port)
            )
        except (OSError, OverflowError, ValueError) as exc:  # OverflowError: a port > 65535
            log.info("beacon server %s unreachable: %s", name, exc)
            return BeaconOutcome(False, "no_answer", None, None)
        try:
            return await self._exchange(transport, receiver, name, nonce)
        except Exception:
            # A bug here must not decide the site state any other way than "not proved".
            log.exception("beacon probe of %s failed", name)
            return BeaconOutcome(False, "no_answer", None, None)
        finally:
            transport.close()

    async def _exchange(
        self,
        transport: asyncio.DatagramTransport,
        receiver: _Receiver,
        name: str,
        nonce: str,
    ) -> BeaconOutcome:
        msg_id = secrets.randbelow(0x10000)
        qname = f"{nonce}.{SUFFIX}"
        question = packet.question_bytes(qname, packet.TXT, packet.CLASS_IN)
        sent = time.monotonic()
        transport.sendto(packet.query_message(msg_id, qname, packet.TXT, packet.CLASS_IN, False))
        deadline = sent + self.timeout_s
        best = BeaconOutcome(False, "no_answer", None, None)
        # Keep listening after a bad answer until the deadline: a spoofed reply racing the real
        # one must not decide the outcome.
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                item = await asyncio.wait_for(receiver.queue.get(), remaining)
            except TimeoutError:
                break
            if item is None:  # ICMP unreachable: nobody listens there
                break
            data, received = item
            if not matches(data, msg_id, question):
                # Not an answer to this question: another ID, a stray, garbage.
                best = _better(best, BeaconOutcome(False, "malformed", None, None))
                continue
            rtt_ms = (received - sent) * 1000.0
            reason = self._judge(data, nonce)
            if reason == "signed" and rtt_ms > self.max_rtt_ms:
                reason = "slow"
            if reason == "signed":
                return BeaconOutcome(True, reason, name, rtt_ms)
            outcome = BeaconOutcome(False, reason, None, rtt_ms)
            if reason == "slow":
                return outcome  # nothing later can be faster
            best = _better(best, outcome)
        return best

    def _judge(self, data: bytes, nonce: str) -> str:
        """The reason for one matching reply: "signed" or why not."""
        try:
            _, texts = replies.txt_answers(data)
        except packet.PacketError:
            return "malformed"
        reason = "unsigned"
        for txt in texts:
            one = self._judge_statement(txt, nonce)
            if one == "signed":
                return one
            reason = one if _RANK[one] < _RANK[reason] else reason
        return reason

    def _judge_statement(self, txt: bytes, nonce: str) -> str:
        fields = _fields(txt)
        if fields is None:
            return "unsigned"
        site, got_nonce, time_ms, signature = fields
        if site != self.site:
            return "wrong_key"  # another site's statement: not made with our site's key
        if got_nonce != nonce:
            return "wrong_nonce"  # a replay of an answer to an earlier question
        now_ms = int(self.clock() * 1000)
        if abs(now_ms - time_ms) > self.clock_window_ms:
            return "stale"
        if len(signature) != SIGNATURE_LEN:
            return "unsigned"
        try:
            verify_statement(
                txt,
                keys=self.keys,
                site=self.site,
                nonce=nonce,
                now_ms=now_ms,
                max_age_ms=self.clock_window_ms,
            )
        except BeaconError:
            return "wrong_key"
        return "signed"


def _fields(txt: bytes) -> tuple[str, str, int, bytes] | None:
    """(site, nonce, time_ms, signature) of something shaped like a statement, else None.
    Only to say why a statement fails; verify_statement decides whether it passes."""
    try:
        text = txt.decode("ascii")
    except UnicodeDecodeError:
        return None
    parts = text.split(";")
    if len(parts) != 5 or parts[0] != PREFIX or not parts[3].isdigit():
        return None
    try:
        signature = base64.urlsafe_b64decode(parts[4] + "=" * (-len(parts[4]) % 4))
    except ValueError:
        signature = b""
    return parts[1], parts[2], int(parts[3]), signature


class _Receiver(asyncio.DatagramProtocol):
    """Hands datagrams from the server to the waiting probe, with their arrival time (the
    round trip ends here, not when the probe gets round to reading)."""

    def __init__(self, host: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> None:
        self.host = host
        self.port = port
        self.queue: asyncio.Queue[tuple[bytes, float] | None] = asyncio.Queue(QUEUE_LIMIT)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        """Queue a datagram from the server; drop any other sender's."""
        # The socket is connected, so the kernel already drops other senders; this says so
        # in code, should the socket ever be unconnected.
        try:
            same = ipaddress.ip_address(addr[0]) == self.host and addr[1] == self.port
        except (ValueError, IndexError, TypeError):
            same = False
        if not same:
            return
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait((data, time.monotonic()))

    def error_received(self, exc: Exception) -> None:
        """ICMP unreachable and the like: the server will not answer."""
        log.debug("beacon probe socket error: %s", exc)
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)
