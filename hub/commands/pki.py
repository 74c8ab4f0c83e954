"""pki: the broker's CA (init), its server certificate and client certificates (issue), the CRL
(revoke) and what was issued (list). Private keys are written 0600 and never printed."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from hub.config import load_config
from hub.errors import HubError
from hub.pki import (
    Authority,
    Issued,
    init_authority,
    issue_client,
    issue_server,
    load_authority,
    read_ledger,
    revoke,
    write_crl,
)
from hub.pki.authority import DEFAULT_CA_DAYS
from hub.pki.issue import DEFAULT_LEAF_DAYS
from hub.pki.paths import PkiPaths, pki_paths


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add pki to the hedgerow-hub parser."""
    pki = sub.add_parser(
        "pki", help="the broker's TLS certificates: init, issue, revoke, list (docs/pki.md)"
    )
    psub = pki.add_subparsers(dest="pki_command", required=True, metavar="ACTION")

    p = psub.add_parser("init", help="create the CA under DATA/pki/")
    _config(p)
    p.add_argument("--days", type=int, default=DEFAULT_CA_DAYS, help="CA lifetime (3650)")
    p.add_argument("--name", default=None, help="the CA's common name (Hedgerow CA <site>)")
    p.add_argument("--force", action="store_true", help="replace an existing CA")
    p.set_defaults(func=cmd_init)

    issue = psub.add_parser("issue", help="issue a server or client certificate")
    _config(issue, suppress=True)
    isub = issue.add_subparsers(dest="issue_kind", required=True, metavar="KIND")
    p = isub.add_parser("server", help="the broker's certificate")
    _config(p, suppress=True)
    p.add_argument("--name", required=True, help="the broker's host name (as in mqtts:// URLs)")
    p.add_argument("--ip", action="append", default=[], help="an address in the SAN (repeat)")
    _leaf_options(p)
    p.set_defaults(func=cmd_issue_server)
    p = isub.add_parser("client", help="a device's client certificate (optional)")
    _config(p, suppress=True)
    p.add_argument("--device", required=True, help="the device id (its broker user name)")
    _leaf_options(p)
    p.set_defaults(func=cmd_issue_client)

    p = psub.add_parser("revoke", help="revoke a certificate and rewrite the CRL")
    _config(p)
    p.add_argument("certificate", help="its serial (hex, from 'pki list') or its name")
    p.set_defaults(func=cmd_revoke)

    p = psub.add_parser("crl", help="sign a fresh CRL (it is valid for a year)")
    _config(p)
    p.set_defaults(func=cmd_crl)

    p = psub.add_parser("list", help="list issued certificates")
    _config(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)


def _config(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    # `pki issue --config F server` and `pki issue server --config F` both work: the option
    # sits on both parsers, and SUPPRESS keeps the inner one from erasing the outer one's value.
    if suppress:
        parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="hub.toml")
    else:
        parser.add_argument("--config", type=Path, required=True, help="hub.toml")


def _leaf_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--days", type=int, default=DEFAULT_LEAF_DAYS, help="lifetime (825)")
    parser.add_argument("--force", action="store_true", help="replace an existing certificate")


def _paths(args: argparse.Namespace) -> PkiPaths:
    config_path = getattr(args, "config", None)
    if config_path is None:
        raise HubError("--config is required")
    return pki_paths(load_config(config_path).data)


def _authority(args: argparse.Namespace) -> Authority:
    return load_authority(_paths(args))


def cmd_init(args: argparse.Namespace) -> int:
    """hedgerow-hub pki init."""
    config = load_config(args.config)
    name = args.name or f"Hedgerow CA {config.site}"
    ca = init_authority(pki_paths(config.data), common_name=name, days=args.days, force=args.force)
    write_crl(ca)
    print(f"CA created: {ca.paths.ca_cert} (public: give it to every device)")
    print(f"CA key:     {ca.paths.ca_key} (0600; keep it on the hub, back it up offline)")
    print(f"CRL:        {ca.paths.crl}")
    print("next: hedgerow-hub pki issue --config ... server --name <broker host> [--ip ADDR]")
    return 0


def _print_issued(issued: Issued, install: str) -> None:
    print(f"serial {issued.serial}, valid until {issued.not_after:%Y-%m-%d}")
    print(f"certificate: {issued.cert_path}")
    print(f"key:         {issued.key_path} (0600)")
    print(install)


def cmd_issue_server(args: argparse.Namespace) -> int:
    """hedgerow-hub pki issue server."""
    ca = _authority(args)
    issued = issue_server(ca, args.name, args.ip, days=args.days, force=args.force)
    _print_issued(
        issued,
        "install them as /etc/mosquitto/certs/hub.crt and hub.key (readable by the mosquitto "
        "user, key 0600) and reload Mosquitto; devices verify it against "
        f"{ca.paths.ca_cert}",
    )
    return 0


def cmd_issue_client(args: argparse.Namespace) -> int:
    """hedgerow-hub pki issue client."""
    issued = issue_client(_authority(args), args.device, days=args.days, force=args.force)
    _print_issued(issued, "copy both to the device over an encrypted channel, then delete the key")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """hedgerow-hub pki revoke."""
    ca = _authority(args)
    entry = revoke(ca, args.certificate)
    print(f"revoked {entry.kind} certificate {entry.name} (serial {entry.serial})")
    print(f"CRL rewritten: {ca.paths.crl}; install it as the broker's crlfile and reload it")
    return 0


def cmd_crl(args: argparse.Namespace) -> int:
    """hedgerow-hub pki crl."""
    ca = _authority(args)
    crl = write_crl(ca)
    print(
        f"CRL rewritten: {ca.paths.crl} ({len(list(crl))} revoked), next update "
        f"{crl.next_update_utc:%Y-%m-%d}"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """hedgerow-hub pki list."""
    entries = read_ledger(_paths(args).ledger)
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2, sort_keys=True))
        return 0
    print(f"{'SERIAL':<40} {'KIND':<6} {'NAME':<30} {'NOT AFTER':<25} STATE")
    for e in entries:
        state = f"revoked {e.revoked}" if e.revoked else "valid"
        print(f"{e.serial:<40} {e.kind:<6} {e.name:<30} {e.not_after:<25} {state}")
    return 0
