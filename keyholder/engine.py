"""The key holder's core: policy check, flooded decryption, persistence, audit log.

No network here; :mod:`keyholder.service` converts gRPC messages and delegates.
Every decision — granted, retried or refused, with its reason — is appended to the key
holder's own hash-chained log (``crypto.auditlog``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from crypto import EncryptedAggregate, InvalidUpdate, SigningKey, sign_message
from crypto.auditlog import HashChainLog
from crypto.secret import SecretContext
from proto.wire import DECRYPT_RESULT_DOMAIN, DecryptRequest, DecryptResult

from .policy import PolicyConfig, PolicyRefusal, Trust, evaluate
from .store import DecryptionStore, StoreError

logger = logging.getLogger(__name__)


class KeyHolder:
    """Decrypts only policy-approved aggregates, once per round, with noise flooding."""

    def __init__(
        self,
        secret: SecretContext,
        policy: PolicyConfig,
        trust: Trust,
        store: DecryptionStore,
        audit: HashChainLog,
        signing_key: SigningKey,
        *,
        rng_factory: Callable[[], np.random.Generator] = np.random.default_rng,
    ) -> None:
        if policy.params_fingerprint != secret.fingerprint:
            raise ValueError("policy names other CKKS parameters than the secret key")
        self._secret = secret
        self._policy = policy
        self._trust = trust
        self._store = store
        self._audit = audit
        self._signing_key = signing_key
        self._rng_factory = rng_factory
        self._lock = threading.Lock()
        self._public_bytes = secret.public().to_bytes()

    @property
    def policy(self) -> PolicyConfig:
        return self._policy

    @property
    def public_context_bytes(self) -> bytes:
        return self._public_bytes

    @property
    def params_fingerprint(self) -> str:
        return self._secret.fingerprint

    def refuse(self, code: str, reason: str, **details: object) -> None:
        """Log a refusal decided outside the policy (wrong peer, malformed stream)."""
        self._audit.append("decrypt.refused", {"code": code, "reason": reason, **details})
        logger.warning("decrypt refused (%s): %s", code, reason)

    def decrypt(self, req: DecryptRequest, peer: str = "") -> DecryptResult:
        """Check, decrypt with flooding, persist, log; raise :class:`PolicyRefusal`."""
        with self._lock:
            base = {"federation_id": req.federation_id, "round": req.round, "peer": peer}
            try:
                approval = evaluate(req, self._policy, self._trust, self._store.decrypted_rounds())
            except PolicyRefusal as refusal:
                self.refuse(refusal.code, refusal.reason, **base)
                raise
            if approval.retry:
                try:
                    result = self._store.load_result(self._policy.federation_id, req.round)
                except StoreError as exc:
                    reason = f"round {req.round} was already decrypted ({exc})"
                    self.refuse("FAILED_PRECONDITION", reason, **base)
                    raise PolicyRefusal("FAILED_PRECONDITION", reason) from None
                self._audit.append(
                    "decrypt.retry",
                    {
                        **base,
                        "request_digest": approval.request_digest,
                        "note": "identical "
                        "request; the values released earlier are returned, nothing decrypted",
                    },
                )
                logger.info("round %d: identical retry, returning stored release", req.round)
                return result
            agg = approval.aggregate
            released = EncryptedAggregate(
                chunks={c: agg.chunks[c] for c in approval.released_chunks},
                normalizers={c: agg.normalizers[c] for c in approval.released_chunks},
                params_fingerprint=agg.params_fingerprint,
                layout_fingerprint=agg.layout_fingerprint,
            )
            try:
                sums = self._secret.decrypt_aggregate(released, self._rng_factory())
            except InvalidUpdate as exc:
                reason = f"aggregate cannot be decrypted ({exc})"
                self.refuse("INVALID_ARGUMENT", reason, **base)
                raise PolicyRefusal("INVALID_ARGUMENT", reason) from None
            stds = {c: float(self._secret.flood_std(agg.normalizers[c])) for c in sums}
            unsigned = DecryptResult(req.federation_id, req.round, sums, stds)
            signature = sign_message(self._signing_key, DECRYPT_RESULT_DOMAIN, unsigned.digest())
            result = unsigned.with_signature(signature)
            self._store.record(
                approval.request_digest, approval.sites, approval.withheld_chunks, result
            )
            self._audit.append(
                "decrypt.granted",
                {
                    **base,
                    "request_digest": approval.request_digest,
                    "sites": list(approval.sites),
                    "released_chunks": list(approval.released_chunks),
                    "withheld_chunks": list(approval.withheld_chunks),
                    "normalizers": {str(c): int(agg.normalizers[c]) for c in sums},
                    "flooding_std": {str(c): stds[c] for c in sums},
                },
            )
            logger.info(
                "round %d decrypted for %d sites: %d chunks released, %d withheld",
                req.round,
                len(approval.sites),
                len(approval.released_chunks),
                len(approval.withheld_chunks),
            )
            return result
