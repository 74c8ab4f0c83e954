"""The systems under test and their configurations, all on 127.0.0.1 and the fake upstream.

Each function writes its config into the work directory and returns how to start it. No
system is ever pointed at a real resolver: dnsmasq has ``no-resolv`` and one ``server=``,
unbound forwards "." to the fake upstream and never primes the root.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.dns.lists import BenchData
from bench.dns.process import ServerSpec

DNSMASQ = "/usr/sbin/dnsmasq"
UNBOUND = "/usr/sbin/unbound"
REPO = Path(__file__).resolve().parents[2]
HEDGEROW = REPO / ".venv" / "bin" / "hedgerow-dns"


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not found"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def upstream(workdir: Path, port: int) -> ServerSpec:
    """The fake upstream (bench/dns/upstream.py) in its own Python process."""
    argv = (sys.executable, "-m", "bench.dns.upstream", "--port", str(port))
    log = workdir / "upstream.log"
    return ServerSpec("fake upstream", argv, port, log, "bench.dns.upstream", cwd=REPO)


def dnsmasq(
    workdir: Path,
    data: BenchData,
    port: int,
    upstream_port: int,
    cache_size: int | None = 20_000,
    name: str = "dnsmasq",
) -> ServerSpec:
    """dnsmasq with the list as address=/name/0.0.0.0 lines and a cache for the allowed set.

    dnsmasq's default cache is 150 names, which sends most allowed queries to the upstream;
    "dnsmasq" gives it room for every allowed name, as hedgerow-dns has. cache_size None keeps
    the default: "dnsmasq-default", the configuration the issue's reference figure was taken
    with (the list as address= lines and nothing else).
    """
    conf = workdir / f"{name}.conf"
    conf.write_text(
        "\n".join(
            (
                f"port={port}",
                "listen-address=127.0.0.1",
                "bind-interfaces",
                "no-resolv",
                "no-hosts",
                "no-poll",
                f"server=127.0.0.1#{upstream_port}",
                *([] if cache_size is None else [f"cache-size={cache_size}"]),
                "dns-forward-max=1000",
                "pid-file=",
                f"conf-file={data.dnsmasq_conf}",
                "",
            )
        )
    )
    argv = (DNSMASQ, "--keep-in-foreground", "--log-facility=-", f"--conf-file={conf}")
    return ServerSpec(name, argv, port, workdir / f"{name}.log", _version([DNSMASQ, "-v"]))


def unbound(
    workdir: Path, data: BenchData, port: int, upstream_port: int, threads: int = 1
) -> ServerSpec:
    """unbound forwarding everything to the fake upstream, list as always_null local zones."""
    conf = workdir / "unbound.conf"
    conf.write_text(
        f"""server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{workdir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    num-threads: {threads}
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "iterator"
    qname-minimisation: no
    prefetch: no
    include: "{data.unbound_conf}"
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@{upstream_port}
remote-control:
    control-enable: no
"""
    )
    argv = (UNBOUND, "-d", "-p", "-c", str(conf))
    return ServerSpec("unbound", argv, port, workdir / "unbound.log", _version([UNBOUND, "-V"]))


def hedgerow_config(list_path: Path, port: int, upstream_port: int) -> str:
    """The hedgerow-dns TOML: one 'bench' list blocked for all of 127.0.0.0/8, no rate limit."""
    return f"""[server]
listen = ["127.0.0.1:{port}"]
allow_clients = ["127.0.0.0/8"]
rate_limit_qps = 10000000

[upstream]
servers = ["127.0.0.1:{upstream_port}"]
timeout_ms = 1500

[cache]
max_entries = 20000  # the same as dnsmasq's cache-size in this harness

[[lists]]
category = "bench"
source = "{list_path}"

[groups.pupils]
clients = ["127.0.0.0/8"]
block = ["bench"]

[default]
group = "pupils"
blocked_answer = "null"
"""


def hedgerow(workdir: Path, data: BenchData, port: int, upstream_port: int) -> ServerSpec:
    """hedgerow-dns serve with the contract config (docs/dns.md)."""
    conf = workdir / "hedgerow-dns.toml"
    conf.write_text(hedgerow_config(data.plain_list, port, upstream_port))
    argv = (str(HEDGEROW), "serve", "--config", str(conf))
    head = _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    version = f"working tree on {head}"
    return ServerSpec("hedgerow-dns", argv, port, workdir / "hedgerow-dns.log", version)


def hedgerow_available() -> bool:
    """True when the hedgerow-dns entry point exists and its serve command answers --help."""
    if not HEDGEROW.exists():
        return False
    try:
        out = subprocess.run(
            [str(HEDGEROW), "serve", "--help"], capture_output=True, timeout=30, check=False
        )
    except OSError:
        return False
    return out.returncode == 0
