"""Batched UDP for the server's listeners: many datagrams per system call, with Linux's
recvmmsg(2) and sendmmsg(2) through ctypes.

Why: under load, most of a Python DNS server's CPU per query was spent around the kernel, not
in the policy: one event-loop callback, one recvfrom and one sendto for every packet. Taking up
to SLOTS datagrams in one call and sending their answers in one call cut a bare responder's CPU
from 17-19 us to 11-12 us per query on the 2-core bench machine (docs/benchmarks.md).

The layout of struct mmsghdr is taken from ctypes, so it is right on 32-bit ARM as on x86-64;
the buffers are filled once, and per packet only memoryview reads and writes are used. This
module knows nothing of DNS. `available()` is False where there is no recvmmsg (not Linux):
the server then uses asyncio's datagram transport instead (server.py).

`Connected` is the other side: batched sends and receives on connected sockets (the upstream
pool's, upstream_pool.py), one set of buffers shared by all of them.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import mmap
import os
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any, Literal

log = logging.getLogger(__name__)

SLOTS = 32  # datagrams per call: load brings batches of 1-20 here; more only costs memory
SLOT_SIZE = 4096  # bytes per received datagram (a DNS query is rarely over 512)
CLIENT_MEMO = 65_536  # source addresses remembered as text
HOST_MEMO = 4096  # hosts remembered packed, for answers sent after their batch
# struct sockaddr_in/_in6: the family in host order, port (and flow info) in network order.
_AF_INET = struct.pack("=H", socket.AF_INET)
_AF_INET6 = struct.pack("=H", socket.AF_INET6)
_PORT = struct.Struct("!H")
_PORT_FLOW = struct.Struct("!HI")
_SCOPE = struct.Struct("=I")
_MSG_DONTWAIT = 0x40
_MSG_TRUNC = 0x20
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint))


def _libc() -> tuple[Any, Any] | None:
    """(recvmmsg, sendmmsg) from the C library, holding the GIL (calls never block: the
    socket is non-blocking), or None where there are none."""
    if not sys.platform.startswith("linux"):
        return None
    # PyDLL: keep the GIL across the call; releasing and taking it back costs more than a
    # non-blocking system call. glibc's soname first: find_library runs ldconfig (~7 ms).
    try:
        libc = ctypes.PyDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library

        try:
            libc = ctypes.PyDLL(find_library("c"), use_errno=True)
        except OSError:
            return None
    try:
        recv, send = libc.recvmmsg, libc.sendmmsg
    except AttributeError:
        return None
    recv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
    recv.restype = ctypes.c_int
    send.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    send.restype = ctypes.c_int
    return recv, send


_CALLS = _libc()


def available() -> bool:
    """True if batched UDP can be used on this platform."""
    return _CALLS is not None


def _zeroed(size: int) -> ctypes.Array[ctypes.c_char]:
    """`size` zero bytes that take no memory until written: an anonymous mapping, whose pages
    the kernel provides on first touch (create_string_buffer writes every byte, so its
    32 slots of 4 KiB were resident from the start even if only one was ever used)."""
    if size == 0:
        return ctypes.create_string_buffer(0)
    return (ctypes.c_char * size).from_buffer(mmap.mmap(-1, size))


class _Slots:
    """SLOTS message headers, each with its own buffer and address slot."""

    def __init__(self, slots: int, size: int, namelen: int) -> None:
        self.headers = (_Mmsghdr * slots)()
        self.iovecs = (_Iovec * slots)()
        self.buffers = _zeroed(slots * size)
        self.names = _zeroed(slots * namelen)
        base, names = ctypes.addressof(self.buffers), ctypes.addressof(self.names)
        for i in range(slots):
            self.iovecs[i].iov_base = base + i * size
            self.iovecs[i].iov_len = size
            header = self.headers[i].msg_hdr
            # namelen 0 (a connected socket): no address at all, which the kernel then neither
            # reads nor writes (a non-NULL name of length 0 would be overwritten on receive).
            header.msg_name = names + i * namelen if namelen else None
            header.msg_namelen = namelen
            header.msg_iov = ctypes.addressof(self.iovecs[i])
            header.msg_iovlen = 1
        self.address = ctypes.addressof(self.headers)
        self.names_at = names  # where slot 0's address is; slot i's is i * namelen further
        self.data = memoryview(self.buffers).cast("B")
        self.name = memoryview(self.names).cast("B")
        stride = ctypes.sizeof(_Mmsghdr)
        # Per-slot fields as list-like views: word k of slot i is at i * step + k.
        self.lengths = _field(self.headers, _Mmsghdr.msg_len.offset, "I", stride, slots)
        flags_at = _Mmsghdr.msg_hdr.offset + _Msghdr.msg_flags.offset
        self.flags = _field(self.headers, flags_at, "i", stride, slots)
        self.sizes = _field(self.iovecs, _Iovec.iov_len.offset, "L", ctypes.sizeof(_Iovec), slots)
        name_at = _Mmsghdr.msg_hdr.offset + _Msghdr.msg_name.offset  # a pointer: unsigned long
        self.name_pointers = _field(self.headers, name_at, "L", stride, slots)


def _field(
    array: Any, offset: int, fmt: Literal["I", "i", "L"], stride: int, count: int
) -> memoryview[int]:
    """A view of one field of every element of a ctypes array, by index ("L": size_t, which
    is unsigned long on Linux, 32- or 64-bit)."""
    width = struct.calcsize(fmt)
    assert stride % width == 0 and offset % width == 0
    whole = memoryview(array).cast("B").cast(fmt)
    step = stride // width
    return whole[offset // width :: step][:count]


class Datagrams:
    """One bound UDP socket, read and answered in batches.

    receive() fills slots 0..n-1; packets(n), clients(n), source(i) and peer(i) describe them;
    send() answers any of them in one call, and sendto() one answer at once (for answers that
    finish after their batch). Errors are counted in `dropped`, never raised: the server must keep
    answering.
    """

    def __init__(
        self,
        sock: socket.socket,
        slots: int = SLOTS,
        size: int = SLOT_SIZE,
        unsent: Callable[[], None] | None = None,
    ) -> None:
        if _CALLS is None:
            raise OSError("batched UDP (recvmmsg) is not available on this platform")
        self._recvmmsg, self._sendmmsg = _CALLS
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.namelen = 16 if sock.family == socket.AF_INET else 28
        self.slots = slots
        self.size = size
        self._in = _Slots(slots, size, self.namelen)
        self._out = _Slots(slots, size, self.namelen)
        self._clients: dict[int | bytes, str] = {}
        self._v4 = self._in.name.cast("I") if self.namelen == 16 else None
        self.dropped = 0  # answers the kernel would not take
        self._unsent = unsent  # told of each (the server counts it in its metrics)
        self.truncated = 0  # datagrams longer than a slot (answered from what fitted)
        self.closed = False
        self._late: list[tuple[bytes, bytes]] = []  # (answer, sockaddr) for this loop turn
        self._packed: dict[str, bytes] = {}  # host text -> packed address, for sendto()

    def receive(self) -> int:
        """Take the datagrams waiting, up to the slot count; 0 if none (or an error)."""
        n: int = self._recvmmsg(self.fd, self._in.address, self.slots, _MSG_DONTWAIT, None)
        if n < 0:
            code = ctypes.get_errno()
            if code not in _AGAIN:
                log.debug("recvmmsg: %s", errno.errorcode.get(code, code))
            return 0
        flags = self._in.flags
        for i in range(n):
            if flags[i] & _MSG_TRUNC:
                self.truncated += 1
        return n

    def packets(self, n: int) -> list[bytes]:
        """The bytes of datagrams 0..n-1 (one call a batch: per-packet calls cost more)."""
        # Slicing the ctypes array gives bytes in one step (a memoryview slice takes two).
        data: Any = self._in.buffers  # typeshed has a slice of it as list[bytes]; it is bytes
        lengths, size = self._in.lengths, self.size
        return [data[i * size : i * size + lengths[i]] for i in range(n)]

    def clients(self, n: int) -> list[str]:
        """The source addresses of datagrams 0..n-1 as text (as asyncio would give them)."""
        memo = self._clients
        if self._v4 is not None:  # sin_addr: bytes 4..7 of each 16-byte sockaddr_in
            keys: list[int | bytes] = list(self._v4[1 : 4 * n : 4])
        else:  # address and scope of each sockaddr_in6
            name = self._in.name
            keys = [name[i * 28 + 8 : i * 28 + 28].tobytes() for i in range(n)]
        texts = [memo.get(key) for key in keys]
        if None in texts:
            for i, key in enumerate(keys):
                if texts[i] is None:
                    if len(memo) >= CLIENT_MEMO:
                        memo.clear()
                    texts[i] = memo[key] = self.peer(i)[0]
        return texts  # type: ignore[return-value]  # no None left

    def source(self, i: int) -> bytes:
        """The source address of datagram i as the kernel wrote it (struct sockaddr): what
        sendto() takes to answer it, without making an address tuple and packing it again."""
        start = i * self.namelen
        names: Any = self._in.names  # a slice of the ctypes array is bytes
        raw: bytes = names[start : start + self.namelen]
        return raw

    def peer(self, i: int) -> tuple[Any, ...]:
        """The source address of datagram i as a socket address tuple."""
        return self._address(self.source(i))

    def _address(self, raw: bytes) -> tuple[Any, ...]:
        """A struct sockaddr of this socket's family as a socket address tuple."""
        port = int.from_bytes(raw[2:4], "big")
        if self.namelen == 16:
            return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
        host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        flowinfo = int.from_bytes(raw[4:8], "big")
        scope = int.from_bytes(raw[24:28], sys.byteorder)
        if scope:
            try:
                host = f"{host}%{socket.if_indextoname(scope)}"
            except OSError:
                host = f"{host}%{scope}"
        return host, port, flowinfo, scope

    def send(self, replies: list[tuple[int, bytes]]) -> None:
        """Answer datagrams: (slot, answer) pairs, each to the sender of that slot, all in one
        call. Answers the kernel refuses are counted in `dropped`."""
        out, size, namelen = self._out, self.size, self.namelen
        data, sizes, pointers = out.data, out.sizes, out.name_pointers
        sources = self._in.names_at  # each answer's header points at its query's source
        queued = 0
        for i, wire in replies:
            length = len(wire)
            if length > size:  # larger than a slot: on its own
                self.sendto(wire, self.source(i))
                continue
            start = queued * size
            data[start : start + length] = wire
            sizes[queued] = length
            pointers[queued] = sources + i * namelen
            queued += 1
        self._flush(queued)

    def _flush(self, queued: int) -> None:
        sent = 0
        stride = ctypes.sizeof(_Mmsghdr)
        while sent < queued:
            address = self._out.address + sent * stride
            n: int = self._sendmmsg(self.fd, address, queued - sent, 0)
            if n <= 0:
                code = ctypes.get_errno()
                if code == errno.EINTR:
                    continue
                # EAGAIN/ENOBUFS: the send buffer is full; an error: that one destination.
                log.debug("sendmmsg: %s", errno.errorcode.get(code, code))
                self._drop()
                sent += 1
                continue
            sent += n

    def sendto(self, wire: bytes, peer: tuple[Any, ...] | bytes) -> None:
        """Send one answer that finished after its batch (a cache miss answered upstream), to
        an address tuple or to a datagram's source() as the kernel gave it.

        On a running event loop the answers of one loop turn are gathered and leave together
        in one sendmmsg when it ends: the upstream pool wakes many of them at once, and one
        system call each cost more than the rest of their sending. Off a loop, or for an
        answer larger than a slot, it is sent at once."""
        if self.closed:
            return
        if len(wire) <= self.size:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is None:
                name = None
            elif isinstance(peer, bytes):
                name = peer if len(peer) == self.namelen else None
            else:
                name = self._sockaddr(peer)
            if loop is not None and name is not None:
                late = self._late
                late.append((wire, name))
                if len(late) == 1:
                    loop.call_soon(self._send_late)
                return
        self._send_now(wire, peer)

    def _sockaddr(self, peer: tuple[Any, ...]) -> bytes | None:
        """The peer as the kernel's struct sockaddr (None if it cannot be written as one).
        Hosts are remembered packed (clients' source ports change with every query, so a memo
        by port would only grow)."""
        try:
            packed = self._packed.get(peer[0])
            if packed is None:
                family = socket.AF_INET if self.namelen == 16 else socket.AF_INET6
                packed = socket.inet_pton(family, peer[0].partition("%")[0])
                if len(self._packed) >= HOST_MEMO:
                    self._packed.clear()
                self._packed[peer[0]] = packed
            if self.namelen == 16:
                return _AF_INET + _PORT.pack(peer[1]) + packed + bytes(8)
            _, port, flowinfo, scope = peer
            return _AF_INET6 + _PORT_FLOW.pack(port, flowinfo) + packed + _SCOPE.pack(scope)
        except (OSError, ValueError, TypeError, AttributeError, struct.error):
            return None

    def _send_late(self) -> None:
        """End of the loop turn: the late answers gathered by sendto(), batch by batch."""
        late, self._late = self._late, []
        if self.closed:
            return
        out, size, namelen = self._out, self.size, self.namelen
        data, sizes, pointers, names = out.data, out.sizes, out.name_pointers, out.name
        for start in range(0, len(late), self.slots):
            chunk = late[start : start + self.slots]
            for j, (wire, name) in enumerate(chunk):
                at = j * size
                data[at : at + len(wire)] = wire
                sizes[j] = len(wire)
                names[j * namelen : (j + 1) * namelen] = name
                pointers[j] = out.names_at + j * namelen
            self._flush(len(chunk))

    def _send_now(self, wire: bytes, peer: tuple[Any, ...] | bytes) -> None:
        try:
            address = self._address(peer) if isinstance(peer, bytes) else peer
            self.sock.sendto(wire, address)
        except (OSError, ValueError) as exc:
            log.debug("sendto %s: %s", peer[0], exc)
            self._drop()

    def _drop(self) -> None:
        self.dropped += 1
        if self._unsent is not None:
            self._unsent()

    def is_closing(self) -> bool:
        """As asyncio's transports: True once closed."""
        return self.closed

    def close(self) -> None:
        """Close the socket (the caller removes it from the event loop first)."""
        self.closed = True
        self.sock.close()


QUERY_SLOT = 512  # bytes per sent query: a name is at most 255 bytes, with EDNS about 300


class Connected:
    """Batched I/O on connected UDP sockets (no addresses: each socket has one peer).

    One instance serves every socket of a pool: a call finishes before the next starts, so
    the buffers are shared. Where recvmmsg is missing it reads and writes one datagram per
    call with the same results. receive() and send() raise OSError for a socket error other
    than "would block" (ECONNREFUSED after an ICMP port unreachable, say).
    """

    def __init__(self, slots: int = SLOTS, size: int = SLOT_SIZE, send_size: int = QUERY_SLOT):
        self.slots = slots
        self.size = size
        self.send_size = send_size
        self.batched = _CALLS is not None
        if _CALLS is not None:
            self._recvmmsg, self._sendmmsg = _CALLS
            self._in = _Slots(slots, size, 0)
            self._out = _Slots(slots, send_size, 0)
        self.cut: list[int] = []  # indexes of the last receive's datagrams longer than a slot

    def receive(self, fd: int) -> list[bytes]:
        """The datagrams waiting on `fd`, up to the slot count ([] if none)."""
        if not self.batched:
            return self._receive_one_by_one(fd)
        n: int = self._recvmmsg(fd, self._in.address, self.slots, _MSG_DONTWAIT, None)
        if n < 0:
            code = ctypes.get_errno()
            if code in _AGAIN:
                return []
            raise OSError(code, os.strerror(code))
        flags = self._in.flags
        self.cut = [i for i in range(n) if flags[i] & _MSG_TRUNC]
        data: Any = self._in.buffers
        lengths, size = self._in.lengths, self.size
        return [data[i * size : i * size + lengths[i]] for i in range(n)]

    def _receive_one_by_one(self, fd: int) -> list[bytes]:
        self.cut = []
        out: list[bytes] = []
        while len(out) < self.slots:
            try:
                out.append(os.read(fd, 65535))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                if out:
                    break  # the error stays queued on the socket for the next call
                raise
        return out

    def send(self, fd: int, wires: list[bytes]) -> int:
        """Send the messages in order, batches of up to `slots` per call; returns how many the
        kernel took. Stops at a full send buffer (the rest are not sent); raises OSError for
        any other error before the first message of a call is taken."""
        sent = 0
        while sent < len(wires):
            chunk = wires[sent : sent + self.slots]
            took = self._send_chunk(fd, chunk)
            if took <= 0:
                return sent
            sent += took
        return sent

    def _send_chunk(self, fd: int, wires: list[bytes]) -> int:
        if not self.batched or any(len(w) > self.send_size for w in wires):
            return self._send_one_by_one(fd, wires)
        out, size = self._out, self.send_size
        data, sizes = out.data, out.sizes
        for i, wire in enumerate(wires):
            start = i * size
            data[start : start + len(wire)] = wire
            sizes[i] = len(wire)
        while True:
            n: int = self._sendmmsg(fd, out.address, len(wires), 0)
            if n >= 0:
                return n
            code = ctypes.get_errno()
            if code == errno.EINTR:
                continue
            if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                return 0
            raise OSError(code, os.strerror(code))

    @staticmethod
    def _send_one_by_one(fd: int, wires: list[bytes]) -> int:
        for i, wire in enumerate(wires):
            try:
                os.write(fd, wire)
            except (BlockingIOError, InterruptedError):
                return i
            except OSError:
                if i:
                    return i
                raise
        return len(wires)
