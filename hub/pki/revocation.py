"""Revocation: the ledger marks a certificate revoked and the CA signs a new CRL (DATA/pki/crl.pem,
Mosquitto's `crlfile`)."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from common.wire.keyfile import write_atomic
from hub.pki.authority import PUBLIC_MODE, Authority, PkiError, utc_now
from hub.pki.ledger import LedgerEntry, mark_revoked, read_ledger

# OpenSSL refuses every client certificate once the CRL's next update has passed, so the CRL
# is valid for long and every pki command that changes anything signs a fresh one.
CRL_DAYS = 365


def write_crl(ca: Authority) -> x509.CertificateRevocationList:
    """Sign a CRL listing every revoked certificate in the ledger and write it."""
    now = utc_now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - datetime.timedelta(minutes=10))
        .next_update(now + datetime.timedelta(days=CRL_DAYS))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
        .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
    )
    for entry in read_ledger(ca.paths.ledger):
        if entry.revoked is not None:
            revoked = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(entry.serial, 16))
                .revocation_date(datetime.datetime.fromisoformat(entry.revoked))
                .build()
            )
            builder = builder.add_revoked_certificate(revoked)
    crl = builder.sign(ca.key, hashes.SHA256())
    write_atomic(ca.paths.crl, crl.public_bytes(serialization.Encoding.PEM), PUBLIC_MODE)
    return crl


def find_serial(ca: Authority, what: str) -> str:
    """The serial of `what`: a serial in hex, or the name of the one live certificate so named."""
    entries = read_ledger(ca.paths.ledger)
    wanted = what.lower().removeprefix("0x")
    if any(e.serial == wanted for e in entries):
        return wanted
    live = [e for e in entries if e.name == what and e.revoked is None]
    if len(live) == 1:
        return live[0].serial
    if len(live) > 1:
        serials = ", ".join(e.serial for e in live)
        raise PkiError(f"{what!r} names several live certificates ({serials}): give a serial")
    raise PkiError(f"no live certificate with serial or name {what!r} ('pki list')")


def revoke(ca: Authority, what: str) -> LedgerEntry:
    """Revoke a certificate by serial or name and rewrite the CRL (idempotent)."""
    entry = mark_revoked(ca.paths.ledger, find_serial(ca, what), utc_now())
    write_crl(ca)
    return entry
