"""DHCP lease files (dnsmasq, ISC dhcpd, Kea memfile) to device names: the parsers (tables and
hypothesis), the hostname rules, and ClientNames reading real files as they change, go missing,
turn malformed or are replaced, with the static table of [clients] over them."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.dns.client_window import Known
from agent.dns.clients.leases import (
    MAX_HOSTNAME,
    Lease,
    clean_hostname,
    parse_dnsmasq,
    parse_isc,
    parse_kea,
)
from agent.dns.clients.names import ClientNames, known_now, lease_warnings
from agent.dns.config import load_config
from agent.dns.config.model import ClientsConfig, LeaseFile, StaticName
from common.errors import ConfigError
from common.text import unsafe
from common.wire import Kind, payload

NOW = 1_800_000_000.0
LATER = int(NOW) + 3600

DNSMASQ = f"""\
{LATER} 02:00:5e:10:00:01 10.1.2.34 lt-042 01:02:00:5e:10:00:01
{LATER} 02:00:5e:10:00:02 10.1.2.35 * *
0 02:00:5e:10:00:03 10.1.2.36 forever *
{int(NOW) - 10} 02:00:5e:10:00:04 10.1.2.37 expired *
duid 00:01:00:01:2c:4a:6b:7d:02:00:5e:00:00:01
{LATER} 12345678 2001:db8::34 lt-042-v6 00:01:00:01
"""

ISC = """\
# The format of this file is documented in the dhcpd.leases(5) manual page.
authoring-byte-order little-endian;
server-duid "\\000\\001\\000\\001";
lease 10.1.2.34 {
  starts 4 2027/01/14 08:00:00;
  ends 6 2027/01/16 20:00:00;
  binding state active;
  hardware ethernet 02:00:5E:10:00:01;
  uid "\\001\\002\\000^\\020\\000\\001";
  client-hostname "lt-042";
}
lease 10.1.2.35 {
  ends never;
  binding state active;
  hardware ethernet 02:00:5e:10:00:02;
  client-hostname "old-name";
  on expiry { set x = "}"; }
}
lease 10.1.2.35 {
  ends epoch 1800003600; # Fri Jan 15
  binding state active;
  hardware ethernet 02:00:5e:10:00:02;
  client-hostname "lt-\\"043\\"\\033[2J";
}
lease 10.1.2.36 {
  ends 4 2027/01/14 20:00:00;
  binding state free;
  hardware ethernet 02:00:5e:10:00:03;
  client-hostname "gone";
}
lease 10.1.2.37 {
  ends 1 2020/01/01 00:00:00;
  binding state active;
  client-hostname "ended";
}
host printer { hardware ethernet 02:00:5e:10:00:09; fixed-address 10.1.2.99; }
"""

KEA4 = f"""\
address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context,pool_id
10.1.2.34,02:00:5e:10:00:01,01:02,3600,{LATER},1,0,0,lt-042.school.example.,0,,0
10.1.2.35,02:00:5e:10:00:02,,3600,{LATER},1,0,0,a&#x2cb,0,,0
10.1.2.36,02:00:5e:10:00:03,,3600,{LATER},1,0,0,declined,1,,0
10.1.2.37,02:00:5e:10:00:04,,3600,{LATER},1,0,0,released,0,,0
10.1.2.37,02:00:5e:10:00:04,,0,{LATER},1,0,0,released,0,,0
10.1.2.38,02:00:5e:10:00:05,,3600,{int(NOW) - 1},1,0,0,expired,0,,0
"""

KEA6 = f"""\
address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source,pool_id
2001:db8:0:0::34,00:01:00:01,3600,{LATER},1,1800,0,1,128,0,0,lt-042,02:00:5e:10:00:01,0,,1,2,0
"""


@pytest.mark.parametrize(
    ("parse", "text", "leases", "bad"),
    [
        (
            parse_dnsmasq,
            DNSMASQ,
            {
                "10.1.2.34": Lease("10.1.2.34", "lt-042", "02:00:5e:10:00:01"),
                "10.1.2.35": Lease("10.1.2.35", None, "02:00:5e:10:00:02"),
                "10.1.2.36": Lease("10.1.2.36", "forever", "02:00:5e:10:00:03"),
                "2001:db8::34": Lease("2001:db8::34", "lt-042-v6", None),
            },
            0,
        ),
        (parse_dnsmasq, "garbage\n123 aa 10.1.2.3\nnot-a-time m 10.1.2.4 x *\n", {}, 3),
        (
            parse_isc,
            ISC,
            {
                "10.1.2.34": Lease("10.1.2.34", "lt-042", "02:00:5e:10:00:01"),
                "10.1.2.35": Lease("10.1.2.35", 'lt-"043"[2J', "02:00:5e:10:00:02"),
            },
            0,
        ),
        (parse_isc, 'lease 10.1.2.34 {\n  client-hostname "open', {}, 1),
        (parse_isc, "lease 10.1.2.34 {\n client-hostname x;\n", {}, 1),
        (parse_isc, "lease not-an-ip {\n  binding state active;\n}\n", {}, 1),
        (
            parse_isc,
            'lease 10.1.2.1 {\n  client-hostname "cut";\nlease 10.1.2.2 {\n  client-hostname "b";\n}\n',
            {"10.1.2.2": Lease("10.1.2.2", "b")},
            1,
        ),
        (
            parse_kea,
            KEA4,
            {
                "10.1.2.34": Lease("10.1.2.34", "lt-042.school.example", "02:00:5e:10:00:01"),
                "10.1.2.35": Lease("10.1.2.35", "a,b", "02:00:5e:10:00:02"),
            },
            0,
        ),
        (
            parse_kea,
            KEA6,
            {"2001:db8::34": Lease("2001:db8::34", "lt-042", "02:00:5e:10:00:01")},
            0,
        ),
        (parse_kea, "this is not,a kea file\n1,2\n", {}, 1),
        (parse_kea, KEA4.splitlines()[0] + "\nnot-an-ip,,,x,y\n", {}, 1),
        (parse_kea, "", {}, 0),
    ],
)
def test_parsers(parse: object, text: str, leases: dict[str, Lease], bad: int) -> None:
    assert callable(parse)
    parsed = parse(text, NOW)
    assert parsed.leases == leases
    assert parsed.bad == bad
    assert (parsed.first_bad > 0) == (bad > 0)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("lt-042", "lt-042"),
        ("lt-042.", "lt-042"),
        ("  a\tb\nc  ", "a b c"),
        ("evil\x1b[2J\x07name", "evil[2Jname"),
        ("\u202eevil\u200b", "evil"),
        ("Salle-é 3", "Salle-é 3"),
        ("\x00\x01", None),
        ("x" * 300, "x" * MAX_HOSTNAME),
        ("", None),
    ],
)
def test_clean_hostname(raw: str, clean: str | None) -> None:
    assert clean_hostname(raw) == clean


@given(st.text(max_size=400))
def test_any_hostname_is_safe_and_passes_the_payload_schema(raw: str) -> None:
    name = clean_hostname(raw)
    if name is None:
        return
    assert not unsafe(name) and 0 < len(name) <= MAX_HOSTNAME and name == name.strip()
    client = {"ip": "10.0.0.1", "group": "g", "hostname": name}
    doc = {"v": 1, "type": "blocked", "at": 1, "client": client}
    payload.validate(Kind.EVENT, doc)  # the oracle: whatever survives is accepted


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40))
def test_printable_hostnames_survive(raw: str) -> None:
    """The other half of the oracle: an ordinary name is kept as it was (bar trailing dots)."""
    assert clean_hostname(raw) == (raw.rstrip(".") or None)


@given(st.text(max_size=2000))
def test_parsers_never_raise(text: str) -> None:
    for parse in (parse_dnsmasq, parse_isc, parse_kea):
        parsed = parse(text, NOW)
        assert all(lease.ip == ip for ip, lease in parsed.leases.items())


def names_for(path: Path, fmt: str) -> tuple[ClientNames, list[float]]:
    """ClientNames over one lease file, on a clock the test moves (check_s = 5)."""
    clock = [0.0]
    config = ClientsConfig(leases=(LeaseFile(fmt, path),))
    names = ClientNames(
        config, arp_path=path.parent / "no-arp", clock=lambda: NOW, monotonic=lambda: clock[0]
    )
    return names, clock


def test_a_lease_file_is_read_as_it_changes(tmp_path: Path) -> None:
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text(f"{LATER} 02:00:5e:10:00:01 10.1.2.34 lt-042 *\n")
    names, clock = names_for(leases, "dnsmasq")
    names.poll()
    assert names.lookup("10.1.2.34") == Known("lt-042", "02:00:5e:10:00:01")
    assert names.lookup("10.1.2.99") is None
    # Another device takes the address: nothing changes before check_s has passed...
    leases.write_text(f"{LATER} 02:00:5e:10:00:07 10.1.2.34 lt-077 *\n")
    os.utime(leases, ns=(1, 1))
    names.poll()
    assert names.lookup("10.1.2.34") == Known("lt-042", "02:00:5e:10:00:01")
    clock[0] = 5.0
    names.poll()
    assert names.lookup("10.1.2.34") == Known("lt-077", "02:00:5e:10:00:07")
    assert names.counters()["clients_named"] == 1


def test_a_file_replaced_by_rename_is_read_again(tmp_path: Path) -> None:
    """dhcpd and Kea's LFC write a new file and rename it over the old: a new inode."""
    leases = tmp_path / "dhcpd.leases"
    leases.write_text(
        'lease 10.1.2.34 {\n  binding state active;\n  client-hostname "lt-042";\n}\n'
    )
    names, clock = names_for(leases, "isc")
    names.poll()
    assert names.lookup("10.1.2.34") == Known("lt-042")
    new = tmp_path / "dhcpd.leases~"
    new.write_text('lease 10.1.2.34 {\n  binding state active;\n  client-hostname "lt-043";\n}\n')
    stat = leases.stat()
    os.utime(new, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and time: inode differs
    new.replace(leases)
    clock[0] = 5.0
    names.poll()
    assert names.lookup("10.1.2.34") == Known("lt-043")


def test_missing_and_malformed_files_warn_once_per_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    leases = tmp_path / "kea-leases4.csv"
    names, clock = names_for(leases, "kea")
    with caplog.at_level(logging.INFO, "agent.dns.clients.names"):
        for step in range(3):
            clock[0] = step * 5.0
            names.poll()  # missing, three times: one warning
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        assert "cannot read" in caplog.records[0].getMessage()
        assert names.counters()["clients_lease_files_with_problems"] == 1
        leases.write_text(KEA4 + "10.1.2.40,bad,,x,y\n")
        clock[0] = 20.0
        names.poll()  # malformed: a second warning; the good rows are used
        assert "1 entries not in kea lease format (the first at line 8)" in caplog.text
        assert names.lookup("10.1.2.34") == Known("lt-042.school.example", "02:00:5e:10:00:01")
        clock[0] = 25.0
        names.poll()  # unchanged: no new warning
        assert sum(r.levelno == logging.WARNING for r in caplog.records) == 2
        leases.write_text(KEA4)
        clock[0] = 30.0
        names.poll()
        assert "read again" in caplog.records[-1].getMessage()
        assert names.counters() == {
            "clients_lease_files_with_problems": 0,
            "clients_lease_problems": 2,
            "clients_named": 2,
        }
        leases.unlink()
        clock[0] = 35.0
        names.poll()  # gone: it names nobody any more
        assert names.lookup("10.1.2.34") is None
        assert names.counters()["clients_lease_problems"] == 3


def test_binary_junk_is_a_warning(tmp_path: Path) -> None:
    leases = tmp_path / "dhcpd.leases"
    leases.write_bytes(bytes(range(256)) * 16 + b"lease {{{")
    assert lease_warnings(ClientsConfig(leases=(LeaseFile("isc", leases),)))
    names, _clock = names_for(leases, "isc")
    names.poll()
    assert names.lookup("10.1.2.34") is None


def test_the_static_table_wins_and_arp_fills_in(tmp_path: Path) -> None:
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text(
        f"{LATER} 02:00:5e:10:00:01 10.1.2.34 Emmas-iPad *\n{LATER} * 10.1.2.35 lt-043 *\n"
    )
    arp = tmp_path / "arp"
    arp.write_text(
        "IP address HW type Flags HW address Mask Device\n"
        "10.1.2.35 0x1 0x2 02:00:5e:10:00:35 * eth0\n"
        "10.1.2.50 0x1 0x2 02:00:5e:10:00:50 * eth0\n"
    )
    config = ClientsConfig(
        leases=(LeaseFile("dnsmasq", leases),),
        names=(
            StaticName("10.1.2.34", "lt-042"),
            StaticName("10.1.2.60", "pr-1", "02:00:5e:00:00:60"),
        ),
    )
    names = ClientNames(config, arp_path=arp, clock=lambda: NOW)
    names.poll()
    assert names.lookup("10.1.2.34") == Known("lt-042", "02:00:5e:10:00:01")  # lease MAC kept
    assert names.lookup("10.1.2.35") == Known("lt-043", None, "02:00:5e:10:00:35")
    assert names.lookup("10.1.2.50") == Known(arp_mac="02:00:5e:10:00:50")
    assert names.lookup("10.1.2.60") == Known("pr-1", "02:00:5e:00:00:60")
    names.configure(ClientsConfig(leases=config.leases))  # a reload without the table
    assert names.lookup("10.1.2.34") == Known("Emmas-iPad", "02:00:5e:10:00:01")


CONFIG = """
[upstream]
servers = ["127.0.0.1:5353"]
"""


def config_with(tmp_path: Path, clients: str) -> Path:
    path = tmp_path / "hedgerow-dns.toml"
    path.write_text(f'{CONFIG}\n[server]\nlist_cache_dir = "{tmp_path}"\n{clients}')
    return path


def test_the_clients_section_is_read(tmp_path: Path) -> None:
    leases = tmp_path / "dnsmasq.leases"
    path = config_with(
        tmp_path,
        f"""
[clients]
check_s = 2
leases = [{{format = "dnsmasq", path = "{leases}"}}, {{format = "kea", path = "/k.csv"}}]
[clients.names]
"10.1.2.34" = "lt-042"
"2001:DB8::0:1" = {{ name = "lt-043", mac = "02-00-5E-10-00-01" }}
""",
    )
    clients = load_config(path).clients
    assert clients == ClientsConfig(
        leases=(LeaseFile("dnsmasq", leases), LeaseFile("kea", Path("/k.csv"))),
        names=(
            StaticName("10.1.2.34", "lt-042"),
            StaticName("2001:db8::1", "lt-043", "02:00:5e:10:00:01"),
        ),
        check_s=2,
    )
    assert load_config(config_with(tmp_path, "")).clients == ClientsConfig()


@pytest.mark.parametrize(
    ("clients", "message"),
    [
        (
            '[clients]\nleases = [{format = "dhcp", path = "/x"}]',
            "must be one of dnsmasq, isc, kea",
        ),
        ('[clients]\nleases = [{format = "isc"}]', "path = (missing): is required"),
        (
            '[clients]\nleases = [{format = "isc", path = "/x", when = 1}]',
            "when = 1: is not a known key",
        ),
        ('[clients.names]\n"lt-042" = "10.1.2.34"', "must be a client IP address"),
        ('[clients.names]\n"10.1.2.34" = "Emma Smith\'s laptop"', "a device name is 1 to 63"),
        ('[clients.names]\n"10.1.2.34" = 5', "must be a string"),
        ('[clients.names]\n"10.1.2.34" = {name = "a", mac = "zz"}', "must be a MAC address"),
        (
            '[clients.names]\n"10.1.2.34" = {name = "a", user = "b"}',
            'user = "b": is not a known key',
        ),
        ('[clients.names]\n"::1" = "a"\n"0::1" = "b"', "a second time"),
        ("[clients]\ncheck_s = 0", "check_s = 0: must be at least 1"),
        ("[clients]\nlease = []", "lease = []: is not a known key"),
    ],
)
def test_bad_clients_sections(tmp_path: Path, clients: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config_with(tmp_path, clients))
    assert message in str(caught.value)
    assert "[clients" in str(caught.value)


def test_known_now_is_what_explain_shows(tmp_path: Path) -> None:
    leases = tmp_path / "dnsmasq.leases"
    leases.write_text(f"{int(NOW) * 2} 02:00:5e:10:00:01 10.1.2.34 lt-042 *\n")
    config = ClientsConfig(leases=(LeaseFile("dnsmasq", leases),))
    assert known_now(config, "10.1.2.34", tmp_path / "no-arp") == Known(
        "lt-042", "02:00:5e:10:00:01"
    )
    assert known_now(config, "10.1.2.35", tmp_path / "no-arp") is None
