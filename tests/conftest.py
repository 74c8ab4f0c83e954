"""Shared fixtures: real services, started by the tests themselves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services import Mosquitto, Postgres, mosquitto, postgres


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
