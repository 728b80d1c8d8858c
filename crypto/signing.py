"""Ed25519 signatures: keys as capabilities, canonical update envelopes, domain separation.

Every signature covers ``b"cipherfed/sig/v1\\0" + u32 len(domain) + domain + payload`` so a
signature made for one purpose (an update envelope, a decrypt request, a receipt) never
verifies for another. Verification returns the authenticated object or raises
:class:`~crypto.errors.InvalidUpdate`.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from crypto.errors import InvalidUpdate

SIGNATURE_PREFIX = b"cipherfed/sig/v1\x00"
ENVELOPE_DOMAIN = "cipherfed/update-envelope/v1"
ENVELOPE_MAGIC = b"CFenv\x01"
SIGNATURE_SIZE = 64
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DOMAIN = re.compile(r"[\x21-\x7e]{1,200}")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class VerifyKey:
    """An Ed25519 public key: verifies, cannot sign."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PublicKey) -> None:
        if not isinstance(key, Ed25519PublicKey):
            raise TypeError(f"expected an Ed25519PublicKey, got {type(key).__name__}")
        self._key = key

    def to_bytes(self) -> bytes:
        """Raw 32-byte public key."""
        return self._key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> VerifyKey:
        """From raw 32 bytes (untrusted): :class:`InvalidUpdate` if malformed."""
        if not isinstance(raw, bytes | bytearray | memoryview) or len(raw) != 32:
            raise InvalidUpdate("an Ed25519 verify key is exactly 32 bytes")
        try:
            return cls(Ed25519PublicKey.from_public_bytes(bytes(raw)))
        except ValueError as exc:
            raise InvalidUpdate(f"invalid Ed25519 verify key: {exc}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def __repr__(self) -> str:
        return f"VerifyKey({self.to_bytes().hex()[:16]}…)"

    def _verify(self, signature: bytes, message: bytes) -> None:
        if not isinstance(signature, bytes | bytearray) or len(signature) != SIGNATURE_SIZE:
            raise InvalidUpdate(f"a signature is exactly {SIGNATURE_SIZE} bytes")
        try:
            self._key.verify(bytes(signature), message)
        except InvalidSignature:
            raise InvalidUpdate("bad signature") from None


class SigningKey:
    """An Ed25519 private key: signs; :meth:`verify_key` gives the public half."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        if not isinstance(key, Ed25519PrivateKey):
            raise TypeError(f"expected an Ed25519PrivateKey, got {type(key).__name__}")
        self._key = key

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """Deterministic key from a 32-byte seed (tests, known-answer vectors)."""
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise ValueError("an Ed25519 seed is exactly 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def verify_key(self) -> VerifyKey:
        return VerifyKey(self._key.public_key())

    def to_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM (store it with file permissions 0600)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, pem: bytes | str) -> SigningKey:
        data = pem.encode() if isinstance(pem, str) else bytes(pem)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not an unencrypted PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"PEM holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def __repr__(self) -> str:
        return f"SigningKey(verify_key={self.verify_key()!r})"

    def _sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def _message(domain: str, payload: bytes) -> bytes:
    if not isinstance(domain, str) or not _DOMAIN.fullmatch(domain):
        raise ValueError("domain must be 1-200 printable ASCII characters without spaces")
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"payload must be bytes, got {type(payload).__name__}")
    d = domain.encode("ascii")
    return SIGNATURE_PREFIX + _U32.pack(len(d)) + d + bytes(payload)


def sign_message(key: SigningKey, domain: str, payload: bytes) -> bytes:
    """Ed25519 signature of ``payload`` for the purpose named by ``domain``."""
    if not isinstance(key, SigningKey):
        raise TypeError(f"key must be a SigningKey, got {type(key).__name__}")
    return key._sign(_message(domain, payload))


def verify_message(vk: VerifyKey, domain: str, payload: bytes, signature: bytes) -> bytes:
    """Returns ``payload`` if ``signature`` is valid for ``domain``; else :class:`InvalidUpdate`."""
    if not isinstance(vk, VerifyKey):
        raise TypeError(f"vk must be a VerifyKey, got {type(vk).__name__}")
    vk._verify(signature, _message(domain, payload))
    return bytes(payload)


# ------------------------------------------------------------------------------- envelopes
def _put_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return _U32.pack(len(b)) + b


@dataclass(frozen=True)
class UpdateEnvelope:
    """What a participant signs about its update. ``chunk_ids`` are stored sorted."""

    federation_id: str
    round: int
    site_id: str
    chunk_ids: tuple[int, ...]
    digests: Mapping[int, str]
    weight: int
    layout_fingerprint: str
    params_fingerprint: str

    def __post_init__(self) -> None:
        for name in ("federation_id", "site_id"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v or len(v.encode()) > 1024:
                raise ValueError(f"{name} must be a non-empty string of at most 1024 bytes")
        for name in ("round", "weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        if self.weight < 1:
            raise ValueError(f"weight must be >= 1, got {self.weight}")
        ids = tuple(sorted(int(c) for c in self.chunk_ids))
        if len(set(ids)) != len(ids) or any(not 0 <= c < 2**32 for c in ids):
            raise ValueError("chunk_ids must be distinct integers in [0, 2**32)")
        digests = {int(k): v for k, v in dict(self.digests).items()}
        if set(digests) != set(ids):
            raise ValueError("digests must name exactly the chunk_ids")
        for cid, d in digests.items():
            if not isinstance(d, str) or not _HEX64.fullmatch(d):
                raise ValueError(f"digest of chunk {cid} must be 64 lowercase hex characters")
        for name in ("layout_fingerprint", "params_fingerprint"):
            v = getattr(self, name)
            if not isinstance(v, str) or not _HEX64.fullmatch(v):
                raise ValueError(f"{name} must be 64 lowercase hex characters")
        object.__setattr__(self, "chunk_ids", ids)
        object.__setattr__(self, "digests", MappingProxyType({c: digests[c] for c in ids}))

    def canonical_bytes(self) -> bytes:
        """Fixed encoding: magic, length-prefixed UTF-8 ids, u64 round and weight, sorted
        (u32 chunk id, 32-byte digest) pairs, the two 32-byte fingerprints."""
        parts = [
            ENVELOPE_MAGIC,
            _put_str(self.federation_id),
            _U64.pack(self.round),
            _put_str(self.site_id),
            _U64.pack(self.weight),
            _U32.pack(len(self.chunk_ids)),
        ]
        for cid in self.chunk_ids:
            parts.append(_U32.pack(cid) + bytes.fromhex(self.digests[cid]))
        parts.append(bytes.fromhex(self.layout_fingerprint))
        parts.append(bytes.fromhex(self.params_fingerprint))
        return b"".join(parts)

    @classmethod
    def from_canonical_bytes(cls, data: bytes) -> UpdateEnvelope:
        """Parse untrusted canonical bytes; :class:`InvalidUpdate` if malformed."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidUpdate(f"envelope must be bytes, got {type(data).__name__}")
        b = bytes(data)
        pos = 0

        def take(n: int) -> bytes:
            nonlocal pos
            if n < 0 or pos + n > len(b):
                raise InvalidUpdate("envelope truncated")
            out = b[pos : pos + n]
            pos += n
            return out

        def get_str() -> str:
            (n,) = _U32.unpack(take(4))
            if n > 1024:
                raise InvalidUpdate("envelope string too long")
            try:
                return take(n).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidUpdate("envelope string is not UTF-8") from None

        if take(len(ENVELOPE_MAGIC)) != ENVELOPE_MAGIC:
            raise InvalidUpdate("not a CipherFed update envelope (bad magic or version)")
        fed = get_str()
        (rnd,) = _U64.unpack(take(8))
        site = get_str()
        (weight,) = _U64.unpack(take(8))
        (count,) = _U32.unpack(take(4))
        if count > (len(b) - pos) // 36:
            raise InvalidUpdate("envelope truncated (chunk table)")
        digests: dict[int, str] = {}
        prev = -1
        for _ in range(count):
            (cid,) = _U32.unpack(take(4))
            if cid <= prev:
                raise InvalidUpdate("envelope chunk ids not strictly increasing")
            prev = cid
            digests[cid] = take(32).hex()
        lfp = take(32).hex()
        pfp = take(32).hex()
        if pos != len(b):
            raise InvalidUpdate("envelope has trailing bytes")
        try:
            env = cls(fed, rnd, site, tuple(digests), digests, weight, lfp, pfp)
        except ValueError as exc:
            raise InvalidUpdate(f"envelope: {exc}") from None
        if env.canonical_bytes() != b:
            raise InvalidUpdate("envelope encoding is not canonical")
        return env


def sign_envelope(key: SigningKey, env: UpdateEnvelope) -> bytes:
    if not isinstance(env, UpdateEnvelope):
        raise TypeError(f"env must be an UpdateEnvelope, got {type(env).__name__}")
    return sign_message(key, ENVELOPE_DOMAIN, env.canonical_bytes())


def verify_envelope(vk: VerifyKey, env: UpdateEnvelope, signature: bytes) -> UpdateEnvelope:
    """Returns ``env`` if ``signature`` is ``vk``'s over its canonical bytes; else raises."""
    if not isinstance(env, UpdateEnvelope):
        raise TypeError(f"env must be an UpdateEnvelope, got {type(env).__name__}")
    verify_message(vk, ENVELOPE_DOMAIN, env.canonical_bytes(), signature)
    return env


def verify_envelope_bytes(vk: VerifyKey, canonical: bytes, signature: bytes) -> UpdateEnvelope:
    """Verify the signature over ``canonical`` first, then parse it."""
    verify_message(vk, ENVELOPE_DOMAIN, canonical, signature)
    return UpdateEnvelope.from_canonical_bytes(canonical)


def envelope_digests_match(env: UpdateEnvelope, digests: Mapping[int, str]) -> bool:
    """Whether ``digests`` (e.g. ``EncryptedUpdate.digests()``) are exactly the envelope's."""
    return dict(env.digests) == {int(k): v for k, v in digests.items()}


__all__: Sequence[str] = [
    "ENVELOPE_DOMAIN",
    "SigningKey",
    "UpdateEnvelope",
    "VerifyKey",
    "envelope_digests_match",
    "sign_envelope",
    "sign_message",
    "verify_envelope",
    "verify_envelope_bytes",
    "verify_message",
]
