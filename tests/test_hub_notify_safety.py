"""Notifications never leak: SMTP credentials only over TLS, and a webhook that redirects is a
failed delivery, never followed to a host nobody configured."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from hub.cli import main
from hub.notify.mail import SendError
from hub.notify.webhook import post_json
from tests.enroll_fixtures import make_hub
from tests.notify_fixtures import http_receiver


@contextmanager
def redirector(status: int, location: str) -> Iterator[list[str]]:
    """An HTTP server on loopback that answers every POST with `status` and a Location."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(self.path)
            self.send_response(status)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="redirector")
    thread.start()
    try:
        seen.append(f"port {server.server_address[1]}")
        yield seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirecting_webhook_is_a_failure_and_is_not_followed(status: int) -> None:
    with http_receiver([]) as elsewhere:
        with redirector(status, f"http://127.0.0.1:{elsewhere.port}/stolen") as seen:
            port = seen[0].split()[1]
            with pytest.raises(SendError, match=f"HTTP {status}"):
                post_json(f"http://127.0.0.1:{port}/hook", {"alert": 1}, timeout_s=5)
        assert seen[1:] == ["/hook"]
    assert elsewhere.bodies == []  # the redirect target never heard of the alert


def test_smtp_login_without_starttls_is_refused_by_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = make_hub(
        tmp_path,
        extra_toml=(
            "[notify.smtp]\nhost = \"smtp.school.example\"\nstarttls = false\n"
            "username = \"hedgerow\"\npassword_file = \"smtp-password\"\n"
        ),
    )
    (hub.config.path.parent / "smtp-password").write_text("secret\n")
    assert main(["check", "--config", str(hub.config.path)]) == 1
    err = capsys.readouterr().err
    assert "[notify.smtp] starttls = false: must be true when username is set" in err


def test_smtp_without_login_may_skip_starttls(tmp_path: Path) -> None:
    """A relay that takes mail without a password (no secret to protect) stays allowed."""
    hub = make_hub(tmp_path, extra_toml='[notify.smtp]\nhost = "127.0.0.1"\nstarttls = false\n')
    assert main(["check", "--config", str(hub.config.path)]) == 0
