"""What the hub keeps of a counts-only device's reports: counts, and what the rules need; no
names of people, sites looked up or programs run."""

from __future__ import annotations

from common.wire import Kind
from hub.ingest.record import counts_only


def test_a_summary_loses_names_users_and_program_names() -> None:
    summary = {
        "v": 1,
        "client": {"ip": "127.0.0.1", "group": "staff", "user": "j.smith", "hostname": "st-1"},
        "blocked": [{"name": "casino.example", "category": "gambling", "count": 2}],
        "top_allowed": [{"domain": "bbc.co.uk", "count": 9}],
        "activity": {"user": "j.smith", "processes_new": {"firefox": 2, "zoom": 1}, "awake_s": 300},
    }
    kept = counts_only(Kind.SUMMARY, summary)
    assert kept["client"] == {"ip": "127.0.0.1", "group": "staff", "hostname": "st-1"}
    assert kept["blocked"] == [{"name": "", "category": "gambling", "count": 2}]
    assert "top_allowed" not in kept and kept["counts_only"] is True
    assert kept["activity"] == {"processes_new_count": 3, "awake_s": 300}


def test_an_event_keeps_what_the_rules_need() -> None:
    site = {
        "v": 1,
        "type": "site_state",
        "at": 1,
        "detail": {"state": "off_site", "previous": "on_site", "user_logged_in": True},
    }
    assert counts_only(Kind.EVENT, site)["detail"] == site["detail"]
    tamper = {"v": 1, "type": "tamper", "at": 1, "detail": {"what": "x", "to": "8.8.8.8"}}
    assert counts_only(Kind.EVENT, tamper)["detail"] == {"what": "x"}
    blocked = {"v": 1, "type": "blocked", "at": 1, "name": "a.example", "detail": {"x": 1}}
    kept = counts_only(Kind.EVENT, blocked)
    assert kept["name"] == "" and "detail" not in kept
