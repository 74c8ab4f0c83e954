"""DNS over TLS upstreams ("tls://IP:853#name"): a real TLS server on loopback with a
certificate the test makes; the name is verified against the configured CA."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dnslib
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.dns_support import ask, fake_answer, free_dns_port, running_dns, write_config


def make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (it is its own CA); key written 0600."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "dot.pem", directory / "dot.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextmanager
def dot_server(cert: Path, key: Path) -> Iterator[tuple[int, list[str]]]:
    """A DoT server on 127.0.0.1 answering like the fake upstream; yields (port, names seen)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    seen: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(5)
                    size = struct.unpack("!H", tls.recv(2))[0]
                    request = dnslib.DNSRecord.parse(tls.recv(size))
                    seen.append(str(request.q.qname).rstrip("."))
                    reply = fake_answer(request).pack()
                    tls.sendall(struct.pack("!H", len(reply)) + reply)
            except (ssl.SSLError, OSError):
                conn.close()  # a client that refused our certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def dot_config(tmp_path: Path, port: int, upstream: str, ca: Path) -> Path:
    config = write_config(tmp_path, [upstream], port)
    text = config.read_text().replace("[upstream]\n", f'[upstream]\ntls_ca = "{ca}"\n', 1)
    config.write_text(text)
    return config


def test_dot_upstream_answers_with_a_verified_name(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "dot.test")
    with dot_server(cert, key) as (dot_port, seen):
        port = free_dns_port()
        config = dot_config(tmp_path, port, f"tls://127.0.0.1:{dot_port}#dot.test", cert)
        with running_dns(config) as dns:
            reply = ask(dns.port, "www.example.org", source="127.0.2.10")
    assert reply.header.rcode == dnslib.RCODE.NOERROR
    assert [str(rr.rdata) for rr in reply.rr] == ["192.0.2.1"]
    assert seen == ["www.example.org"]


def test_dot_upstream_with_the_wrong_name_is_refused(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "dot.test")
    with dot_server(cert, key) as (dot_port, seen):
        port = free_dns_port()
        config = dot_config(tmp_path, port, f"tls://127.0.0.1:{dot_port}#impostor.test", cert)
        with running_dns(config) as dns:
            reply = ask(dns.port, "www.example.org", source="127.0.2.10")
    # The certificate does not name the configured server: no answer is trusted from it.
    assert reply.header.rcode == dnslib.RCODE.SERVFAIL
    assert seen == []
