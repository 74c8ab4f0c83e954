"""`hedgerow-hub init`: a data directory with keys, a database and a hub.toml to start from."""

from __future__ import annotations

import time
from pathlib import Path

from common.wire.header import SuiteId, valid_name
from common.wire.keyfile import write_atomic
from common.wire.suites import suite_name
from hub.errors import HubError
from hub.keys import create_keys
from hub.store import Database, sqlite_url

HUB_TOML = """\
# hedgerow-hub configuration (docs/hub.md lists every key).
[hub]
site = "{site}"                 # the default site for commands that take --site
data = "."                      # keys/ and (by default) hub.db live here, relative to this file
suite = "{suite}"               # HPKE suite devices seal to: mlkem768-x25519 (default) or x25519

[database]
url = "{database}"

[mqtt]
url = "{mqtt}"                  # mqtts://host:8883 in production; mqtt:// only on loopback
# shared = true                 # $share/hedgerow-hub/... so several hub processes split the load

[web]
listen = "127.0.0.1:8080"
"""


def init_data_dir(
    data: Path,
    site: str,
    *,
    mqtt_url: str = "mqtt://127.0.0.1:1883",
    database_url: str | None = None,
    suite: SuiteId = SuiteId.MLKEM768_X25519,
) -> Path:
    """Create DATA/hub.toml, DATA/keys/ and the database. Refuses to touch an initialised DIR."""
    if not valid_name(site):
        raise HubError(f"site {site!r}: must be 1-63 characters of a-z, 0-9, '.', '_' or '-'")
    data = Path(data).resolve()
    config = data / "hub.toml"
    if config.exists() or (data / "keys").exists():
        raise HubError(
            f"{data} is already a hub data directory; refusing to overwrite its keys. "
            "Use 'hedgerow-hub keys rotate' to add a key, or choose an empty directory."
        )
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    create_keys(data / "keys", suite)
    url = database_url or sqlite_url(data / "hub.db")
    db = Database(url)
    try:
        db.migrate()
        db.execute(
            "INSERT INTO sites (site, name, created_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (site, site, int(time.time() * 1000)),
        )
    finally:
        db.close()
    text = HUB_TOML.format(site=site, suite=suite_name(suite), database=url, mqtt=mqtt_url)
    write_atomic(config, text.encode("utf-8"), 0o640, exclusive=True)
    return config
