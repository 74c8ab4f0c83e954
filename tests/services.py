"""Real services for integration tests: Mosquitto and PostgreSQL, started by the test run.

Each starts on a free loopback port, is stopped by its own PID, and raises (never skips) if it
cannot start.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.waiting import wait_until

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class ServiceError(RuntimeError):
    """A service a test needs could not be started."""


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (UDP or TCP)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    """Wait until something accepts TCP connections on host:port."""

    def accepts() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    try:
        wait_until(accepts, timeout, what=f"something listening on {host}:{port}")
    except AssertionError as exc:
        raise ServiceError(f"nothing listening on {host}:{port} after {timeout}s") from exc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM our own child by PID, then SIGKILL if it will not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@dataclass
class Mosquitto:
    """A running broker."""

    port: int
    proc: subprocess.Popen[bytes]
    conf: Path
    log: Path

    @property
    def url(self) -> str:
        """mqtt:// URL for clients."""
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop the broker (to simulate an outage)."""
        stop_process(self.proc)

    def start(self) -> None:
        """(Re)start the broker on the same port and config."""
        self.proc = _spawn_mosquitto(self.conf, self.log)
        wait_port(self.port)


@contextmanager
def daemon(*args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A Hedgerow daemon in a subprocess, its output in `log`, stopped by its PID (SIGTERM)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen([*args], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc)


def _spawn_mosquitto(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(exe):
        raise ServiceError("mosquitto is not installed (run 'make bootstrap' as root)")
    with open(log, "ab") as out:
        return subprocess.Popen([exe, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)


@contextmanager
def mosquitto(extra_conf: str = "", persistence: bool = True) -> Iterator[Mosquitto]:
    """A Mosquitto broker on a free loopback port, anonymous, with persistence in a temp dir."""
    with tempfile.TemporaryDirectory(prefix="hedgerow-mqtt-") as tmp:
        port = free_port()
        conf = Path(tmp) / "mosquitto.conf"
        lines = [
            f"listener {port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {tmp}/",
            "max_queued_messages 0",
            "max_inflight_messages 100",
            "user root",
            extra_conf,
        ]
        conf.write_text("\n".join(lines) + "\n")
        log = Path(tmp) / "mosquitto.log"
        broker = Mosquitto(port, _spawn_mosquitto(conf, log), conf, log)
        try:
            wait_port(port)
            yield broker
        finally:
            broker.stop()


@dataclass
class Postgres:
    """A private PostgreSQL 15 cluster."""

    port: int
    datadir: Path

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        _run_as_postgres([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), name])
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


def _run_as_postgres(cmd: list[str]) -> None:
    # PostgreSQL refuses to run as root; run its tools as the postgres user.
    full = cmd if os.getuid() != 0 else ["runuser", "-u", "postgres", "--", *cmd]
    result = subprocess.run(full, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")


@contextmanager
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL 15 cluster on a free loopback port, trust auth for postgres."""
    if not (PG_BIN / "initdb").exists():
        raise ServiceError(
            f"PostgreSQL 15 is not installed ({PG_BIN}); run 'make bootstrap' as root"
        )
    tmp = Path(tempfile.mkdtemp(prefix="hedgerow-pg-"))
    datadir = tmp / "data"
    if os.getuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    port = free_port()
    try:
        _run_as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ]
        )
        opts = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
        _run_as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(datadir),
                "-o",
                opts,
                "-l",
                str(tmp / "log"),
                "-w",
                "start",
            ]
        )
        yield Postgres(port, datadir)
    finally:
        if (datadir / "postmaster.pid").exists():
            _run_as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(datadir), "-m", "fast", "-w", "stop"]
            )
        shutil.rmtree(tmp, ignore_errors=True)
