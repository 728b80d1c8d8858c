"""The key holder's release policy: pure checks, no network, no storage, no secret key.

A decrypt request is granted only when, in this order:

1. it names this federation (else ``PERMISSION_DENIED``);
2. it is signed by the coordinator's Ed25519 key from the roster (``PERMISSION_DENIED``);
3. its round was never decrypted before — an identical retry of the granted request is
   recognised by its digest and answered again with the same released values; any other
   request for that round is refused (``FAILED_PRECONDITION``);
4. CKKS parameters and chunk layout agree between the request, the aggregate and this
   key (``INVALID_ARGUMENT``), and the aggregate's normalizers are the signed ones;
5. every envelope is well formed, for this federation and round, from an enrolled site,
   with a valid signature, the same fingerprints, and at most one envelope per site
   (``PERMISSION_DENIED`` / ``INVALID_ARGUMENT``);
6. at least K distinct enrolled sites signed (``PERMISSION_DENIED``);
7. every chunk's normalizer equals the sum of the weights of the envelopes that name that
   chunk (``INVALID_ARGUMENT``); chunks that fewer than ``min_contributors_per_chunk``
   sites sent are withheld (not decrypted), since they would reveal a single site's update.

What the key holder cannot check: that the aggregate ciphertext really is the weighted
sum of the signed updates (it never sees individual ciphertexts). Signatures prove that K
sites took part in the round; the coordinator is trusted to have summed them (DESIGN.md 1).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from crypto import (
    EncryptedAggregate,
    InvalidUpdate,
    UpdateEnvelope,
    VerifyKey,
    verify_envelope,
    verify_message,
)
from proto.wire import DECRYPT_REQUEST_DOMAIN, DecryptRequest

logger = logging.getLogger(__name__)

RefusalCode = Literal["PERMISSION_DENIED", "FAILED_PRECONDITION", "INVALID_ARGUMENT"]
Weighting = Literal["iterations", "samples", "uniform"]


class PolicyRefusal(Exception):
    """The request is refused; ``code`` names the gRPC status, ``reason`` says why."""

    def __init__(self, code: RefusalCode, reason: str) -> None:
        super().__init__(reason)
        self.code: RefusalCode = code
        self.reason = reason


@dataclass(frozen=True)
class PolicyConfig:
    federation_id: str
    min_participants: int  # K
    params_fingerprint: str  # of this key holder's CKKS key
    weighting: Weighting = "iterations"
    min_contributors_per_chunk: int | None = None  # None: K

    def __post_init__(self) -> None:
        # K < 1 would let a request through on fewer signatures than the federation asked for.
        if self.min_participants < 1 or self.chunk_threshold < 1:
            raise ValueError(
                "min_participants and min_contributors_per_chunk must be >= 1, got "
                f"{self.min_participants} and {self.min_contributors_per_chunk}"
            )
        if self.weighting not in ("iterations", "samples", "uniform"):
            raise ValueError(f"unknown weighting {self.weighting!r}")

    @property
    def chunk_threshold(self) -> int:
        k = self.min_contributors_per_chunk
        return self.min_participants if k is None else k


@dataclass(frozen=True)
class Trust:
    """Who the key holder believes: the coordinator's and the enrolled sites' verify keys."""

    coordinator: VerifyKey
    sites: Mapping[str, VerifyKey]


@dataclass(frozen=True)
class Approval:
    """A granted request: which sites vouched, which chunks are released or withheld."""

    round: int
    request_digest: str
    sites: tuple[str, ...]
    released_chunks: tuple[int, ...]
    withheld_chunks: tuple[int, ...]
    aggregate: EncryptedAggregate
    retry: bool = False  # identical to the round's earlier granted request


def envelope_weight(env: UpdateEnvelope, weighting: Weighting) -> int:
    """The coordinator's weight w_k for this envelope (1 under uniform weighting)."""
    return 1 if weighting == "uniform" else int(env.weight)


def evaluate(
    req: DecryptRequest,
    config: PolicyConfig,
    trust: Trust,
    decrypted: Mapping[int, str],
) -> Approval:
    """Check ``req``; return the approval (with the parsed aggregate) or raise.

    ``decrypted`` maps every round already decrypted to its granted request digest (hex).
    Raises :class:`PolicyRefusal` naming the status code and the reason.
    """
    if req.federation_id != config.federation_id:
        raise PolicyRefusal(
            "PERMISSION_DENIED",
            f"request is for federation {req.federation_id!r}, this key holder serves "
            f"{config.federation_id!r}",
        )
    digest = req.digest()
    try:
        verify_message(trust.coordinator, DECRYPT_REQUEST_DOMAIN, digest, req.coordinator_signature)
    except InvalidUpdate:
        raise PolicyRefusal(
            "PERMISSION_DENIED", "request is not signed by the coordinator's key"
        ) from None
    digest_hex = digest.hex()
    earlier = decrypted.get(req.round)
    if earlier is not None and earlier != digest_hex:
        raise PolicyRefusal(
            "FAILED_PRECONDITION",
            f"round {req.round} was already decrypted; a second decryption is refused",
        )

    if req.params_fingerprint != config.params_fingerprint:
        raise PolicyRefusal(
            "INVALID_ARGUMENT",
            f"request names CKKS parameters {req.params_fingerprint[:16]}…, this key is "
            f"{config.params_fingerprint[:16]}…",
        )
    try:
        aggregate = EncryptedAggregate.from_bytes(req.aggregate)
    except InvalidUpdate as exc:
        raise PolicyRefusal("INVALID_ARGUMENT", f"aggregate is malformed ({exc})") from None
    if aggregate.params_fingerprint != config.params_fingerprint:
        raise PolicyRefusal("INVALID_ARGUMENT", "aggregate was made for other CKKS parameters")
    if aggregate.layout_fingerprint != req.layout_fingerprint:
        raise PolicyRefusal("INVALID_ARGUMENT", "aggregate layout differs from the request's")
    if dict(aggregate.normalizers) != dict(req.normalizers):
        raise PolicyRefusal(
            "INVALID_ARGUMENT", "aggregate normalizers differ from the signed request"
        )

    sites: list[str] = []
    weights_by_chunk: dict[int, int] = {}
    contributors: dict[int, int] = {}
    for index, signed in enumerate(req.envelopes):
        try:
            env = UpdateEnvelope.from_canonical_bytes(signed.envelope)
        except InvalidUpdate as exc:
            raise PolicyRefusal(
                "INVALID_ARGUMENT", f"envelope {index + 1} is malformed ({exc})"
            ) from None
        site = env.site_id
        if site in sites:
            raise PolicyRefusal("INVALID_ARGUMENT", f"two envelopes from site {site!r}")
        key = trust.sites.get(site)
        if key is None:
            raise PolicyRefusal("PERMISSION_DENIED", f"site {site!r} is not enrolled")
        if env.federation_id != config.federation_id or env.round != req.round:
            raise PolicyRefusal(
                "PERMISSION_DENIED",
                f"envelope of site {site!r} is for {env.federation_id!r} round "
                f"{env.round}, not round {req.round}",
            )
        if (
            env.params_fingerprint != config.params_fingerprint
            or env.layout_fingerprint != req.layout_fingerprint
        ):
            raise PolicyRefusal(
                "INVALID_ARGUMENT", f"envelope of site {site!r} has other fingerprints"
            )
        try:
            verify_envelope(key, env, signed.signature)
        except InvalidUpdate:
            raise PolicyRefusal(
                "PERMISSION_DENIED", f"envelope signature of site {site!r} does not verify"
            ) from None
        sites.append(site)
        w = envelope_weight(env, config.weighting)
        for cid in env.chunk_ids:
            weights_by_chunk[cid] = weights_by_chunk.get(cid, 0) + w
            contributors[cid] = contributors.get(cid, 0) + 1

    if len(sites) < config.min_participants:
        raise PolicyRefusal(
            "PERMISSION_DENIED",
            f"only {len(sites)} valid participant signature(s) for round {req.round}; "
            f"at least K={config.min_participants} required",
        )
    for cid, norm in sorted(req.normalizers.items()):
        if weights_by_chunk.get(cid) != norm:
            raise PolicyRefusal(
                "INVALID_ARGUMENT",
                f"chunk {cid}: normalizer {norm} is not the sum of the signed weights "
                f"({weights_by_chunk.get(cid, 0)})",
            )
    released = tuple(
        cid for cid in sorted(req.normalizers) if contributors[cid] >= config.chunk_threshold
    )
    withheld = tuple(cid for cid in sorted(req.normalizers) if cid not in released)
    if not released:
        raise PolicyRefusal(
            "PERMISSION_DENIED",
            f"no chunk has at least {config.chunk_threshold} contributors; nothing released",
        )
    return Approval(
        round=req.round,
        request_digest=digest_hex,
        sites=tuple(sorted(sites)),
        released_chunks=released,
        withheld_chunks=withheld,
        aggregate=aggregate,
        retry=earlier is not None,
    )
