"""ISC dhcpd -6 leases (dhcpd6.leases, dhcpd.leases(5)): `ia-na` blocks and their `iaaddr`
addresses read as leases with the client's DUID, the name from client-hostname, the FQDN option
or ddns-fwd-name, and the MAC a DUID-LL(T) was made from; malformed blocks are counted and
skipped, never raised; and ClientNames names an IPv6 client from a real file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.dns.clients.leases import Lease, duid_mac, parse_isc
from agent.dns.clients.names import ClientNames
from agent.dns.config.model import ClientsConfig, LeaseFile

NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC

# IAID 1, then a DUID-LLT (type 1, Ethernet, time, 02:00:5e:10:00:01) as dhcpd escapes it.
LLT = "\\001\\000\\000\\000\\000\\001\\000\\001\\036\\226\\231\\265\\002\\000^\\020\\000\\001"
LLT_DUID = "00:01:00:01:1e:96:99:b5:02:00:5e:10:00:01"
# IAID 2, then a DUID-EN (type 2, enterprise 9, identifier): no MAC in it.
EN = "\\002\\000\\000\\000\\000\\002\\000\\000\\000\\011abc"
EN_DUID = "00:02:00:00:00:09:61:62:63"
# IAID 3, then a DUID-LL (type 3, Ethernet, 02:00:5e:10:00:03).
LL = "\\003\\000\\000\\000\\000\\003\\000\\001\\002\\000^\\020\\000\\003"
LL_DUID = "00:03:00:01:02:00:5e:10:00:03"

ISC6 = f"""\
# The format of this file is documented in the dhcpd.leases(5) manual page.
authoring-byte-order little-endian;
server-duid "\\000\\001\\000\\001\\036\\226\\231\\265\\002\\000^\\020\\000\\377";

ia-na "{LLT}" {{
  cltt 4 2027/01/14 08:00:00;
  iaaddr 2001:db8:0:1::34 {{
    binding state active;
    preferred-life 375;
    max-life 600;
    ends 6 2027/01/16 20:00:00;
    set ddns-fwd-name = "ignored.school.example";
    option fqdn.hostname "LT-042";
  }}
}}
ia-na "{EN}" {{
  cltt 4 2027/01/14 08:00:00;
  iaaddr 2001:db8:0:1::35 {{
    binding state active;
    ends never;
    set ddns-fwd-name = "lt-043.school.example.";
    on expiry {{
      set x = "}}";
    }}
  }}
  iaaddr 2001:db8:0:1::36 {{
    binding state expired;
    ends 1 2020/01/01 00:00:00;
  }}
}}
ia-na "{LL}" {{
  cltt 4 2027/01/14 08:00:00;
  iaaddr 2001:DB8:0:1:0:0:0:37 {{
    binding state active;
    ends epoch 1800003600;
    client-hostname "evil\\033[2J";
  }}
}}
ia-pd "{LL}" {{
  iaprefix 2001:db8:100::/56 {{
    binding state active;
  }}
}}
"""


@pytest.mark.parametrize(
    ("text", "leases", "bad"),
    [
        (
            ISC6,
            {
                "2001:db8:0:1::34": Lease(
                    "2001:db8:0:1::34", "LT-042", "02:00:5e:10:00:01", LLT_DUID
                ),
                "2001:db8:0:1::35": Lease(
                    "2001:db8:0:1::35", "lt-043.school.example", None, EN_DUID
                ),
                "2001:db8:0:1::37": Lease(
                    "2001:db8:0:1::37", "evil[2J", "02:00:5e:10:00:03", LL_DUID
                ),
            },
            0,
        ),
        # a later block for the same address replaces the earlier: released now
        (
            ISC6 + f'ia-na "{LLT}" {{\n  iaaddr 2001:db8:0:1::34 {{\n'
            "    binding state released;\n  }\n}\n",
            {"2001:db8:0:1::35", "2001:db8:0:1::37"},
            0,
        ),
        # a later block for the same address renames it
        (
            ISC6 + f'ia-na "{EN}" {{\n  iaaddr 2001:db8:0:1::37 {{\n'
            '    binding state active;\n    option fqdn.fqdn "new.school.example";\n  }\n}\n',
            {"2001:db8:0:1::34", "2001:db8:0:1::35", "2001:db8:0:1::37"},
            0,
        ),
        # v4 and v6 in one file
        (
            'lease 10.1.2.34 {\n  client-hostname "lt-042";\n}\n'
            f'ia-na "{EN}" {{\n  iaaddr 2001:db8::1 {{\n    binding state active;\n  }}\n}}\n',
            {
                "10.1.2.34": Lease("10.1.2.34", "lt-042"),
                "2001:db8::1": Lease("2001:db8::1", None, None, EN_DUID),
            },
            0,
        ),
        # cut short (no closing brace), and followed by a whole block
        (
            f'ia-na "{EN}" {{\n  iaaddr 2001:db8::1 {{\n'
            f'ia-na "{LL}" {{\n  iaaddr 2001:db8::2 {{\n  }}\n}}\n',
            {"2001:db8::2": Lease("2001:db8::2", None, "02:00:5e:10:00:03", LL_DUID)},
            1,
        ),
        (f'ia-na "{EN}" {{\n  iaaddr not-an-address {{\n  }}\n}}\n', {}, 1),
        (f'ia-na "{EN}" {{\n  iaaddr 10.1.2.3 {{\n  }}\n}}\n', {}, 1),
        ('ia-na "\\001\\000" {\n  iaaddr 2001:db8::1 {\n  }\n}\n', {}, 1),  # no DUID
        ('ia-na "\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd" {\n}\n', {}, 1),  # not dhcpd's
        ("ia-na unquoted {\n  iaaddr 2001:db8::1 {\n  }\n}\n", {}, 1),
        (f'ia-na "{EN}" {{\n}}\n', {}, 0),  # an IA with no address: nothing to name
    ],
)
def test_isc6_leases(text: str, leases: dict[str, Lease] | set[str], bad: int) -> None:
    parsed = parse_isc(text, NOW)
    if isinstance(leases, set):
        assert set(parsed.leases) == leases
    else:
        assert parsed.leases == leases
    assert parsed.bad == bad
    assert (parsed.first_bad > 0) == (bad > 0)


def test_a_later_block_renames_an_address() -> None:
    text = (
        ISC6 + f'ia-na "{EN}" {{\n  iaaddr 2001:db8:0:1::37 {{\n'
        '    binding state active;\n    option fqdn.fqdn "new.school.example";\n  }\n}\n'
    )
    lease = parse_isc(text, NOW).leases["2001:db8:0:1::37"]
    assert lease == Lease("2001:db8:0:1::37", "new.school.example", None, EN_DUID)


def test_the_first_bad_line_is_named() -> None:
    text = ISC6 + f'ia-na "{EN}" {{\n  iaaddr nope {{\n  }}\n}}\n'
    parsed = parse_isc(text, NOW)
    assert parsed.bad == 1
    assert parsed.first_bad == ISC6.count("\n") + 1


@pytest.mark.parametrize(
    ("duid", "mac"),
    [
        (bytes.fromhex("00010001" + "1e9699b5" + "02005e100001"), "02:00:5e:10:00:01"),
        (bytes.fromhex("00030001" + "02005e100003"), "02:00:5e:10:00:03"),
        (bytes.fromhex("00030001" + "000000000000"), None),  # all zero: no MAC
        (bytes.fromhex("00030006" + "02005e100003"), None),  # not Ethernet
        (bytes.fromhex("0002" + "00000009" + "616263"), None),  # DUID-EN
        (bytes.fromhex("0004" + "00" * 16), None),  # DUID-UUID
        (bytes.fromhex("0003"), None),
    ],
)
def test_duid_mac(duid: bytes, mac: str | None) -> None:
    assert duid_mac(duid) == mac


@given(st.text(max_size=2000))
def test_isc6_never_raises(body: str) -> None:
    for text in (body, f'ia-na "{body[:40]}" {{\n{body}\n}}\n', f"ia-na {body}"):
        parsed = parse_isc(text, NOW)
        assert all(lease.ip == ip for ip, lease in parsed.leases.items())


@given(st.binary(min_size=0, max_size=140), st.text(max_size=80))
def test_any_iaid_duid_is_read_or_counted(iaid_duid: bytes, name: str) -> None:
    escaped = "".join(
        chr(b) if 0x20 <= b < 0x7F and chr(b) not in '"\\' else f"\\{b:03o}" for b in iaid_duid
    )
    quoted = name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    text = (
        f'ia-na "{escaped}" {{\n  iaaddr 2001:db8::9 {{\n'
        f'    binding state active;\n    client-hostname "{quoted}";\n  }}\n}}\n'
    )
    parsed = parse_isc(text, NOW)
    if 7 <= len(iaid_duid) <= 134:
        assert parsed.bad == 0
        assert parsed.leases["2001:db8::9"].duid == iaid_duid[4:].hex(":")
    else:
        assert parsed.bad == 1 and parsed.leases == {}


def test_client_names_read_a_dhcpd6_file(tmp_path: Path) -> None:
    """A real file on disk, through ClientNames as hedgerow-dns reads it, then changed."""
    path = tmp_path / "dhcpd6.leases"
    path.write_text(ISC6)
    clock = [0.0]
    config = ClientsConfig(leases=(LeaseFile("isc", path),))
    names = ClientNames(
        config, arp_path=tmp_path / "no-arp", clock=lambda: NOW, monotonic=lambda: clock[0]
    )
    names.poll()
    known = names.lookup("2001:db8:0:1::34")
    assert known is not None
    assert (known.hostname, known.mac) == ("LT-042", "02:00:5e:10:00:01")
    assert names.lookup("2001:db8:0:1::36") is None  # expired
    path.write_text(ISC6 + "!!! not dhcpd's\n")
    clock[0] += 10
    names.poll()
    assert names.lookup("2001:db8:0:1::35") is not None  # the good blocks still count
    assert [s.problem for s in names.status()] != [None]
