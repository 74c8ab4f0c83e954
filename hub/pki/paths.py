"""Where the PKI keeps its files under the hub's data directory (DATA/pki/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class PkiPaths:
    """The files of one PKI directory."""

    root: Path

    @property
    def ca_key(self) -> Path:
        """The CA's private key (0600, never printed)."""
        return self.root / "ca.key"

    @property
    def ca_cert(self) -> Path:
        """The CA certificate: public, handed to every device to verify the broker."""
        return self.root / "ca.crt"

    @property
    def crl(self) -> Path:
        """The certificate revocation list Mosquitto reads (crlfile)."""
        return self.root / "crl.pem"

    @property
    def ledger(self) -> Path:
        """Every certificate issued, one JSON object a line."""
        return self.root / "issued.jsonl"

    def leaf(self, kind: str, name: str) -> tuple[Path, Path]:
        """Certificate and key paths of a server or client certificate."""
        directory = self.root / ("server" if kind == "server" else "clients")
        return directory / f"{name}.crt", directory / f"{name}.key"


def pki_paths(data: Path) -> PkiPaths:
    """The PKI files of the hub whose data directory is `data`."""
    return PkiPaths(Path(data) / "pki")
