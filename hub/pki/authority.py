"""The CA: an ECDSA P-256 key and a self-signed certificate under DATA/pki/.

P-256, not Ed25519: every OpenSSL that Mosquitto and the devices' Python link against accepts
ECDSA certificates in TLS 1.2 and 1.3, while Ed25519 certificates need TLS 1.3 on both ends.
"""

from __future__ import annotations

import datetime
import logging
import shutil
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.wire.keyfile import PRIVATE_MODE, write_atomic
from hub.errors import HubError
from hub.pki.paths import PkiPaths

log = logging.getLogger(__name__)

PUBLIC_MODE = 0o644
DEFAULT_CA_DAYS = 3650
# Certificates start a little in the past so a device whose clock lags accepts them at once.
BACKDATE = datetime.timedelta(minutes=10)


class PkiError(HubError):
    """A PKI command could not do what was asked (no CA, a CA exists, bad name...)."""


@dataclass(frozen=True)
class Authority:
    """A loaded CA: its key, certificate and where its files live."""

    paths: PkiPaths
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def utc_now() -> datetime.datetime:
    """The current time, timezone-aware."""
    return datetime.datetime.now(datetime.UTC)


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (Mosquitto reads it without a passphrase)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    """A certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def init_authority(
    paths: PkiPaths, *, common_name: str, days: int = DEFAULT_CA_DAYS, force: bool = False
) -> Authority:
    """Create the CA. Refuses to replace an existing one unless `force` (which also forgets
    every certificate issued by the old CA: they no longer verify)."""
    if days < 1:
        raise PkiError(f"--days {days}: must be at least 1")
    if paths.ca_key.exists() or paths.ca_cert.exists():
        if not force:
            raise PkiError(
                f"a CA already exists in {paths.root}; refusing to overwrite it (every device "
                "trusts it). Use --force to replace it, then hand devices the new ca.crt"
            )
        log.warning("replacing the CA in %s: certificates it issued stop verifying", paths.root)
        for old in (paths.root / "server", paths.root / "clients"):
            shutil.rmtree(old, ignore_errors=True)
        paths.ledger.unlink(missing_ok=True)
    paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = utc_now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        # path_length 0: this CA signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    write_atomic(paths.ca_key, private_pem(key), PRIVATE_MODE)
    write_atomic(paths.ca_cert, cert_pem(cert), PUBLIC_MODE)
    return Authority(paths, key, cert)


def load_authority(paths: PkiPaths) -> Authority:
    """The CA in `paths` (PkiError if there is none or its files do not match)."""
    if not paths.ca_key.exists() or not paths.ca_cert.exists():
        raise PkiError(f"no CA in {paths.root}: run 'hedgerow-hub pki init --config ...' first")
    try:
        key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read the CA in {paths.root}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{paths.ca_key}: not an ECDSA key")
    if key.public_key() != cert.public_key():
        raise PkiError(f"{paths.ca_key} and {paths.ca_cert} do not belong together")
    return Authority(paths, key, cert)
