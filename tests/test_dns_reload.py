"""SIGHUP to a real `hedgerow-dns serve` process while a client keeps asking: no query is lost
or answered wrongly across reloads."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
from pathlib import Path

import dnslib

from agent.filter.lists.copies import slot
from tests.dns_support import FakeUpstream, free_dns_port, write_config
from tests.services import stop_process
from tests.test_dns_cli import CLI
from tests.waiting import wait_until

QUERIES = 2500
SIGHUPS = 5
BIG_LIST = 200_000


def test_sighup_under_load_loses_no_query(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        port = free_dns_port()
        path = write_config(tmp_path, [upstream.address], port)
        proc = subprocess.Popen(
            [*CLI, "serve", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None
            while b"ready" not in (line := proc.stderr.readline()):
                assert line, "server exited before it was ready"
            reloads = 0
            reloaded = threading.Event()

            def watch() -> None:
                nonlocal reloads
                assert proc.stderr is not None
                for line in proc.stderr:
                    if b"reloaded" in line:
                        reloads += 1
                        reloaded.set()

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            answers: list[tuple[str, str]] = []
            lost: list[str] = []
            done = threading.Event()  # set once every SIGHUP has been answered by a reload

            def fire() -> None:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.bind(("127.0.1.9", 0))
                    sock.settimeout(5)
                    i = 0
                    while i < QUERIES or not done.is_set():  # at least QUERIES, across reloads
                        i += 1
                        name = "casino.example" if i % 2 else f"host{i % 50}.school.example"
                        query = dnslib.DNSRecord.question(name)
                        query.header.id = i & 0xFFFF
                        sock.sendto(query.pack(), ("127.0.0.1", port))
                        try:
                            reply = dnslib.DNSRecord.parse(sock.recv(65535))
                        except TimeoutError:
                            lost.append(name)
                            continue
                        assert reply.header.id == i & 0xFFFF
                        answers.append((name, str(reply.rr[0].rdata) if reply.rr else "-"))

            client = threading.Thread(target=fire)
            client.start()
            for _ in range(SIGHUPS):
                reloaded.clear()
                proc.send_signal(signal.SIGHUP)
                assert reloaded.wait(30), "no reload logged"
            assert client.is_alive(), "the client finished before the reloads did"
            done.set()
            client.join(120)
            assert not client.is_alive()
            assert reloads == SIGHUPS and proc.poll() is None
            assert not lost and len(answers) >= QUERIES
            for name, address in answers:
                assert address == ("0.0.0.0" if name == "casino.example" else "192.0.2.1"), name
        finally:
            stop_process(proc)
            if proc.stderr is not None:
                proc.stderr.close()


def test_sighup_builds_the_new_lists_in_a_child_process(tmp_path: Path) -> None:
    # The serving process only loads the compiled index the child wrote: the log says so, and
    # a name added to a list before the SIGHUP is blocked after it.
    with FakeUpstream() as upstream:
        port = free_dns_port()
        path = write_config(tmp_path, [upstream.address], port)
        proc = subprocess.Popen(
            [*CLI, "serve", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None
            while b"ready" not in (line := proc.stderr.readline()):
                assert line, "server exited before it was ready"
            assert _first_address(port, "added.example") == "192.0.2.1"
            with open(tmp_path / "lists" / "gambling.txt", "a") as handle:
                handle.write("added.example\n")
            proc.send_signal(signal.SIGHUP)
            seen = []
            while b"reloaded" not in (line := proc.stderr.readline()):
                assert line, "server exited during the reload"
                seen.append(line)
            assert any(b"compiled by a child process" in line for line in seen), seen
            assert any(b"loaded from the compiled index" in line for line in seen), seen
            assert _first_address(port, "added.example") == "0.0.0.0"
        finally:
            stop_process(proc)
            if proc.stderr is not None:
                proc.stderr.close()


def test_lists_changed_during_a_reload_are_built_again_in_the_child(tmp_path: Path) -> None:
    # Two SIGHUPs in quick succession, the list growing before each and the second change
    # landing while the first reload's child is building: every query is answered, both new
    # names end up blocked, and the serving process never parses a list itself. (Whether the
    # first child is really overtaken depends on scheduling, so "building again" in the log is
    # not asserted; it was, in every run while this was written. The deterministic half is
    # test_compiled_only_refuses_to_parse_a_changed_list.)
    with FakeUpstream() as upstream:
        port = free_dns_port()
        path = write_config(tmp_path, [upstream.address], port)
        source = tmp_path / "lists" / "gambling.txt"
        with open(source, "a") as handle:  # big enough that a build takes a while
            handle.writelines(f"filler{i}.blocked.example\n" for i in range(BIG_LIST))
        proc = subprocess.Popen(
            [*CLI, "serve", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None
            while b"ready" not in (line := proc.stderr.readline()):
                assert line, "server exited before it was ready"
            log: list[bytes] = []
            reloaded = threading.Semaphore(0)

            def watch() -> None:
                assert proc.stderr is not None
                for line in proc.stderr:
                    log.append(line)
                    if b"reloaded" in line:
                        reloaded.release()

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            lost: list[str] = []
            wrong: list[tuple[str, str]] = []
            done = threading.Event()

            def fire() -> None:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.bind(("127.0.1.9", 0))
                    sock.settimeout(5)
                    i = 0
                    while not done.is_set():
                        i += 1
                        name = "casino.example" if i % 2 else f"host{i % 50}.school.example"
                        query = dnslib.DNSRecord.question(name)
                        query.header.id = i & 0xFFFF
                        sock.sendto(query.pack(), ("127.0.0.1", port))
                        try:
                            reply = dnslib.DNSRecord.parse(sock.recv(65535))
                        except TimeoutError:
                            lost.append(name)
                            continue
                        address = str(reply.rr[0].rdata) if reply.rr else "-"
                        want = "0.0.0.0" if name == "casino.example" else "192.0.2.1"
                        if reply.header.id != i & 0xFFFF or address != want:
                            wrong.append((name, address))

            client = threading.Thread(target=fire)
            client.start()
            with open(source, "a") as handle:
                handle.write("first-new.example\n")
            proc.send_signal(signal.SIGHUP)
            # Wait until the first reload's child has taken its copy of the list (the cache
            # note records the size it copied), then change the list under it.
            cached = slot(tmp_path / "cache", str(source))
            size = source.stat().st_size

            def copied() -> bool:
                note = cached.read_note()
                return note is not None and note.size == size

            wait_until(copied, 30, 0.001, "the child to take a copy of the changed list")
            with open(source, "a") as handle:
                handle.write("second-new.example\n")
            proc.send_signal(signal.SIGHUP)
            for _ in range(2):
                assert reloaded.acquire(timeout=120), b"".join(log).decode()
            done.set()
            client.join(30)
            assert not client.is_alive()
            assert proc.poll() is None
            assert not lost and not wrong, (lost[:5], wrong[:5])
            assert _first_address(port, "first-new.example") == "0.0.0.0"
            assert _first_address(port, "second-new.example") == "0.0.0.0"
            text = b"".join(log)
            assert b"in this process" not in text and b"refused" not in text, text.decode()
            assert text.count(b"loaded from the compiled index") == 2, text.decode()
        finally:
            stop_process(proc)
            if proc.stderr is not None:
                proc.stderr.close()


def _first_address(port: int, name: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.1.9", 0))
        sock.settimeout(5)
        sock.sendto(dnslib.DNSRecord.question(name).pack(), ("127.0.0.1", port))
        reply = dnslib.DNSRecord.parse(sock.recv(65535))
        return str(reply.rr[0].rdata) if reply.rr else "-"
