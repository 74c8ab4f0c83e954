"""Leaf certificates: the broker's server certificate (with its host names and addresses as
SANs) and a device's client certificate."""

from __future__ import annotations

import datetime
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.wire.header import valid_name
from common.wire.keyfile import PRIVATE_MODE, write_atomic
from hub.pki.authority import (
    BACKDATE,
    PUBLIC_MODE,
    Authority,
    PkiError,
    cert_pem,
    private_pem,
    utc_now,
)
from hub.pki.ledger import LedgerEntry, append_entry

# 825 days: the longest leaf lifetime that Apple's and browsers' TLS stacks still accept.
DEFAULT_LEAF_DAYS = 825
_HOST_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate just issued and where its files are."""

    serial: str
    cert_path: Path
    key_path: Path
    not_after: datetime.datetime


def _host(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    labels = name.lower().rstrip(".").split(".")
    if not name or len(name) > 253 or not all(re.fullmatch(_HOST_LABEL, lb) for lb in labels):
        raise PkiError(f"--name {name!r}: not a host name (letters, digits, '-', dots)")
    return x509.DNSName(".".join(labels))


def _ip(text: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError as exc:
        raise PkiError(f"--ip {text!r}: not an IPv4 or IPv6 address") from exc


def _leaf(
    ca: Authority,
    kind: str,
    name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
    force: bool,
) -> Issued:
    if days < 1:
        raise PkiError(f"--days {days}: must be at least 1")
    cert_path, key_path = ca.paths.leaf(kind, name)
    if cert_path.exists() and not force:
        raise PkiError(
            f"{cert_path} exists; refusing to replace it. Use --force to issue a new one "
            "(and 'pki revoke' the old serial if its key may have leaked)"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    now = utc_now()
    not_after = min(now + datetime.timedelta(days=days), ca.cert.not_valid_after_utc)
    serial = x509.random_serial_number()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    cert_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(key_path, private_pem(key), PRIVATE_MODE)
    write_atomic(cert_path, cert_pem(cert), PUBLIC_MODE)
    hex_serial = format(serial, "x")
    entry = LedgerEntry(hex_serial, kind, name, not_after.isoformat(timespec="seconds"))
    append_entry(ca.paths.ledger, entry)
    return Issued(hex_serial, cert_path, key_path, not_after)


def issue_server(
    ca: Authority,
    name: str,
    ips: list[str] | None = None,
    *,
    days: int = DEFAULT_LEAF_DAYS,
    force: bool = False,
) -> Issued:
    """The broker's certificate for host `name` (a DNS SAN, or an IP SAN if it is an address)
    plus every address in `ips`. Devices check the host in their broker URL against these."""
    host = _host(name)
    sans = [host, *(_ip(ip) for ip in ips or [])]
    unique = list(dict.fromkeys(sans))
    # The file and common name use the normalised form (lower case, no final dot).
    normal = host.value if isinstance(host, x509.DNSName) else str(host.value)
    return _leaf(ca, "server", normal, unique, ExtendedKeyUsageOID.SERVER_AUTH, days, force)


def issue_client(
    ca: Authority, device: str, *, days: int = DEFAULT_LEAF_DAYS, force: bool = False
) -> Issued:
    """A client certificate whose common name is the device id."""
    if not valid_name(device):
        raise PkiError(f"--device {device!r}: ids are 1-63 characters of a-z, 0-9, '.', '_', '-'")
    # RFC 5280 verifiers (cryptography's among them) want a SAN on every leaf; a URN names the
    # device without pretending it is a host.
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(f"urn:hedgerow:device:{device}")]
    return _leaf(ca, "client", device, san, ExtendedKeyUsageOID.CLIENT_AUTH, days, force)
