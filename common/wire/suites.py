"""HPKE suites (RFC 9180) and hub encryption keys: the only module that touches cryptography's HPKE."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from common.wire.errors import OpenError, Reason, WireError
from common.wire.header import KEY_ID_LEN, SuiteId

_MLKEM_SEED = 64
_MLKEM_PUB = 1184
_X25519 = 32

SUITE_NAMES: dict[str, SuiteId] = {
    "mlkem768-x25519": SuiteId.MLKEM768_X25519,
    "x25519": SuiteId.X25519,
}

_HPKE: dict[SuiteId, hpke.Suite] = {
    SuiteId.MLKEM768_X25519: hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305
    ),
    SuiteId.X25519: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305),
}


def suite_name(suite: SuiteId) -> str:
    """The configuration name of an encrypting suite."""
    for name, value in SUITE_NAMES.items():
        if value is suite:
            return name
    raise WireError(f"suite {suite!r} does not encrypt")


def key_id_of(suite: SuiteId, public: bytes) -> bytes:
    """Key id: the first 8 bytes of SHA-256(suite byte || public key bytes)."""
    return hashlib.sha256(bytes([suite]) + public).digest()[:KEY_ID_LEN]


@dataclass(frozen=True, slots=True)
class SealingKey:
    """An HPKE public key (usually the hub's) that messages are sealed to: suite plus raw bytes."""

    suite: SuiteId
    public: bytes

    def __post_init__(self) -> None:
        expected = {SuiteId.MLKEM768_X25519: _MLKEM_PUB + _X25519, SuiteId.X25519: _X25519}
        if self.suite not in expected or len(self.public) != expected[self.suite]:
            raise WireError(
                f"public key of {len(self.public)} bytes does not fit suite {self.suite!r}"
            )

    @property
    def key_id(self) -> bytes:
        """The id devices put in the header so the hub can pick the private key."""
        return key_id_of(self.suite, self.public)

    def seal(self, plaintext: bytes, info: bytes) -> bytes:
        """HPKE base-mode single-shot seal: enc || ciphertext."""
        return _HPKE[self.suite].encrypt(plaintext, self._crypto_key(), info=info)

    def _crypto_key(self) -> hpke.MLKEM768X25519PublicKey | x25519.X25519PublicKey:
        if self.suite is SuiteId.X25519:
            return x25519.X25519PublicKey.from_public_bytes(self.public)
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(self.public[:_MLKEM_PUB]),
            x25519.X25519PublicKey.from_public_bytes(self.public[_MLKEM_PUB:]),
        )


class OpeningKey:
    """An HPKE private key (usually the hub's); opens what was sealed to its public half."""

    __slots__ = ("_key", "key_id", "private", "public_key", "suite")

    def __init__(self, suite: SuiteId, private: bytes) -> None:
        self.suite = suite
        self.private = private
        key: hpke.MLKEM768X25519PrivateKey | x25519.X25519PrivateKey
        if suite is SuiteId.X25519 and len(private) == _X25519:
            key = x25519.X25519PrivateKey.from_private_bytes(private)
            public = key.public_key().public_bytes_raw()
        elif suite is SuiteId.MLKEM768_X25519 and len(private) == _MLKEM_SEED + _X25519:
            m = mlkem.MLKEM768PrivateKey.from_seed_bytes(private[:_MLKEM_SEED])
            x = x25519.X25519PrivateKey.from_private_bytes(private[_MLKEM_SEED:])
            key = hpke.MLKEM768X25519PrivateKey(m, x)
            public = m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()
        else:
            raise WireError(f"private key of {len(private)} bytes does not fit suite {suite!r}")
        self._key = key
        self.public_key = SealingKey(suite, public)
        # The public half's id, worked out once: the hub compares it for every envelope.
        self.key_id = self.public_key.key_id

    @classmethod
    def generate(cls, suite: SuiteId = SuiteId.MLKEM768_X25519) -> OpeningKey:
        """A fresh random key for `suite`."""
        if suite is SuiteId.X25519:
            return cls(suite, x25519.X25519PrivateKey.generate().private_bytes_raw())
        if suite is SuiteId.MLKEM768_X25519:
            seed = mlkem.MLKEM768PrivateKey.generate().private_bytes_raw()
            return cls(suite, seed + x25519.X25519PrivateKey.generate().private_bytes_raw())
        raise WireError(f"suite {suite!r} does not encrypt")

    def open(self, sealed: bytes, info: bytes) -> bytes:
        """Open an HPKE single-shot ciphertext; raises OpenError(decrypt_failed)."""
        try:
            return _HPKE[self.suite].decrypt(sealed, self._key, info=info)
        except (InvalidTag, ValueError) as exc:
            raise OpenError(Reason.DECRYPT_FAILED, "HPKE open failed") from exc
