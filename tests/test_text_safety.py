"""Text that reaches a person: a blocked name holding ESC, NUL, BEL or a right-to-left override
travels as printable DNS presentation text, the payload schema refuses such characters in any
string and integers beyond 2^63-1, and what the hub prints or mails shows them escaped."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.dns.client_window import ImmediateEvents, Window
from agent.filter.querylog import QueryRecord
from common.text import dns_presentation, printable, unsafe
from common.wire import OpenError
from common.wire.header import Kind
from common.wire.payload import MAX_INT, encode, validate
from hub.alerts import AlertPolicy, Finding, record
from hub.cli import main
from hub.notify.mail import alert_email
from hub.notify.settings import Contact, load_notify_settings
from tests.enroll_fixtures import SITE, T0, make_hub

HOSTILE = ["\x1b[2J", "\x00", "\x07", "\u202e", "\u2066", "\x9b", "\n", "\r", "\x7f"]


@given(st.text(max_size=80))
def test_printable_leaves_nothing_unsafe(text: str) -> None:
    assert not unsafe(printable(text))


@given(st.text(max_size=80))
def test_presentation_is_printable_ascii(name: str) -> None:
    shown = dns_presentation(name)
    assert all(0x21 <= ord(c) <= 0x7E for c in shown)


def test_ordinary_names_are_unchanged() -> None:
    for name in ["www.bbc.co.uk", "xn--fa-hia.de", "_dns.resolver.arpa", "a-b_c.example"]:
        assert dns_presentation(name) == name
    assert dns_presentation("a\x1bb.example") == "a\\027b.example"
    assert dns_presentation("back\\slash") == "back\\092slash"


def _summary(name: str) -> dict[str, object]:
    return {
        "v": 1, "source": "dns", "start": 0, "end": 1,
        "client": {"ip": "10.1.2.34", "group": "pupils"},
        "counts": {"blocked": 1}, "categories": {"gambling": 1},
        "blocked": [{"name": name, "category": "gambling", "count": 1}],
        "first_seen": 0, "last_seen": 1,
    }  # fmt: skip


@pytest.mark.parametrize("bad", HOSTILE)
def test_the_schema_refuses_control_characters_in_names_and_text(bad: str) -> None:
    with pytest.raises(OpenError, match="schema"):
        validate(Kind.SUMMARY, _summary(f"casino{bad}.example"))
    event = {"v": 1, "type": "blocked", "at": 0, "detail": {"user": f"pupil{bad}"}}
    with pytest.raises(OpenError, match="schema"):
        validate(Kind.EVENT, event)


@pytest.mark.parametrize("value", [MAX_INT + 1, 2**64, -1])
def test_one_bound_for_every_integer(value: int) -> None:
    document = _summary("casino.example")
    document["end"] = value
    with pytest.raises(OpenError, match="0 to 9223372036854775807"):
        validate(Kind.SUMMARY, document)
    counts = _summary("casino.example")
    counts["counts"] = {"blocked": value}
    with pytest.raises(OpenError):
        validate(Kind.SUMMARY, counts)
    document["end"] = MAX_INT
    validate(Kind.SUMMARY, document)


def test_the_ip_and_mac_fields_are_addresses() -> None:
    document = _summary("casino.example")
    document["client"] = {"ip": "10.1.2.34\x1b", "group": "pupils"}
    with pytest.raises(OpenError):
        validate(Kind.SUMMARY, document)
    document["client"] = {"ip": "10.1.2.34", "group": "pupils", "mac": "not a mac"}
    with pytest.raises(OpenError):
        validate(Kind.SUMMARY, document)
    for zoned in ("fe80::1%\x1b[2J\u202e", "fe80::1%eth0"):  # a zone id is free text
        document["client"] = {"ip": zoned, "group": "pupils"}
        with pytest.raises(OpenError):
            validate(Kind.SUMMARY, document)


def test_a_lone_surrogate_is_refused_not_a_crash_at_the_store() -> None:
    body = json.dumps(_summary("casino.example")).replace("pupils", "pup\\ud800ils")
    document = json.loads(body)
    assert document["client"]["group"] == "pup\ud800ils"
    with pytest.raises(OpenError, match="schema"):
        validate(Kind.SUMMARY, document)


@pytest.mark.parametrize("bad", HOSTILE)
def test_the_dns_filter_reports_a_hostile_name_it_blocked(bad: str) -> None:
    """The Pi's summary and immediate event stay valid payloads (a window is never lost to one
    hostile query) and carry the name escaped."""
    qname = f"casino{bad}.example"
    rec = QueryRecord(T0, "10.1.2.34", "pupils", qname, 1, "blocked", "gambling", "list")
    window = Window(T0)
    window.add(rec)
    [summary] = window.summaries(T0 + 1000, {})
    encode(Kind.SUMMARY, summary)  # raises if the schema refuses it
    [blocked] = summary["blocked"]
    assert blocked["name"] == dns_presentation(qname)
    event = ImmediateEvents(["gambling"]).check(rec, None)
    assert event is not None
    encode(Kind.EVENT, event)
    assert event["name"] == dns_presentation(qname)


def test_the_hub_prints_and_mails_text_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = make_hub(tmp_path)
    finding = Finding(
        rule="blocked_content", severity=5, site=SITE, device="lt-1\x1b[2J",
        device_class="pupil-laptop", group="pupils", key="gambling",
        summary="lt-1 tried to reach casino\x1b[2J\u202e.example", at_ms=T0,
    )  # fmt: skip
    db = hub.db()
    try:
        with db.transaction():
            alert = record(db, finding, AlertPolicy())
    finally:
        db.close()
    assert main(["alerts", "--config", str(hub.config.path), "--status", "all"]) == 0
    out = capsys.readouterr().out
    assert "casino\\x1b[2J\\u202e.example" in out
    assert not unsafe(out.replace("\n", ""))
    settings = load_notify_settings(hub.config)
    contact = Contact("dsl", "DSL", email="dsl@school.example", webhook=None, min_severity=1)
    body = alert_email(settings, contact, alert).get_content()
    assert "casino\\x1b[2J\\u202e.example" in body
    assert not unsafe(body.replace("\n", ""))


@given(st.text(max_size=300))
def test_presentation_is_cut_between_escapes(name: str) -> None:
    text = dns_presentation(name, 255)
    assert len(text) <= 255
    assert re.fullmatch(r"(?:[^\\]|\\[0-9]{3})*", text), text
