"""Ed25519 keys for devices and the hub: the only module that touches Ed25519."""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from common.wire.errors import OpenError, Reason, WireError
from common.wire.header import KEY_ID_LEN

SIGNATURE_LEN = 64
PUBLIC_LEN = 32


def signer_id_of(public: bytes) -> bytes:
    """Key id of a signing key: first 8 bytes of SHA-256(b"ed25519" || public)."""
    return hashlib.sha256(b"ed25519" + public).digest()[:KEY_ID_LEN]


class VerifyKey:
    """An Ed25519 public key that checks signatures."""

    __slots__ = ("_key", "public")

    def __init__(self, public: bytes) -> None:
        if len(public) != PUBLIC_LEN:
            raise WireError(f"Ed25519 public key must be {PUBLIC_LEN} bytes, not {len(public)}")
        self.public = public
        self._key = ed25519.Ed25519PublicKey.from_public_bytes(public)

    @property
    def key_id(self) -> bytes:
        """The id carried in headers of messages this key signs."""
        return signer_id_of(self.public)

    def verify(self, signature: bytes, message: bytes) -> None:
        """Raise OpenError(bad_signature) unless `signature` is valid over `message`."""
        try:
            self._key.verify(signature, message)
        except InvalidSignature as exc:
            raise OpenError(Reason.BAD_SIGNATURE, "Ed25519 signature does not verify") from exc


class SigningKey:
    """An Ed25519 private key."""

    __slots__ = ("_key", "private", "verify_key")

    def __init__(self, private: bytes) -> None:
        if len(private) != 32:
            raise WireError("Ed25519 private key must be 32 bytes")
        self.private = private
        self._key = ed25519.Ed25519PrivateKey.from_private_bytes(private)
        self.verify_key = VerifyKey(self._key.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh random key."""
        return cls(ed25519.Ed25519PrivateKey.generate().private_bytes_raw())

    @property
    def public(self) -> bytes:
        """Raw 32-byte public key."""
        return self.verify_key.public

    def sign(self, message: bytes) -> bytes:
        """64-byte Ed25519 signature."""
        return self._key.sign(message)
