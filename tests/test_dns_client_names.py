"""Who asked, in reports: each query is named as its address's lease or static entry said when
it was tallied; an address that changes hands mid-window gives two summaries; `explain --client`
and `check` show the names and the lease-file warnings; and the name reaches the hub's alert.

Real lease files, a real Mosquitto, and end to end real `hedgerow-dns serve`, `hedgerow-hub
serve` and `dig`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.dns.cli import main as dns_main
from agent.dns.client_reports import DnsReporter
from agent.dns.client_window import ImmediateEvents, Known, Window
from agent.dns.config.model import ClientsConfig, LeaseFile
from agent.filter.querylog import QueryRecord
from common.identity import Identity
from common.wire import Kind, payload
from hub.cli import main as hub_main
from hub.model import StoredReport
from hub.rules.wording import who
from tests.dns_support import FakeUpstream, dig, free_dns_port, write_config
from tests.hub_ingest_fixtures import make_hub, query
from tests.services import Mosquitto, daemon
from tests.test_dns_to_hub import BIN, _alerts, _answers
from tests.test_report_publisher import opened_in_order
from tests.test_report_support import make_device, subscriber
from tests.waiting import wait_until

IP = "10.1.2.34"
FAR = 4_000_000_000  # a dnsmasq expiry long after the test


def rec(t: int, qname: str, verdict: str = "resolved", category: str | None = None) -> QueryRecord:
    return QueryRecord(t, IP, "pupils", qname, 1, verdict, category, None)


def test_an_address_that_changes_hands_gives_one_summary_per_device() -> None:
    window = Window(0)
    lt42, lt77 = Known("lt-042", "02:00:5e:10:00:01"), Known("lt-077", "02:00:5e:10:00:07")
    window.add(rec(1, "a.example"), lt42)
    window.add(rec(2, "casino.example", "blocked", "gambling"), lt42)
    window.add(rec(3, "b.example"), lt77)
    window.add(rec(4, "c.example"))  # a moment nobody was known: a third tally
    summaries = window.summaries(10)
    for summary in summaries:
        payload.validate(Kind.SUMMARY, summary)
    by_name = {s["client"].get("hostname"): s for s in summaries}
    assert by_name["lt-042"]["client"] == {
        "ip": IP,
        "group": "pupils",
        "hostname": "lt-042",
        "mac": "02:00:5e:10:00:01",
    }
    assert by_name["lt-042"]["counts"] == {"resolved": 1, "blocked": 1}
    assert (by_name["lt-042"]["first_seen"], by_name["lt-042"]["last_seen"]) == (1, 2)
    assert by_name["lt-077"]["counts"] == {"resolved": 1}
    assert by_name[None]["client"] == {"ip": IP, "group": "pupils"}


def test_an_arp_mac_fills_in_and_never_splits_a_window() -> None:
    window = Window(0)
    window.add(rec(1, "a.example"), Known("lt-042"))
    window.add(rec(2, "b.example"), Known("lt-042", None, "02:00:5e:10:00:99"))
    (summary,) = window.summaries(10, {IP: "02:00:5e:10:00:aa"})
    assert summary["client"]["mac"] == "02:00:5e:10:00:99"  # the tally's ARP MAC first
    assert summary["counts"] == {"resolved": 2}


def test_events_carry_the_name_and_two_devices_are_two_events() -> None:
    events = ImmediateEvents(["gambling"])
    blocked = rec(1, "casino.example", "blocked", "gambling")
    first = events.check(blocked, None, Known("lt-042", "02:00:5e:10:00:01"))
    again = events.check(blocked, None, Known("lt-042", "02:00:5e:10:00:01"))
    other = events.check(blocked, None, Known("lt-077", None, "02:00:5e:10:00:07"))
    assert first is not None and again is None and other is not None
    assert first["client"]["hostname"] == "lt-042"
    assert other["client"] == {
        "ip": IP,
        "group": "pupils",
        "hostname": "lt-077",
        "mac": "02:00:5e:10:00:07",
    }
    for event in (first, other):
        payload.validate(Kind.EVENT, event)


def dnsmasq(path: Path, hostname: str, mac: str) -> None:
    """Write a one-lease dnsmasq file the way a DHCP server replaces it: new file, rename."""
    new = path.with_suffix(".new")
    new.write_text(f"{FAR} {mac} {IP} {hostname} *\n")
    new.replace(path)


def test_a_lease_replaced_while_running_names_later_queries_only(
    tmp_path: Path, broker: Mosquitto
) -> None:
    device = make_device(tmp_path, broker.url)
    leases = tmp_path / "dnsmasq.leases"
    dnsmasq(leases, "lt-042", "02:00:5e:10:00:01")
    clients = ClientsConfig(leases=(LeaseFile("dnsmasq", leases),), check_s=1)
    with subscriber(broker.url) as sub:
        reporter = DnsReporter(
            device.directory,
            3600,
            ["gambling"],
            tmp_path / "spool",
            clients=clients,
            arp_path=tmp_path / "no-arp",
            poll_s=0.02,
        )
        reporter.start()
        try:
            assert reporter.known(IP) == Known("lt-042", "02:00:5e:10:00:01")
            reporter.offer(rec(1, "casino.example", "blocked", "gambling"))
            sub.wait_for(lambda m: any(x.topic.endswith("/event") for x in m))
            dnsmasq(leases, "evil\x1b[2J\u202ename", "02:00:5e:10:00:07")
            wait_until(
                lambda: (
                    reporter.known(IP) is not None
                    and reporter.known(IP) != Known("lt-042", "02:00:5e:10:00:01")
                ),
                what="the replaced lease file to be read",
            )
            reporter.offer(rec(2, "casino.example", "blocked", "gambling"))
            sub.wait_for(lambda m: sum(x.topic.endswith("/event") for x in m) == 2)
            # A file gone missing is a warning, counted; it names nobody and stops nothing.
            leases.unlink()
            wait_until(lambda: reporter.known(IP) is None, what="the missing lease file")
            assert reporter.counters()["clients_lease_files_with_problems"] == 1
            reporter.offer(rec(3, "a.example"))
        finally:
            reporter.stop()
        sub.wait_for(lambda m: sum(x.topic.endswith("/summary") for x in m) == 3)
        opened = opened_in_order(device, sub.messages)
    events = [o for o in opened if o["kind"] is Kind.EVENT]
    assert [e["client"].get("hostname") for e in events] == ["lt-042", "evil[2Jname"]
    summaries = {o["client"].get("hostname"): o for o in opened if o["kind"] is Kind.SUMMARY}
    assert summaries["lt-042"]["counts"] == {"blocked": 1}  # not renamed by the later lease
    assert summaries["evil[2Jname"]["client"]["mac"] == "02:00:5e:10:00:07"
    assert summaries[None]["counts"] == {"resolved": 1}


def test_explain_and_check_show_names_and_lease_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text(f"{FAR} 02:00:5e:10:00:01 127.0.1.10 lt-042 *\nnot a lease\n")
    clients = (
        f'[clients]\nleases = [{{format = "dnsmasq", path = "{leases}"}}, '
        f'{{format = "isc", path = "{tmp_path / "absent.leases"}"}}]\n'
        '[clients.names]\n"127.0.1.11" = { name = "lt-043", mac = "02:00:5e:10:00:43" }\n'
    )
    config = write_config(tmp_path, ["127.0.0.1:1"], free_dns_port(), extra=clients)
    assert dns_main(["check", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert f"warning: [clients] lease file {leases} (dnsmasq): 1 entries not in dnsmasq" in err
    assert f"warning: [clients] lease file {tmp_path / 'absent.leases'} (isc): cannot read" in err
    explain = ["explain", "--config", str(config), "casino.example"]
    assert dns_main([*explain, "--client", "127.0.1.10"]) == 0
    out = capsys.readouterr().out
    assert "client 127.0.1.10 (lt-042, 02:00:5e:10:00:01), group pupils" in out
    assert dns_main([*explain, "--client", "127.0.1.11", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert (result["hostname"], result["mac"]) == ("lt-043", "02:00:5e:10:00:43")
    assert dns_main([*explain, "--client", "127.0.1.12"]) == 0
    assert "client 127.0.1.12 (no name or MAC known), group pupils" in capsys.readouterr().out


def test_the_hub_alert_names_the_device(tmp_path: Path, broker: Mosquitto) -> None:
    """A lease names 127.0.1.10 lt-042: the immediate event's alert says "lt-042 (127.0.1.10,
    group pupils)" and the stored summary carries the hostname and MAC."""
    hub = make_hub(tmp_path, broker.url, None)
    bundle = tmp_path / "dns-1.bundle"
    enrol = ["enroll", "bundle", "--config", str(hub.path), "--device", "dns-1"]
    assert (
        hub_main([*enrol, "--class", "sinkhole", "--broker", broker.url, "--out", str(bundle)]) == 0
    )
    identity_dir = tmp_path / "dns-identity"
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text(f"{FAR} 02:00:5e:10:00:01 127.0.1.10 lt-042 *\n")
    extra = (
        f'[report]\nhub = "{broker.url}"\nidentity = "{identity_dir}"\n'
        'interval_s = 10\nimmediate = ["adult"]\n'
        f'[clients]\ncheck_s = 1\nleases = [{{format = "dnsmasq", path = "{leases}"}}]\n'
    )
    with FakeUpstream() as upstream:
        port = free_dns_port()
        config = write_config(tmp_path, [upstream.address], port, extra=extra)
        assert dns_main(["enroll", "--config", str(config), "--bundle", str(bundle)]) == 0
        assert Identity.load(identity_dir).device_class == "sinkhole"
        hub_log = tmp_path / "hub.log"
        with (
            daemon(f"{BIN}/hedgerow-hub", "serve", "--config", str(hub.path), log=hub_log),
            daemon(
                f"{BIN}/hedgerow-dns", "serve", "--config", str(config), log=tmp_path / "dns.log"
            ),
        ):
            wait_until(lambda: _answers(port), what="hedgerow-dns to answer")
            wait_until(lambda: "hedgerow-hub serving" in hub_log.read_text(), what="the hub")
            assert "0.0.0.0" in dig(port, "adult.example", "+short", source="127.0.1.10")
            wait_until(lambda: _alerts(hub), timeout=90, what="a blocked-content alert")
            pupil = "SELECT body FROM reports WHERE kind = 'summary' AND client_ip = '127.0.1.10'"
            wait_until(lambda: bool(query(hub, pupil)), timeout=40, what="the pupil's summary")
    alert: dict[str, Any] = _alerts(hub)[0]
    assert str(alert["summary"]).startswith(
        "lt-042 (127.0.1.10, group pupils) behind DNS filter cape-primary/dns-1 tried to reach "
        "an adult site"
    ), alert
    body = json.loads(query(hub, pupil)[0][0])
    assert body["client"] == {
        "ip": "127.0.1.10",
        "group": "pupils",
        "hostname": "lt-042",
        "mac": "02:00:5e:10:00:01",
    }


@pytest.mark.parametrize(
    ("device_class", "client", "said"),
    [
        (
            "sinkhole",
            {"ip": IP, "group": "pupils", "hostname": "lt-042"},
            f"lt-042 ({IP}, group pupils) behind DNS filter cape-primary/pi-1",
        ),
        (
            "sinkhole",
            {"ip": IP, "hostname": "lt-042"},
            f"lt-042 ({IP}) behind DNS filter cape-primary/pi-1",
        ),
        (
            "sinkhole",
            {"ip": IP, "group": "pupils", "hostname": "  "},
            f"A device at {IP} (group pupils) behind DNS filter cape-primary/pi-1",
        ),
        (
            "sinkhole",
            {"ip": IP, "group": "pupils", "user": "Emma Smith"},
            f"A device at {IP} (group pupils) behind DNS filter cape-primary/pi-1",
        ),
        (
            "sinkhole",
            {"ip": IP, "group": "pupils", "hostname": "x" * 255},
            f"{'x' * 63} ({IP}, group pupils) behind DNS filter cape-primary/pi-1",
        ),
        (
            "pupil-laptop",
            {"ip": IP, "group": "pupils", "hostname": "lt-042"},
            "Pupil laptop cape-primary/pi-1",
        ),
    ],
)
def test_who_names_the_device_by_its_hostname(
    device_class: str, client: dict[str, str], said: str
) -> None:
    report = StoredReport(
        1, "cape-primary", "pi-1", device_class, None, Kind.EVENT, 1, 0, 0, {"client": client}
    )
    assert who(report) == said
