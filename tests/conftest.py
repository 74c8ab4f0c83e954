"""Shared fixtures: real services, started by the tests themselves."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext

from hub.store import Database, sqlite_url
from tests.services import Mosquitto, Postgres, mosquitto, postgres
from tests.web_support import chromium


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    """A fresh Mosquitto for one test."""
    with mosquitto() as b:
        yield b


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Postgres]:
    """One PostgreSQL cluster for the whole run."""
    with postgres() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: Postgres) -> str:
    """A new empty PostgreSQL database for one test."""
    return pg_cluster.create_database()


@pytest.fixture(autouse=True)
def collect_garbage_in_its_own_test() -> Iterator[None]:
    """Collect each test's garbage in its own teardown. Whatever a test left unclosed in a
    reference cycle (paho's loop socketpair, for one) is then reported, under -W error, against
    the test that left it, instead of failing whichever later test happens to run a full
    collection (the DNS service does, at start): otherwise the result would depend on the order."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium through Playwright, one per test module that asks for it."""
    with chromium() as b:
        yield b


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile per test."""
    ctx = browser.new_context()
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty hub database of each kind (a module may define its own `db`)."""
    url = sqlite_url(tmp_path / "hub.db")
    if request.param == "postgresql":
        url = str(request.getfixturevalue("pg_url"))
    database = Database(url)
    database.migrate()
    try:
        yield database
    finally:
        database.close()
