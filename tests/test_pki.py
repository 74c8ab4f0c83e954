"""`hedgerow-hub pki`: the CA, server and client certificates, revocation and the CRL.

Certificates are checked with cryptography's own RFC 5280 path validation (the rules a TLS
client applies) and the private keys' file modes; tests/test_broker_tls.py runs them in a real
Mosquitto.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import ipaddress
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from hub.cli import main as hub_main
from hub.pki import (
    PkiError,
    init_authority,
    issue_client,
    issue_server,
    load_authority,
    read_ledger,
    revoke,
)
from hub.pki.paths import PkiPaths, pki_paths
from tests.enroll_fixtures import make_hub


def run(*argv: str) -> tuple[int, str, str]:
    """hedgerow-hub in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = hub_main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def config(tmp_path: Path) -> str:
    return str(make_hub(tmp_path).config.path)


@pytest.fixture
def paths(config: str) -> PkiPaths:
    code, _, err = run("pki", "init", "--config", config)
    assert code == 0, err
    return pki_paths(Path(config).parent)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_makes_a_ca_with_a_private_key_that_stays_private(config: str) -> None:
    code, out, err = run("pki", "init", "--config", config, "--days", "30")
    assert code == 0, err
    paths = pki_paths(Path(config).parent)
    assert mode(paths.ca_key) == 0o600 and mode(paths.root) == 0o700
    assert mode(paths.ca_cert) == 0o644
    assert "PRIVATE" not in out + err and paths.ca_key.read_text() not in out
    ca = cert(paths.ca_cert)
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert datetime.timedelta(days=30) < lifetime < datetime.timedelta(days=31)
    assert ca.subject == ca.issuer
    assert "cape-primary" in ca.subject.rfc4514_string()
    crl = x509.load_pem_x509_crl(paths.crl.read_bytes())
    assert crl.is_signature_valid(public) and len(list(crl)) == 0


def test_init_refuses_to_replace_a_ca_unless_forced(config: str, paths: PkiPaths) -> None:
    before = paths.ca_cert.read_bytes()
    code, _, err = run("pki", "init", "--config", config)
    assert code == 1 and "refusing to overwrite" in err and "--force" in err
    assert paths.ca_cert.read_bytes() == before
    assert run("pki", "issue", "--config", config, "server", "--name", "hub.school")[0] == 0
    code, _, err = run("pki", "init", "--config", config, "--force")
    assert code == 0, err
    assert paths.ca_cert.read_bytes() != before
    # Certificates of the old CA no longer verify, so they are forgotten with it.
    assert read_ledger(paths.ledger) == [] and not (paths.root / "server").exists()


def verify_server(paths: PkiPaths, leaf: x509.Certificate, host: str) -> None:
    subject: x509.verification.Subject
    try:
        subject = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = x509.DNSName(host)
    store = Store([cert(paths.ca_cert)])
    verifier = PolicyBuilder().store(store).build_server_verifier(subject)
    verifier.verify(leaf, [])


def test_a_server_certificate_verifies_for_its_names_only(config: str, paths: PkiPaths) -> None:
    argv = ["pki", "issue", "--config", config, "server", "--name", "hub.cape.example"]
    code, out, err = run(*argv, "--ip", "192.0.2.10", "--ip", "2001:db8::1")
    assert code == 0, err
    crt, key = paths.leaf("server", "hub.cape.example")
    assert str(crt) in out and mode(key) == 0o600 and "PRIVATE" not in out
    leaf = cert(crt)
    for host in ("hub.cape.example", "192.0.2.10", "2001:db8::1"):
        verify_server(paths, leaf, host)
    for host in ("other.cape.example", "192.0.2.11"):
        with pytest.raises(VerificationError):
            verify_server(paths, leaf, host)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    # Names are normalised: lower case, no final dot.
    assert run("pki", "issue", "--config", config, "server", "--name", "MQTT.Cape.Example.")[0] == 0
    verify_server(paths, cert(paths.leaf("server", "mqtt.cape.example")[0]), "mqtt.cape.example")
    # `--config` may also come after the kind.
    assert run("pki", "issue", "server", "--config", config, "--name", "10.0.0.2")[0] == 0
    verify_server(paths, cert(paths.leaf("server", "10.0.0.2")[0]), "10.0.0.2")


def test_issuing_again_refuses_unless_forced(config: str, paths: PkiPaths) -> None:
    argv = ["pki", "issue", "--config", config, "client", "--device", "pupil-k3xq7m"]
    assert run(*argv)[0] == 0
    code, _, err = run(*argv)
    assert code == 1 and "refusing to replace" in err
    assert run(*argv, "--force")[0] == 0
    assert len(read_ledger(paths.ledger)) == 2


def test_a_client_certificate_names_the_device(paths: PkiPaths) -> None:
    ca = load_authority(paths)
    issued = issue_client(ca, "pupil-k3xq7m", days=10)
    leaf = cert(issued.cert_path)
    assert leaf.subject.rfc4514_string() == "CN=pupil-k3xq7m"
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    verifier = PolicyBuilder().store(Store([ca.cert])).build_client_verifier()
    verified = verifier.verify(leaf, [])
    assert verified.subjects == [x509.UniformResourceIdentifier("urn:hedgerow:device:pupil-k3xq7m")]
    assert mode(issued.key_path) == 0o600
    assert format(leaf.serial_number, "x") == issued.serial


def test_revoke_puts_the_serial_in_a_signed_crl(config: str, paths: PkiPaths) -> None:
    ca = load_authority(paths)
    keep = issue_client(ca, "pupil-aaaaaa")
    gone = issue_client(ca, "pupil-bbbbbb")
    code, out, err = run("pki", "revoke", "--config", config, "pupil-bbbbbb")
    assert code == 0, err
    assert gone.serial in out
    crl = x509.load_pem_x509_crl(paths.crl.read_bytes())
    assert crl.is_signature_valid(ca.key.public_key())
    assert crl.get_revoked_certificate_by_serial_number(int(gone.serial, 16)) is not None
    assert crl.get_revoked_certificate_by_serial_number(int(keep.serial, 16)) is None
    # Again, by serial: nothing changes (idempotent), and the CRL still lists it once.
    assert revoke(ca, gone.serial).serial == gone.serial
    crl = x509.load_pem_x509_crl(paths.crl.read_bytes())
    assert len(list(crl)) == 1
    code, out, _ = run("pki", "list", "--config", config, "--json")
    listed = {e["name"]: e for e in json.loads(out)}
    assert listed["pupil-bbbbbb"]["revoked"] and listed["pupil-aaaaaa"]["revoked"] is None
    code, out, _ = run("pki", "list", "--config", config)
    assert "revoked" in out and keep.serial in out


def test_crl_is_signed_again_on_request(config: str, paths: PkiPaths) -> None:
    code, out, err = run("pki", "crl", "--config", config)
    assert code == 0, err
    assert "0 revoked" in out
    crl = x509.load_pem_x509_crl(paths.crl.read_bytes())
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc > datetime.timedelta(days=300)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["issue", "server", "--name", "bad_name!"], "not a host name"),
        (["issue", "server", "--name", "hub", "--ip", "300.1.1.1"], "not an IPv4 or IPv6"),
        (["issue", "server", "--name", "hub", "--days", "0"], "at least 1"),
        (["issue", "client", "--device", "Bad Id"], "ids are 1-63"),
        (["revoke", "deadbeef"], "no live certificate"),
    ],
)
def test_bad_requests_say_what_is_wrong(
    config: str, paths: PkiPaths, argv: list[str], message: str
) -> None:
    code, out, err = run("pki", argv[0], "--config", config, *argv[1:])
    assert code == 1 and message in err and out == ""


def test_commands_before_init_say_to_run_init(config: str) -> None:
    for argv in (["issue", "server", "--name", "hub"], ["revoke", "1"], ["crl"]):
        code, _, err = run("pki", argv[0], "--config", config, *argv[1:])
        assert code == 1 and "pki init" in err, argv


def test_a_name_given_twice_needs_a_serial(paths: PkiPaths) -> None:
    ca = load_authority(paths)
    issue_server(ca, "hub.school")
    issue_server(ca, "hub.school", force=True)
    with pytest.raises(PkiError, match="several live certificates"):
        revoke(ca, "hub.school")


def test_a_key_that_does_not_match_the_certificate_is_refused(paths: PkiPaths) -> None:
    other = PkiPaths(paths.root.parent / "other")
    init_authority(other, common_name="other")
    paths.ca_key.write_bytes(other.ca_key.read_bytes())
    with pytest.raises(PkiError, match="do not belong together"):
        load_authority(paths)


def test_help_lists_every_action() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        hub_main(["pki", "--help"])
    for action in ("init", "issue", "revoke", "crl", "list"):
        assert action in out.getvalue()


def test_a_bundle_hands_the_device_the_broker_ca(
    config: str, paths: PkiPaths, tmp_path: Path
) -> None:
    from agent.enrolment_client import BROKER_CA, enroll_from_bundle
    from common.enrolment import EnrollError
    from common.identity import Identity
    from common.wire.keyfile import read_json, write_json

    out = tmp_path / "lt-1.bundle"  # (the paths fixture made the CA)
    args = ["enroll", "bundle", "--config", config, "--device", "lt-1", "--class", "pupil-laptop"]
    assert run(*args, "--broker", "mqtts://hub.school.example:8883", "--out", str(out))[0] == 0
    assert read_json(out)["mqtt"]["ca_pem"] == paths.ca_cert.read_text()
    identity = enroll_from_bundle(out, tmp_path / "device")
    kept = tmp_path / "device" / BROKER_CA
    assert identity.mqtt.ca == str(kept) and Identity.load(tmp_path / "device").mqtt.ca == str(kept)
    assert kept.read_text() == paths.ca_cert.read_text() and mode(kept) == 0o644
    # A bundle whose CA is not a certificate is refused, and nothing is enrolled.
    bad = read_json(out)
    bad["mqtt"]["ca_pem"] = "-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n"
    forged = tmp_path / "bad.bundle"
    write_json(forged, bad, private=True)
    with pytest.raises(EnrollError, match="not a PEM certificate"):
        enroll_from_bundle(forged, tmp_path / "other")
    assert not (tmp_path / "other" / "device.json").exists()
