"""What the coordinator needs from the key holder, as a protocol (the gRPC client implements it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from proto import wire


@dataclass(frozen=True)
class DecryptJob:
    """One round's aggregate with the evidence the key holder's policy asks for."""

    round: int
    normalizers: Mapping[int, int]
    envelopes: Sequence[wire.SignedEnvelope]
    aggregate: bytes  # crypto.EncryptedAggregate.to_bytes()


@dataclass(frozen=True)
class DecryptOutcome:
    sums: Mapping[int, np.ndarray]
    flooding_std: Mapping[int, float]


class KeyholderRefused(Exception):
    """The key holder's policy refused the request (permanent for this round)."""


class KeyholderUnavailable(Exception):
    """The key holder could not be reached (transient; try again)."""


class Decryptor(Protocol):
    def public_context(self) -> bytes: ...

    def decrypt(self, job: DecryptJob) -> DecryptOutcome: ...
