"""Every name, id and pattern check matches the whole value: a trailing newline (which a
Python `$` lets through) or any other control character never passes. An id that passed with
"\n" once produced an invalid broker ACL, and Mosquitto then ran with no ACL at all."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.beacon_statement import nonce_of
from common.wire.header import valid_name
from hub.rules.hours import parse_hours

SUFFIXES = ["\n", "\r\n", "\x00", "\r", "\t", " "]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_ids_with_a_trailing_control_character_are_refused(suffix: str) -> None:
    assert valid_name("cape")
    assert not valid_name("cape" + suffix)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_beacon_nonces_match_in_full(suffix: str) -> None:
    nonce = "a" * 20
    assert nonce_of(f"{nonce}.beacon.hedgerow.internal") == nonce
    assert nonce_of(f"{nonce}{suffix}.beacon.hedgerow.internal") is None


def test_hours_match_in_full() -> None:
    assert not isinstance(parse_hours("08:00-16:00"), str)
    assert isinstance(parse_hours("08:00-16:00\n"), str)


@given(st.text(max_size=70))
def test_a_valid_name_holds_only_the_allowed_characters(name: str) -> None:
    if valid_name(name):
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789._-")
        assert 1 <= len(name) <= 63
