"""The on-disk spool: order, durability, bounds, corruption and a failing disk."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.report.errors import SpoolError
from agent.report.spool import Spool
from common.wire import Kind, OpeningKey, SigningKey, seal
from common.wire.header import SuiteId

HUB = OpeningKey.generate(SuiteId.X25519)
SIGNER = SigningKey.generate()
DOC = {"v": 1, "uptime_s": 1, "policy_version": 0}


def envelope(seq: int, time_ms: int = 1) -> bytes:
    """A real sealed heartbeat with sequence number `seq`."""
    return seal(
        Kind.HEARTBEAT,
        DOC,
        site="s",
        device="d",
        seq=seq,
        time_ms=time_ms,
        to=HUB.public_key,
        signer=SIGNER,
    )


def drain(spool: Spool) -> list[int]:
    """Sequence numbers in delivery order (without deleting)."""
    out: list[int] = []
    cursor = 0
    while (entry := spool.next_after(cursor)) is not None:
        out.append(entry.seq)
        cursor = entry.seq
    return out


def test_entries_come_back_in_order_and_survive_reopening(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    for seq in (1, 2, 5, 3):
        assert spool.put(envelope(seq))
    assert drain(spool) == [1, 2, 3, 5]
    spool.delete(2)
    again = Spool(tmp_path, 1 << 20)
    assert drain(again) == [1, 3, 5]
    entry = again.next_after(0)
    assert entry is not None and entry.seq == 1 and entry.header.kind is Kind.HEARTBEAT
    assert again.stats().entries == 3


def test_files_are_private_and_hold_only_sealed_envelopes(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    data = envelope(7)
    spool.put(data)
    (path,) = tmp_path.iterdir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().endswith(data)
    assert b"uptime_s" not in path.read_bytes()  # sealed: the payload is not readable


@pytest.mark.parametrize(
    "data",
    [b"", b"uptime_s=1", b"HW" + bytes(40)],
    ids=["empty", "plaintext", "bad-header"],
)
def test_refuses_anything_but_an_envelope(tmp_path: Path, data: bytes) -> None:
    spool = Spool(tmp_path, 1 << 20)
    with pytest.raises(SpoolError):
        spool.put(data)
    assert len(spool) == 0


def test_full_spool_evicts_the_oldest_routine_reports_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    size = len(envelope(1)) + 12
    spool = Spool(tmp_path, 3 * size)
    assert spool.put(envelope(1), urgent=True)
    assert spool.put(envelope(2))
    assert spool.put(envelope(3))
    with caplog.at_level(logging.WARNING):
        assert spool.put(envelope(4))  # evicts 2, the oldest routine one; 1 is urgent
    assert drain(spool) == [1, 3, 4]
    assert "evicted the 1 oldest routine" in caplog.text
    eviction = spool.take_evictions()
    assert eviction is not None and eviction.count == 1 and eviction.oldest_ms > 0
    assert spool.take_evictions() is None  # taken once
    assert spool.put(envelope(5), urgent=True)  # an urgent one evicts routine ones too
    assert drain(spool) == [1, 4, 5]
    assert spool.stats().evicted == 2 and spool.stats().urgent == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00000000000000000001.u.env",
        "00000000000000000004.env",
        "00000000000000000005.u.env",
    ]


def test_a_spool_full_of_urgent_reports_refuses_new_ones_and_keeps_them_all(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    size = len(envelope(1)) + 12
    spool = Spool(tmp_path, 3 * size)
    results = [spool.put(envelope(seq), urgent=True) for seq in range(1, 4)]
    with caplog.at_level(logging.WARNING):
        results += [spool.put(envelope(4)), spool.put(envelope(5), urgent=True)]
    assert results == [True, True, True, False, False]
    assert drain(spool) == [1, 2, 3]
    assert spool.stats().dropped == 2
    assert "dropping report seq 4" in caplog.text
    spool.delete(1)
    assert spool.put(envelope(6))
    assert drain(spool) == [2, 3, 6]
    again = Spool(tmp_path, 3 * size)  # urgency survives a restart (it is in the file name)
    assert [again.is_urgent(n) for n in (2, 3, 6)] == [True, True, False]
    assert again.urgent_after(0) == 2 and again.urgent_after(3) is None
    assert again.oldest_time_ms() is not None


def test_half_written_file_is_discarded_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.put(envelope(1))
    spool.put(envelope(2))
    (tmp_path / ".00000000000000000003.env.tmp").write_bytes(b"HWS1\x00")
    good = (tmp_path / "00000000000000000002.env").read_bytes()
    (tmp_path / "00000000000000000002.env").write_bytes(good[: len(good) // 2])
    with caplog.at_level(logging.WARNING):
        again = Spool(tmp_path, 1 << 20)
    assert drain(again) == [1]
    assert again.stats().corrupt == 2
    assert "half-written" in caplog.text and "torn or damaged" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000000000000000001.env"]


def test_damaged_entry_is_discarded_when_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, 1 << 20)
    for seq in (1, 2, 3):
        spool.put(envelope(seq))
    path = tmp_path / "00000000000000000002.env"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same length, wrong checksum
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert drain(spool) == [1, 3]
    assert "checksum" in caplog.text
    assert spool.stats().corrupt == 1
    assert not path.exists()


def test_failing_disk_is_a_counted_drop_not_a_crash(tmp_path: Path) -> None:
    # A real write failure: a file size limit makes the kernel refuse the write (EFBIG).
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from tests.test_report_spool import envelope
        from agent.report.spool import Spool
        spool = Spool({str(tmp_path)!r}, 1 << 20)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))
        ok = spool.put(envelope(1))
        print(ok, spool.stats().dropped, len(spool))
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "1", "0"]
    assert "cannot write" in result.stderr
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_bad_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpoolError, match=r"not a directory|cannot create"):
        Spool(tmp_path / "file", 1024)
    with pytest.raises(SpoolError, match="positive"):
        Spool(tmp_path / "ok", 0)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(1, 40)), max_size=40))
def test_spool_matches_a_model(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[bool, int]]
) -> None:
    directory = tmp_path_factory.mktemp("spool")
    spool = Spool(directory, 1 << 20)
    model: set[int] = set()
    for put, seq in ops:
        if put and seq not in model:
            spool.put(envelope(seq))
            model.add(seq)
        elif not put:
            spool.delete(seq)
            model.discard(seq)
    assert drain(spool) == sorted(model)
    assert drain(Spool(directory, 1 << 20)) == sorted(model)


def test_routine_reports_past_the_age_bound_are_evicted_and_reported(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.put(envelope(1, 1_000))
    spool.put(envelope(2, 2_000), urgent=True)  # urgent: never aged out
    spool.put(envelope(3, 3_000))
    spool.put(envelope(4, 9_000))
    again = Spool(tmp_path, 1 << 20)  # times read back from the files after a restart
    assert again.evict_older_than(5_000) == 2
    assert drain(again) == [2, 4]
    eviction = again.take_evictions()
    assert eviction is not None
    assert (eviction.count, eviction.oldest_ms, eviction.newest_ms) == (2, 1_000, 3_000)
    assert again.evict_older_than(5_000) == 0
