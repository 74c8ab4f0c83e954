"""The dashboard under test: a real `hedgerow-hub serve` (with a real Mosquitto) listening on a
free loopback port, accounts made with the real `hedgerow-hub user` command, alerts written
through the hub's own alert store, and Chromium driven by Playwright."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlencode

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from hub import alerts
from hub.config import load_config
from hub.store import Database
from tests.services import daemon, free_port, wait_port

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery staple"
SITE = "school"
SESSION_COOKIE = "__Host-hedgerow_session"


def hub_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `hedgerow-hub ARGS` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def init_hub(root: Path, mqtt_url: str, web: str) -> Path:
    """`hedgerow-hub init` a data directory, then put `web` in place of its [web] section."""
    done = hub_cli("init", "--data", str(root), "--site", SITE, "--mqtt", mqtt_url)
    assert done.returncode == 0, done.stderr
    config = root / "hub.toml"
    text = config.read_text()
    text = re.sub(r'\[web\]\nlisten = "[^"]*"\n', "[web]\n" + web, text)
    # Not the default metrics port: tests run side by side.
    text += f'\n[metrics]\nlisten = "127.0.0.1:{free_port()}"\n'

    config.write_text(text)
    return config


@dataclass
class DashboardHub:
    """A running hub with its dashboard."""

    config: Path
    port: int
    log: Path
    proc: subprocess.Popen[bytes]
    accounts: dict[str, str] = field(default_factory=dict)  # role -> username

    @property
    def url(self) -> str:
        """The dashboard's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def db(self) -> Database:
        """A connection to the hub's database (close it)."""
        return Database(load_config(self.config).database_url)

    def user(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """`hedgerow-hub user ARGS --config ...`."""
        action, *rest = args
        return hub_cli("user", action, "--config", str(self.config), *rest, stdin=stdin)

    def add_user(self, username: str, role: str, *groups: str) -> None:
        """Create an account with PASSWORD through the CLI."""
        extra = [a for g in groups for a in ("--group", g)]
        done = self.user(
            "add", username, "--role", role, *extra, "--password-stdin", stdin=PASSWORD + "\n"
        )
        assert done.returncode == 0, done.stderr

    def add_alert(
        self, severity: int, group: str | None, device: str = "lt-042", name: str = "bad.example"
    ) -> int:
        """An alert with one report of evidence, written through hub.alerts.record."""
        db = self.db()
        try:
            now = int(time.time() * 1000)
            with db.transaction():
                seq = int(
                    db.execute(
                        "SELECT COALESCE(MAX(seq), 0) + 1 FROM reports WHERE device = ?",
                        (device,),
                    )[0][0]
                )
                report_id = db.insert(
                    "INSERT INTO reports (site, device, seq, kind, digest, time_ms, received_ms, "
                    "client_ip, client_user, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (SITE, device, seq, "event", bytes(32), now, now, "10.0.0.7", "pupil-17", "{}"),
                )
                db.execute(
                    "INSERT INTO blocked (report_id, name, category, count) VALUES (?, ?, ?, ?)",
                    (report_id, name, "self-harm", 3),
                )
                alert = alerts.record(
                    db,
                    alerts.Finding(
                        rule="blocked-content",
                        severity=severity,
                        site=SITE,
                        device=device,
                        device_class="laptop",
                        group=group,
                        key=f"k{seq}",
                        summary=f"{device} tried to open {name} ({severity}).",
                        at_ms=now,
                        evidence=(report_id,),
                    ),
                    alerts.AlertPolicy(),
                )
            return alert.id
        finally:
            db.close()


@contextmanager
def dashboard_hub(root: Path, mqtt_url: str, web_extra: str = "") -> Iterator[DashboardHub]:
    """`hedgerow-hub serve` on a free loopback port, stopped by its PID at the end."""
    port = free_port()
    config = init_hub(root, mqtt_url, f'listen = "127.0.0.1:{port}"\n{web_extra}')
    log = root / "serve.log"
    with daemon(sys.executable, "-m", "hub.cli", "serve", "--config", str(config), log=log) as p:
        try:
            wait_port(port, timeout=30)
        except Exception:
            raise AssertionError(f"serve did not listen: {log.read_text()}") from None
        assert p.poll() is None
        yield DashboardHub(config, port, log, p)


@dataclass(frozen=True)
class Answer:
    """An HTTP answer read by http.client."""

    status: int
    headers: dict[str, str]
    body: str
    cookies: tuple[str, ...] = ()  # each Set-Cookie header

    def cookie(self, name: str) -> str | None:
        """The `name=value` a Set-Cookie of this answer sets, if any."""
        for header in self.cookies:
            pair = header.split(";")[0]
            if pair.startswith(name + "="):
                return pair
        return None

    def json(self) -> object:
        """The body as JSON."""
        return json.loads(self.body)


def http(
    hub: DashboardHub,
    method: str,
    path: str,
    *,
    cookie: str | None = None,
    form: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request to the dashboard over a real loopback socket (no redirects followed)."""
    conn = HTTPConnection("127.0.0.1", hub.port, timeout=30)
    try:
        sent = dict(headers or {})
        if cookie:
            sent["Cookie"] = cookie
        body = None
        if form is not None:
            body = urlencode(form)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        got = {k.lower(): v for k, v in response.getheaders()}
        cookies = tuple(response.msg.get_all("set-cookie") or ())
        body_text = response.read().decode("utf-8", "replace")
        return Answer(response.status, got, body_text, cookies)
    finally:
        conn.close()


def login_cookie(hub: DashboardHub, username: str, password: str = PASSWORD) -> str:
    """Log in with a real form post; return the Cookie header value of the session."""
    form_page = http(hub, "GET", "/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form_page.body)
    assert csrf is not None
    login_csrf = form_page.cookie("hedgerow_login")
    assert login_csrf is not None
    answer = http(
        hub,
        "POST",
        "/login",
        cookie=login_csrf,
        form={"username": username, "password": password, "csrf": csrf.group(1), "next": "/"},
    )
    assert answer.status == 303, (answer.status, answer.body)
    session = answer.cookie(SESSION_COOKIE)
    assert session is not None, answer.cookies
    return session


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium through Playwright (never a downloaded browser). --no-sandbox: the
    tests run as root, where Chromium's sandbox refuses to start."""
    if not Path(CHROMIUM).exists():
        raise AssertionError(
            f"{CHROMIUM} is missing: run 'make bootstrap' (apt-get install chromium)"
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def browser_login(page: Page, hub: DashboardHub, username: str, password: str = PASSWORD) -> None:
    """Fill and send the login form the page shows (as a person would, or a password manager)."""
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]")


def logged_in(context: BrowserContext, hub: DashboardHub, username: str) -> Page:
    """A new page in `context`, logged in as `username` through the real form, on the home
    page."""
    page = context.new_page()
    page.goto(hub.url + "/")
    browser_login(page, hub, username)
    page.wait_for_url(hub.url + "/")
    return page


def api_json(
    hub: DashboardHub, method: str, path: str, cookie: str, body: object | None = None
) -> tuple[int, dict[str, object]]:
    """One JSON request over a real socket: (status, the JSON body; {} if none or not JSON)."""
    conn = HTTPConnection("127.0.0.1", hub.port, timeout=30)
    try:
        headers = {"Cookie": cookie, "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        text = response.read().decode()
        try:
            got = json.loads(text) if text else {}
        except ValueError:
            got = {}
        return response.status, got if isinstance(got, dict) else {"value": got}
    finally:
        conn.close()
