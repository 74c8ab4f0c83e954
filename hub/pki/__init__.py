"""The broker's small PKI: a CA on the hub, the broker's server certificate, optional client
certificates and the CRL Mosquitto reads (docs/pki.md)."""

from hub.pki.authority import Authority, PkiError, init_authority, load_authority
from hub.pki.issue import Issued, issue_client, issue_server
from hub.pki.ledger import LedgerEntry, read_ledger
from hub.pki.revocation import revoke, write_crl

__all__ = [
    "Authority",
    "Issued",
    "LedgerEntry",
    "PkiError",
    "init_authority",
    "issue_client",
    "issue_server",
    "load_authority",
    "read_ledger",
    "revoke",
    "write_crl",
]
