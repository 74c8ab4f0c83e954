"""The upstream pool on a laptop that changes networks, in network namespaces
(tests/netns_support.py draws them): the laptop moved between the school and the home network,
asking the off-site resolver on the internet through agent/filter/upstreams.py.

A connected UDP socket keeps the source address it was given at connect(): once the laptop has
left that network, the answers go back to where it was and are lost. The pool must not keep
sending on such a socket (a timed-out query retires it) and the laptop agent renews every socket
when the network changes (Upstreams.renew). CI once failed on exactly this: a false captive
spell after a move, because the captive probe's answers were lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns_support import (
    OFFSITE_HOST,
    UPSTREAM_CHILD,
    Networks,
    NsProcess,
    python_child,
)
from tests.waiting import wait_until

# In the laptop namespace: one Upstreams to argv[1]:argv[2], driven line by line from stdin
# ("ask NAME", "renew"); each outcome printed as a line ("answered NAME", "failed NAME: why", ...).
ASKER_CHILD = """
import asyncio, sys
from agent.filter import packet
from agent.filter.spec import UpstreamServer, UpstreamSpec
from agent.filter.upstreams import UpstreamError, Upstreams

host, port = sys.argv[1], int(sys.argv[2])
server = UpstreamServer(host, port, text=f"{host}:{port}")
upstreams = Upstreams(UpstreamSpec((server,), timeout_ms=1000))


async def main():
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        verb, _, name = line.strip().partition(" ")
        if verb == "renew":
            upstreams.renew()
            print("renewed", flush=True)
            continue
        try:
            await upstreams.ask(name, packet.A, 1, False)
            print("answered " + name, flush=True)
        except UpstreamError as exc:
            print(f"failed {name}: {exc}", flush=True)
    upstreams.close()


asyncio.run(main())
"""


class Asker:
    """The child above, and what it said."""

    def __init__(self, proc: NsProcess) -> None:
        self.proc = proc
        self.seen = 0

    def do(self, line: str) -> str:
        """Send one command; its outcome line (waiting for it)."""
        self.proc.send(line)
        want = self.seen + 2  # the "ready" line, then one per command
        wait_until(
            lambda: len(self.proc.text().splitlines()) >= want,
            timeout=20,
            what=lambda: f"an outcome for {line!r}: {self.proc.text()}",
        )
        self.seen += 1
        return self.proc.text().splitlines()[want - 1]


@pytest.fixture(scope="module")
def roaming(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Networks, Asker]]:
    root: Path = tmp_path_factory.mktemp("roaming")
    nets = Networks()
    procs: list[NsProcess] = []
    try:
        nets.build()
        nets.move("school", [])
        upstream = NsProcess(
            nets.net, python_child(UPSTREAM_CHILD, OFFSITE_HOST), root / "up.log", stdin=True
        )
        procs.append(upstream)
        port = upstream.first_line()
        asker = NsProcess(
            nets.laptop,
            python_child(ASKER_CHILD, OFFSITE_HOST, port),
            root / "asker.log",
            stdin=True,
        )
        procs.append(asker)
        assert asker.first_line() == "ready", asker.text()
        yield nets, Asker(asker)
    finally:
        for proc in reversed(procs):
            proc.stop()
        nets.delete()


def test_without_renew_a_move_costs_at_most_one_query_per_socket(
    roaming: tuple[Networks, Asker],
) -> None:
    nets, asker = roaming
    nets.move("school", [])
    assert asker.do("renew") == "renewed"  # whatever an earlier test left, from here on
    for i in range(8):  # the pool's 4 sockets open, each connected from the school
        assert asker.do(f"ask school{i}.example") == f"answered school{i}.example"
    nets.move("home", [])
    # The first query goes on a socket connected from the school: its answer goes back there
    # and is lost. Each loss retires its socket, new ones are connected from home, and the
    # answers come again: at most one query lost per socket the school left.
    outcomes = [asker.do(f"ask home{i}.example") for i in range(40)]
    assert outcomes[0].startswith("failed home0.example"), outcomes
    # (Kept in use, those 4 sockets lost 29 of these 40 queries.)
    lost = [o for o in outcomes if o.startswith("failed")]
    assert len(lost) <= 4, outcomes


def test_renew_after_a_move_loses_nothing(roaming: tuple[Networks, Asker]) -> None:
    nets, asker = roaming
    for where in ("school", "home", "school", "home"):
        for i in range(8):  # every socket the pool keeps in use, connected from here
            asker.do(f"ask warm-{where}{i}.example")
        other = "home" if where == "school" else "school"
        nets.move(other, [])
        assert asker.do("renew") == "renewed"
        for i in range(8):
            name = f"moved-{other}{i}.example"
            assert asker.do(f"ask {name}") == f"answered {name}"
