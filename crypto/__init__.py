"""CKKS secure aggregation core (TenSEAL), Ed25519 envelopes, hash-chained logs.

Imports nothing of the project. ``SecretContext`` is deliberately NOT re-exported: it lives
in :mod:`crypto.secret`, which only the key holder imports.
"""

from crypto.aggregate import EncryptedAggregate, apply_aggregate, weighted_sum
from crypto.ciphertext import ChunkCiphertext, ChunkKind
from crypto.context import PublicContext
from crypto.errors import InvalidUpdate
from crypto.packing import ChunkLayout
from crypto.params import DEFAULT_PRESET, FORMAT_VERSION, PRESETS, CkksParams
from crypto.signing import (
    SigningKey,
    UpdateEnvelope,
    VerifyKey,
    sign_envelope,
    sign_message,
    verify_envelope,
    verify_envelope_bytes,
    verify_message,
)
from crypto.update import EncryptedUpdate, encrypt_update, load_chunk

__all__ = [
    "DEFAULT_PRESET",
    "FORMAT_VERSION",
    "PRESETS",
    "ChunkCiphertext",
    "ChunkKind",
    "ChunkLayout",
    "CkksParams",
    "EncryptedAggregate",
    "EncryptedUpdate",
    "InvalidUpdate",
    "PublicContext",
    "SigningKey",
    "UpdateEnvelope",
    "VerifyKey",
    "apply_aggregate",
    "encrypt_update",
    "load_chunk",
    "sign_envelope",
    "sign_message",
    "verify_envelope",
    "verify_envelope_bytes",
    "verify_message",
    "weighted_sum",
]
