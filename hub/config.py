"""hub.toml: typed, strict, frozen. Unknown keys are errors (docs/hub.md lists every key).

`hedgerow-hub check` reads on past an error with common.tomlconfig.every_problem().
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from common.tomlconfig import Section, load_toml
from common.wire.header import SuiteId, valid_name
from common.wire.suites import SUITE_NAMES


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """How the hub reaches the broker."""

    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "hedgerow-hub"
    shared: bool = False  # subscribe via $share/hedgerow-hub/... so several hubs split the load
    username: str | None = None
    password_file: Path | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    session_expiry_s: int = 7 * 86400


@dataclass(frozen=True, slots=True)
class WebConfig:
    """[web]: where the dashboard listens, its TLS files and how long a login lasts."""

    listen: str = "127.0.0.1:8080"  # "" turns the dashboard off
    tls_cert: Path | None = None
    tls_key: Path | None = None
    session_hours: int = 12  # absolute limit of one login
    idle_minutes: int = 30  # a session unused this long has ended
    base_url: str | None = None  # the address people type, e.g. https://hub.school

    @property
    def tls(self) -> bool:
        """Whether the dashboard is served over HTTPS."""
        return self.tls_cert is not None

    @property
    def enabled(self) -> bool:
        """Whether serve runs the dashboard at all."""
        return bool(self.listen)


@dataclass(frozen=True, slots=True)
class HubConfig:
    """Everything hub.toml says."""

    path: Path
    site: str
    data: Path
    database_url: str
    suite: SuiteId = SuiteId.MLKEM768_X25519
    web_listen: str = "127.0.0.1:8080"
    web: WebConfig = field(default_factory=WebConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    # The sections each part of the hub reads for itself (rules, notify, policy...), raw.
    extra: dict[str, dict[str, object]] = field(default_factory=dict)

    def section(self, name: str) -> Section:
        """One of the sections the hub's parts read for themselves, as a Section (an absent
        one reads as empty)."""
        return Section(name, self.extra.get(name, {}), str(self.path))

    def table(self, name: str) -> dict[str, object]:
        """The raw table of one of those sections (empty when absent)."""
        return self.extra.get(name, {})

    @property
    def keys_dir(self) -> Path:
        """Where the hub's key files live."""
        return self.data / "keys"


def _mqtt_url(value: str) -> str | None:
    url = urlparse(value)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        return "must be mqtt://host:port (loopback only) or mqtts://host:port"
    if url.scheme == "mqtt" and url.hostname not in ("127.0.0.1", "localhost", "::1"):
        return "plain mqtt:// is allowed only on loopback; use mqtts:// (TLS)"
    return None


def _db_url(value: str) -> str | None:
    if value.startswith("sqlite:///") or value.startswith(("postgresql://", "postgres://")):
        return None
    return "must be sqlite:///path or postgresql://..."


def _listen(value: str) -> str | None:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return "must be host:port"
    return None


def _loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _base_url(value: str) -> str | None:
    url = urlparse(value)
    if url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/"):
        return "must be https://host[:port] (no path)"
    return None


LATER_SECTIONS = (
    "rules", "notify", "contacts", "retention", "policy", "enroll", "metrics", "ingest",
    "escalation",
)  # fmt: skip


def _path(raw: str | None, base: Path) -> Path | None:
    return None if raw is None else (base / raw).resolve()


def load_config(path: Path) -> HubConfig:
    """Read and validate hub.toml. Raises ConfigError naming section, key, value and rule."""
    path = Path(path).resolve()
    return parse_config(load_toml(path), path)


def parse_config(raw: dict[str, object], path: Path) -> HubConfig:
    """Validate hub.toml as parsed from `path` (an absolute path). Raises ConfigError naming
    section, key, value and rule. The later sections in `extra` are `raw`'s own tables."""
    src = str(path)
    root = Section("", raw, src)
    base = path.parent

    hub = Section("hub", root.table("hub"), src)
    site = hub.text(
        "site", check=lambda v: None if valid_name(v) else "must be 1-63 of [a-z0-9._-]"
    )
    data = _path(hub.text("data", "."), base)
    suite_name = hub.text(
        "suite",
        "mlkem768-x25519",
        check=lambda v: None if v in SUITE_NAMES else f"must be one of {', '.join(SUITE_NAMES)}",
    )
    hub.done()

    db = Section("database", root.table("database", {}), src)
    assert data is not None
    database_url = db.text("url", f"sqlite:///{data / 'hub.db'}", check=_db_url)
    db.done()

    web = Section("web", root.table("web", {}), src)
    web_listen = web.text("listen", "127.0.0.1:8080", check=lambda v: _listen(v) if v else None)
    web_config = WebConfig(
        listen=web_listen,
        tls_cert=_path(web.optional_text("tls_cert"), base),
        tls_key=_path(web.optional_text("tls_key"), base),
        session_hours=web.integer("session_hours", 12, lo=1, hi=24 * 7),
        idle_minutes=web.integer("idle_minutes", 30, lo=1, hi=24 * 60),
        base_url=web.optional_text("base_url", check=_base_url),
    )
    if (web_config.tls_cert is None) != (web_config.tls_key is None):
        web.fail("tls_cert", web.optional_text("tls_cert"), "tls_cert and tls_key go together")
    if web_listen and not web_config.tls and not _loopback(web_listen):
        # Passwords and children's data must never cross the network in clear.
        web.fail(
            "listen", web_listen, "plain HTTP is allowed only on loopback; set tls_cert and tls_key"
        )
    web.done()

    m = Section("mqtt", root.table("mqtt", {}), src)
    mqtt = MqttConfig(
        url=m.text("url", "mqtt://127.0.0.1:1883", check=_mqtt_url),
        client_id=m.text("client_id", "hedgerow-hub"),
        shared=m.flag("shared", False),
        username=m.optional_text("username"),
        password_file=_path(m.optional_text("password_file"), base),
        ca=_path(m.optional_text("ca"), base),
        cert=_path(m.optional_text("cert"), base),
        key=_path(m.optional_text("key"), base),
        session_expiry_s=m.integer("session_expiry_s", 7 * 86400, lo=86400),
    )
    m.done()

    extra = {name: root.table(name) for name in LATER_SECTIONS if root.has(name)}
    root.done()
    return HubConfig(
        path=path,
        site=site,
        data=data,
        database_url=database_url,
        suite=SUITE_NAMES[suite_name],
        web_listen=web_listen,
        web=web_config,
        mqtt=mqtt,
        extra=extra,
    )
