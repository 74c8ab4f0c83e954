"""Email over STARTTLS with login, against a real aiosmtpd with a certificate made by the test."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub.alerts import AlertPolicy, Finding, record
from hub.notify.outbox import NotificationOutbox
from hub.notify.sender import NotificationSender
from tests.enroll_fixtures import SITE, T0, make_hub
from tests.notify_fixtures import smtp_server
from tests.services import free_port

PASSWORD = "smtp-test-password"


def make_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp.pem", directory / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"hedgerow"
        and (auth_data.password == PASSWORD.encode())
    )
    return AuthResult(success=ok)


def test_starttls_and_login(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    port = free_port()
    (tmp_path / "smtp-password").write_text(PASSWORD + "\n")
    toml = f"""
[notify]
from = "hedgerow@school.example"
[notify.smtp]
host = "127.0.0.1"
port = {port}
starttls = true
username = "hedgerow"
password_file = "{tmp_path / "smtp-password"}"
ca_file = "{cert}"
[contacts.dsl]
email = "dsl@school.example"
min_severity = 4
"""
    hub = make_hub(tmp_path, extra_toml=toml)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    db = hub.db()
    try:
        finding = Finding(
            "bypass", 5, SITE, "lt-1", "pupil-laptop", "pupils", "vpn", "A VPN was used", T0
        )
        with db.transaction():
            record(db, finding, AlertPolicy(), NotificationOutbox(hub.config, clock=lambda: T0))
        sender = NotificationSender(hub.config, hub.config.database_url, clock=lambda: T0)
        with smtp_server(
            port,
            tls_context=context,
            require_starttls=True,
            authenticator=authenticator,
            auth_required=True,
        ) as box:
            assert sender.run_once(db) == 1
    finally:
        db.close()
    assert box.recipients == [["dsl@school.example"]]
    assert str(box.messages[0]["Subject"]) == "Hedgerow alert: severity 5 (bypass)"
