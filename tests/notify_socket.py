"""A real sd_notify receiver for tests: an AF_UNIX datagram socket, as systemd's, read by a
thread that keeps every message it gets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class NotifySocket:
    """The messages received so far (each a datagram's text), in order."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # the value for NOTIFY_SOCKET
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append(data.decode())

    def received(self) -> list[str]:
        """A copy of the messages so far."""
        with self._lock:
            return list(self.messages)

    def count(self, field: str) -> int:
        """How many messages carry this line (e.g. "WATCHDOG=1")."""
        return sum(1 for m in self.received() if field in m.split("\n"))

    def drain(self, quiet_s: float = 0.3) -> None:
        """Wait until a datagram already sent has surely been read (the reader polls at 0.1 s)."""
        time.sleep(quiet_s)

    def close(self) -> None:
        """Stop reading and close the socket."""
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@contextmanager
def notify_socket(
    directory: Path | None = None, abstract: str | None = None
) -> Iterator[NotifySocket]:
    """A bound receiver: at directory/notify, or in the abstract namespace as '@name'."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract is not None:
        sock.bind(b"\0" + abstract.encode())
        address = "@" + abstract
    else:
        assert directory is not None
        path = directory / "notify"
        sock.bind(str(path))
        address = str(path)
    receiver = NotifySocket(sock, address)
    try:
        yield receiver
    finally:
        receiver.close()
