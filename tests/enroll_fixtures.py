"""A hub data directory and a tiny hub loop for enrolment tests (real Mosquitto, real SQLite).

The loop stands in for `hedgerow-hub serve`: it subscribes to enrolment requests, hands each to
EnrollService inside a transaction and publishes the reply, with a clock the test controls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from agent.enrolment_client import build_request, finish
from agent.report.session import MqttSession
from common.enrolment import EnrollToken
from common.identity import Identity, MqttCredentials
from common.wire import OpenError
from hub.config import HubConfig, load_config
from hub.datadir import init_data_dir
from hub.enroll.answer import EnrollService
from hub.enroll.broker import write_broker_files
from hub.enroll.tokens import create_token
from hub.keys import HubKeys
from hub.policy.publish import publish_all
from hub.store import Database

SITE = "cape-primary"
T0 = 1_760_000_000_000
DAY = 86_400_000


@dataclass
class Hub:
    """An initialised hub data directory."""

    config: HubConfig
    keys: HubKeys

    def db(self) -> Database:
        return Database(self.config.database_url)

    def token(
        self,
        device_class: str = "pupil-laptop",
        *,
        uses: int = 1,
        group: str | None = "pupils",
        site: str = SITE,
        expires_ms: int = T0 + DAY,
    ) -> EnrollToken:
        db = self.db()
        try:
            token = create_token(
                db,
                self.keys,
                site=site,
                device_class=device_class,
                group=group,
                uses=uses,
                expires_ms=expires_ms,
                now_ms=T0,
            )
            write_broker_files(db, self.config, now_ms=T0)  # its broker login, as the CLI does
            return token
        finally:
            db.close()


def make_hub(
    tmp_path: Path, broker_url: str = "mqtt://127.0.0.1:1883", extra_toml: str = "", **kw: str
) -> Hub:
    """`hedgerow-hub init` into tmp_path/hub, with extra TOML appended to hub.toml."""
    path = init_data_dir(tmp_path / "hub", SITE, mqtt_url=broker_url, **kw)  # type: ignore[arg-type]
    if extra_toml:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("\n" + extra_toml)
    config = load_config(path)
    return Hub(config, HubKeys(config.keys_dir))


def enroll_direct(
    hub: Hub,
    service: EnrollService,
    token: EnrollToken,
    *,
    now_ms: int = T0,
    device_class: str = "pupil-laptop",
    site: str = SITE,
    group: str | None = None,
) -> tuple[Identity, bytes]:
    """One enrolment without MQTT: build, handle in a transaction, finish. Raises EnrollRefused."""
    request = build_request(
        token,
        site=site,
        device_class=device_class,
        hub_key=hub.keys.sealing_key,
        now_ms=now_ms,
        group=group,
    )
    db = hub.db()
    try:
        with db.transaction():
            answer = service.handle(db, request.request_id, request.data, now_ms)
    finally:
        db.close()
    return finish(
        request,
        answer.data,
        hub_verify_keys=(hub.keys.signing.verify_key,),
        broker_url="mqtt://127.0.0.1:1883",
    )


@dataclass
class HubLoop:
    """Runs EnrollService over MQTT in a thread, like serve would."""

    hub: Hub
    broker_url: str
    clock: Callable[[], int] = lambda: T0
    service: EnrollService | None = None
    rejected: list[str] = field(default_factory=list)
    answered: int = 0

    def __post_init__(self) -> None:
        self.service = self.service or EnrollService(self.hub.config, self.hub.keys)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._session = MqttSession(MqttCredentials(self.broker_url), "test-hub")
        self._thread = threading.Thread(target=self._run, name="test-hub", daemon=True)

    def __enter__(self) -> HubLoop:
        self._session.connect(10)
        self._session.subscribe("hedgerow/v1/enroll/+/request", 10)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("hub loop did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(30)
        self._session.close()
        if self._error is not None and exc is None:
            raise self._error

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        self._session.publish(topic, payload, retain=retain, timeout_s=10)

    def _run(self) -> None:
        db = self.hub.db()
        try:
            publish_all(db, self.hub.keys, self.hub.config, self.publish, now_ms=self.clock())
            self._ready.set()
            while not self._stop.is_set():
                message = self._session.receive(0.05)
                if message is None:
                    continue
                request_id = message.topic.split("/")[3]
                assert self.service is not None
                try:
                    with db.transaction():
                        out = self.service.handle(db, request_id, message.payload, self.clock())
                except OpenError as exc:
                    self.rejected.append(exc.reason.value)
                    continue
                self.answered += 1
                self.publish(out.topic, out.data, out.final)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:
            db.close()
