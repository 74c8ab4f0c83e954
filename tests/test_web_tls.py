"""The dashboard under TLS: `hedgerow-hub serve` with [web] tls_cert and tls_key listens on
HTTPS only, sends HSTS, and its session cookie is a Secure `__Host-` cookie."""

from __future__ import annotations

import re
import ssl
from http.client import HTTPSConnection
from pathlib import Path
from urllib.parse import urlencode

from tests.services import Mosquitto
from tests.test_hub_notify_tls import make_cert
from tests.web_support import PASSWORD, SESSION_COOKIE, dashboard_hub


def test_tls_sends_hsts_and_a_secure_host_cookie(tmp_path: Path, broker: Mosquitto) -> None:
    cert, key = make_cert(tmp_path)
    web = f'tls_cert = "{cert}"\ntls_key = "{key}"\n'
    with dashboard_hub(tmp_path / "hub", broker.url, web) as hub:
        hub.add_user("dana", "dsl")
        trust = ssl.create_default_context(cafile=str(cert))

        def request(
            method: str, path: str, headers: dict[str, str], body: str | None = None
        ) -> tuple[int, dict[str, str], list[str], str]:
            conn = HTTPSConnection("127.0.0.1", hub.port, context=trust, timeout=30)
            try:
                conn.request(method, path, body=body, headers=headers)
                r = conn.getresponse()
                cookies = r.msg.get_all("set-cookie") or []
                got = {k.lower(): v for k, v in r.getheaders()}
                return r.status, got, cookies, r.read().decode()
            finally:
                conn.close()

        status, headers, cookies, body = request("GET", "/login", {})
        assert status == 200
        assert headers["strict-transport-security"].startswith("max-age=")
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        token = re.search(r'name="csrf" value="([^"]+)"', body)
        assert token is not None
        login_cookie = cookies[0].split(";")[0]
        form = urlencode(
            {"username": "dana", "password": PASSWORD, "csrf": token.group(1), "next": "/"}
        )
        status, _, cookies, _ = request(
            "POST",
            "/login",
            {
                "Cookie": login_cookie,
                "Origin": f"https://127.0.0.1:{hub.port}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            form,
        )
        assert status == 303
        session = next(c for c in cookies if c.startswith(SESSION_COOKIE + "="))
        attributes = {a.strip().lower() for a in session.split(";")[1:]}
        assert {"httponly", "secure", "path=/", "samesite=strict"} <= attributes
        assert not any(a.startswith("domain") for a in attributes)
        # An http:// origin is another site to an https:// hub.
        status, _, _, _ = request(
            "POST",
            "/logout",
            {"Cookie": session.split(";")[0], "Origin": f"http://127.0.0.1:{hub.port}"},
        )
        assert status == 403
