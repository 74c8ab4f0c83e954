"""Starting, measuring and stopping one server process, by its own PID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.dns.probe import time_to_first_answer


@dataclass(frozen=True)
class ServerSpec:
    """How to start one system: its command line, where it listens, where it logs."""

    name: str
    argv: tuple[str, ...]
    port: int
    log: Path
    version: str = ""
    cwd: Path | None = None


@dataclass(frozen=True)
class Memory:
    """Resident set size now and at its peak, in MiB (from /proc/<pid>/status)."""

    rss_mb: float
    hwm_mb: float


def read_memory(pid: int) -> Memory:
    """VmRSS and VmHWM of a live process."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB
    return Memory(fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0))


def read_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a live process, all threads (from /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


@dataclass
class RunningServer:
    """A started server: its process, and how long it took to give its first answer."""

    spec: ServerSpec
    proc: subprocess.Popen[bytes]
    first_answer_s: float = 0.0
    loaded: Memory = field(default_factory=lambda: Memory(0.0, 0.0))

    def memory(self) -> Memory:
        """Memory of the server right now."""
        return read_memory(self.proc.pid)

    def cpu_seconds(self) -> float:
        """CPU time the server has used so far."""
        return read_cpu_seconds(self.proc.pid)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal to this process only (by its PID)."""
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM our own child, then SIGKILL if it will not go."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)


def start(spec: ServerSpec, probe_name: str, blocked: bool, limit: float = 180.0) -> RunningServer:
    """Start a server and wait until it answers probe_name as wanted (list loaded)."""
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    with spec.log.open("ab") as log:
        started = time.monotonic()
        proc = subprocess.Popen(spec.argv, stdout=log, stderr=subprocess.STDOUT, cwd=spec.cwd)
    server = RunningServer(spec, proc)
    try:
        server.first_answer_s = time_to_first_answer(
            proc, spec.port, probe_name, blocked, started, limit
        )
        server.loaded = server.memory()
    except BaseException:
        server.stop()
        raise
    return server
