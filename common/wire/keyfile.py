"""Key files on disk: small JSON documents, private ones written atomically with mode 0600."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from common.wire.errors import WireError
from common.wire.header import SuiteId
from common.wire.signing import SigningKey
from common.wire.suites import SUITE_NAMES, OpeningKey, suite_name

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def b64(data: bytes) -> str:
    """Standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str) -> bytes:
    """Decode base64 text, naming `what` in the error."""
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise WireError(f"{what}: not valid base64") from exc


def write_atomic(path: Path, data: bytes, mode: int, *, exclusive: bool = False) -> None:
    """Write `data` to `path` via a temporary file, fsync and rename, so readers never see half.

    The temporary file is created with `mode` from the start, so a private key is never readable
    by others, even for an instant. With `exclusive`, refuse to replace an existing file.
    """
    path = Path(path)
    if exclusive and path.exists():
        raise WireError(f"{path} exists; refusing to overwrite it")
    # ".<name>.<random>.tmp": recognisable as half-written if a crash leaves it behind.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if path appeared meanwhile
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json(
    path: Path, document: dict[str, Any], *, private: bool, exclusive: bool = False
) -> None:
    """Write a JSON document atomically; private documents get mode 0600."""
    data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
    write_atomic(path, data, PRIVATE_MODE if private else PUBLIC_MODE, exclusive=exclusive)


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, with an error that names the file."""
    try:
        document = json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise WireError(f"{path}: cannot read key file: {exc}") from exc
    if not isinstance(document, dict):
        raise WireError(f"{path}: not a key file")
    return document


def opening_key_document(key: OpeningKey, created: str) -> dict[str, Any]:
    """The on-disk form of an HPKE private key."""
    return {
        "type": "hedgerow-hpke-private",
        "suite": suite_name(key.suite),
        "key_id": key.key_id.hex(),
        "private": b64(key.private),
        "public": b64(key.public_key.public),
        "created": created,
    }


def load_opening_key(path: Path) -> OpeningKey:
    """Read an HPKE private key file and check it is whole."""
    doc = read_json(path)
    suite: SuiteId | None = SUITE_NAMES.get(str(doc.get("suite")))
    if doc.get("type") != "hedgerow-hpke-private" or suite is None:
        raise WireError(f"{path}: not a Hedgerow HPKE private key")
    key = OpeningKey(suite, unb64(str(doc.get("private")), f"{path}: private"))
    if key.key_id.hex() != doc.get("key_id"):
        raise WireError(f"{path}: key id does not match the key")
    return key


def signing_key_document(key: SigningKey, created: str) -> dict[str, Any]:
    """The on-disk form of an Ed25519 private key."""
    return {
        "type": "hedgerow-ed25519-private",
        "key_id": key.verify_key.key_id.hex(),
        "private": b64(key.private),
        "public": b64(key.public),
        "created": created,
    }


def load_signing_key(path: Path) -> SigningKey:
    """Read an Ed25519 private key file and check it is whole."""
    doc = read_json(path)
    if doc.get("type") != "hedgerow-ed25519-private":
        raise WireError(f"{path}: not a Hedgerow Ed25519 private key")
    key = SigningKey(unb64(str(doc.get("private")), f"{path}: private"))
    if key.verify_key.key_id.hex() != doc.get("key_id"):
        raise WireError(f"{path}: key id does not match the key")
    return key
