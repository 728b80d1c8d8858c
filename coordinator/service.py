"""The coordinator's application core: round lifecycle, verification, aggregation, recovery.

Transport-free: the gRPC servicer converts wire messages to the domain types used here and
maps :mod:`coordinator.errors` to status codes. Time comes from an injected clock (seconds
since the epoch, so persisted deadlines survive a restart). The coordinator holds only the
public CKKS context: it verifies and adds ciphertexts, the key holder decrypts.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import crypto
from coordinator import rounds as rs
from coordinator.blobs import BlobStore
from coordinator.errors import (
    DuplicateSubmission,
    InvalidSubmission,
    NotPermitted,
    TooLarge,
    WrongRound,
)
from coordinator.keyholder_link import (
    DecryptJob,
    Decryptor,
    KeyholderRefused,
    KeyholderUnavailable,
)
from coordinator.metrics import CoordinatorMetrics
from coordinator.store import CoordinatorStore, StoredSubmission
from crypto import ChunkLayout, PublicContext, SigningKey, UpdateEnvelope
from proto import wire

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


def model_to_bytes(vec: np.ndarray) -> bytes:
    """The wire/disk form of a global model: packed little-endian float64."""
    return np.ascontiguousarray(vec, dtype="<f8").tobytes()


def model_from_bytes(data: bytes, total: int) -> np.ndarray:
    if len(data) != 8 * total:
        raise ValueError(f"model blob holds {len(data)} bytes, expected {8 * total}")
    return np.frombuffer(data, dtype="<f8").astype(np.float64)


def _pack_sums(sums: Mapping[int, np.ndarray]) -> bytes:
    """Decrypted sums in a blob: for each chunk id ascending, id, length, float64 values."""
    parts: list[bytes] = []
    for cid in sorted(sums):
        arr = np.ascontiguousarray(sums[cid], dtype="<f8")
        parts.append(np.array([cid, arr.size], dtype="<i8").tobytes() + arr.tobytes())
    return b"".join(parts)


def _unpack_sums(data: bytes) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    pos = 0
    while pos < len(data):
        cid, n = (int(x) for x in np.frombuffer(data, dtype="<i8", count=2, offset=pos))
        pos += 16
        out[cid] = np.frombuffer(data, dtype="<f8", count=n, offset=pos).astype(np.float64)
        pos += 8 * n
    return out


@dataclass(frozen=True)
class FederationSpec:
    """What the coordinator is told at start-up by the composition root."""

    federation_id: str
    policy: rs.RoundPolicy
    layout: ChunkLayout
    initial_model: np.ndarray
    roster: Mapping[str, crypto.VerifyKey]  # site id -> Ed25519 verify key
    max_update_bytes: int
    cert_fingerprints: Mapping[str, str] = field(default_factory=dict)  # site id -> SHA-256


@dataclass(frozen=True)
class Upload:
    """A decoded upload: the caller's certificate identity and what it sent."""

    caller: str
    envelope: UpdateEnvelope
    signature: bytes
    chunks: Mapping[int, bytes]
    timings: Mapping[str, float]


@dataclass(frozen=True)
class Announcement:
    round: int
    phase: str  # "open" | "aggregating" | "waiting" | "finished"
    attempt: int
    deadline: float
    model_digest: str
    model_size: int
    submitted: bool


@dataclass(frozen=True)
class Receipt:
    fields: wire.ReceiptFields
    signature: bytes


class Coordinator:
    """One federation's coordinator. Thread-safe; call :meth:`tick` (or :meth:`run_ticks`)."""

    def __init__(
        self,
        spec: FederationSpec,
        state_dir: Path,
        context: PublicContext,
        decryptor: Decryptor,
        signing_key: SigningKey,
        *,
        audit: Callable[[str, dict[str, object]], object] | None = None,
        metrics: CoordinatorMetrics | None = None,
        clock: Clock = time.time,
    ) -> None:
        if spec.initial_model.shape != (spec.layout.total,):
            raise ValueError(
                f"initial model has shape {spec.initial_model.shape}, "
                f"layout expects ({spec.layout.total},)"
            )
        self.spec = spec
        self.ctx = context
        self.decryptor = decryptor
        self._signing_key = signing_key
        self.verify_key_bytes = signing_key.verify_key().to_bytes()
        self._audit = audit or (lambda kind, payload: None)
        self.metrics = metrics or CoordinatorMetrics()
        self.clock = clock
        self.state_dir = Path(state_dir)
        self.blobs = BlobStore(self.state_dir / "blobs")
        self.store = CoordinatorStore(self.state_dir / "coordinator.sqlite")
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._retry_at = 0.0  # monotonic time before which a failed decryption is not retried
        try:
            self._state = self._recover()
        except BaseException:
            self.store.close()  # e.g. the state folder of another federation: leave it be
            raise

    # -- start-up and recovery -------------------------------------------------------
    def _recover(self) -> rs.RoundState:
        for key, ours in (
            ("federation_id", self.spec.federation_id),
            ("layout_fingerprint", self.spec.layout.fingerprint),
        ):
            stored = self.store.get_meta(key)
            if stored is None:
                self.store.set_meta(key, ours)
            elif stored != ours:
                raise ValueError(
                    f"state dir {self.state_dir} was made with {key} {stored!r}, not {ours!r}"
                )
        if self.store.checkpoint(0) is None:
            digest = self.blobs.put(model_to_bytes(self.spec.initial_model))
            self.store.save_checkpoint(0, digest, self.clock())
        state = self.store.load_latest_round()
        if state is None:
            state = rs.open_round(1, self._checkpoint_digest(0), self.clock(), self.spec.policy)
            self.store.save_round(state)
            self._audit("round_opened", {"round": 1, "model": state.model_digest})
            logger.info("round 1 opened")
            return state
        if state.phase is rs.Phase.DONE and state.round < self.spec.policy.rounds:
            state = self._open_next(state)
        logger.info(
            "resumed at round %d (%s) with %d accepted update(s)",
            state.round,
            state.phase.value,
            state.n_accepted,
        )
        self._audit(
            "resumed",
            {"round": state.round, "phase": state.phase.value, "accepted": sorted(state.accepted)},
        )
        self.metrics.enrolled.set(len(self.store.enrolled()))
        return state

    def _checkpoint_digest(self, round_no: int) -> str:
        digest = self.store.checkpoint(round_no)
        if digest is None:
            raise RuntimeError(f"missing checkpoint for round {round_no}")
        return digest

    def _open_next(self, done: rs.RoundState) -> rs.RoundState:
        nxt = rs.open_round(
            done.round + 1, self._checkpoint_digest(done.round), self.clock(), self.spec.policy
        )
        self.store.save_round(nxt)
        self._audit("round_opened", {"round": nxt.round, "model": nxt.model_digest})
        logger.info("round %d opened", nxt.round)
        return nxt

    # -- queries ---------------------------------------------------------------------
    @property
    def state(self) -> rs.RoundState:
        with self._lock:
            return self._state

    @property
    def finished(self) -> bool:
        s = self.state
        return s.phase is rs.Phase.DONE and s.round >= self.spec.policy.rounds

    def announcement(self, site_id: str) -> Announcement:
        s = self.state
        if s.phase is rs.Phase.DONE:
            phase = "finished" if s.round >= self.spec.policy.rounds else "waiting"
        else:
            phase = s.phase.value
        return Announcement(
            round=s.round,
            phase=phase,
            attempt=s.attempt - 1,
            deadline=s.deadline,
            model_digest=s.model_digest,
            model_size=8 * self.spec.layout.total,
            submitted=site_id in s.accepted,
        )

    def model_blob(self, round_no: int) -> bytes:
        """``W(round-1)``, the model round ``round_no`` starts from (round R+1: the final)."""
        digest = self.store.checkpoint(round_no - 1)
        if digest is None:
            raise WrongRound(f"no model for round {round_no}: round {round_no - 1} not done")
        data = self.blobs.get(digest)
        self.metrics.bytes_sent.inc(len(data))
        return data

    def global_model(self) -> np.ndarray:
        last = self.store.checkpoints()[-1][1]
        return model_from_bytes(self.blobs.get(last), self.spec.layout.total)

    # -- enrolment -------------------------------------------------------------------
    def enrol(self, caller: str, site_id: str, verify_key: bytes) -> None:
        if caller != site_id:
            raise NotPermitted(f"certificate is for {caller!r}, enrolment names {site_id!r}")
        known = self.spec.roster.get(site_id)
        if known is None:
            raise NotPermitted(f"site {site_id!r} is not in the federation roster")
        if known.to_bytes() != verify_key:
            raise NotPermitted(f"verify key of {site_id!r} does not match the roster")
        self.store.enrol(site_id, self.clock())
        self.metrics.enrolled.set(len(self.store.enrolled()))
        self._audit("enrolled", {"site": site_id})
        logger.info("site %s enrolled", site_id)

    # -- uploads ---------------------------------------------------------------------
    def check_upload_header(self, caller: str, env: UpdateEnvelope, total_size: int) -> None:
        """Checks that need no ciphertext, done before the stream body is read."""
        if caller not in self.spec.roster:
            raise NotPermitted(f"{caller!r} is not a site of this federation")
        if caller not in self.store.enrolled():
            raise NotPermitted(f"site {caller!r} has not enrolled")
        if env.site_id != caller:
            raise NotPermitted(
                f"update names site {env.site_id!r} but the certificate is {caller!r}"
            )
        if env.federation_id != self.spec.federation_id:
            raise InvalidSubmission(f"federation id {env.federation_id!r} is not ours")
        if env.params_fingerprint != self.ctx.fingerprint:
            raise InvalidSubmission(
                f"parameter fingerprint {env.params_fingerprint[:16]}... does not match "
                f"the federation's {self.ctx.fingerprint[:16]}..."
            )
        if env.layout_fingerprint != self.spec.layout.fingerprint:
            raise InvalidSubmission("layout fingerprint does not match the federation's model")
        if total_size > self.spec.max_update_bytes:
            raise TooLarge(
                f"upload of {total_size} bytes exceeds the limit of "
                f"{self.spec.max_update_bytes} bytes"
            )
        with self._lock:
            rs.check_can_accept(self._state, caller, int(env.round))

    def note_refusal(self, what: str, exc: Exception) -> None:
        """Log, count and audit a refused request (called by the transport layer)."""
        logger.warning("refused %s (%s): %s", what, type(exc).__name__, exc)
        self.metrics.updates.labels(outcome=type(exc).__name__).inc()
        self._audit("refused", {"request": what, "error": type(exc).__name__, "reason": str(exc)})

    def submit(self, up: Upload) -> Receipt:
        t0 = time.perf_counter()
        receipt = self._submit(up)
        self.metrics.updates.labels(outcome="accepted").inc()
        self.metrics.upload_latency.observe(time.perf_counter() - t0)
        return receipt

    def _submit(self, up: Upload) -> Receipt:
        env = up.envelope
        n_bytes = sum(len(b) for b in up.chunks.values())
        self.check_upload_header(up.caller, env, n_bytes)
        try:
            crypto.verify_envelope(self.spec.roster[up.caller], env, up.signature)
        except crypto.InvalidUpdate as exc:
            raise InvalidSubmission(f"signature check failed for {up.caller!r}: {exc}") from exc
        max_weight = self.ctx.params.max_weight_sum // max(1, len(self.spec.roster))
        if not 1 <= int(env.weight) <= max_weight:
            raise InvalidSubmission(
                f"weight {env.weight} outside [1, {max_weight}] (the CKKS preset's headroom "
                f"for {len(self.spec.roster)} sites)"
            )
        ids = tuple(int(c) for c in env.chunk_ids)
        if not ids:
            raise InvalidSubmission("update carries no chunk")
        if set(ids) != set(up.chunks):
            raise InvalidSubmission(
                f"envelope names chunks {sorted(ids)} but the stream carried {sorted(up.chunks)}"
            )
        bad = [c for c in ids if not 0 <= c < self.spec.layout.n_chunks]
        if bad:
            raise InvalidSubmission(f"chunk ids {bad} outside [0, {self.spec.layout.n_chunks})")
        digests = {int(k): str(v) for k, v in dict(env.digests).items()}
        for cid, blob in up.chunks.items():
            if hashlib.sha256(blob).hexdigest() != digests.get(cid):
                raise InvalidSubmission(f"chunk {cid} does not match its signed digest")
            try:
                crypto.load_chunk(self.ctx, blob)
            except crypto.InvalidUpdate as exc:
                raise InvalidSubmission(f"chunk {cid} is not a valid ciphertext: {exc}") from exc
        blob_names = {cid: self.blobs.put(blob) for cid, blob in up.chunks.items()}
        now = self.clock()
        edigest = wire.envelope_digest(env.canonical_bytes())  # what the receipt names
        fields = wire.ReceiptFields(
            federation_id=self.spec.federation_id,
            round=int(env.round),
            site_id=up.caller,
            envelope_digest=edigest,
            accepted_unix_ms=int(now * 1000),
        )
        receipt = Receipt(
            fields,
            crypto.sign_message(self._signing_key, wire.RECEIPT_DOMAIN, fields.canonical_bytes()),
        )
        accepted = rs.Accepted(up.caller, int(env.round), int(env.weight), ids, edigest, now)
        with self._lock:
            new_state = rs.accept(self._state, accepted)  # re-checked under the lock
            try:
                self.store.add_submission(
                    StoredSubmission(
                        site_id=up.caller,
                        round=int(env.round),
                        envelope=env.canonical_bytes(),
                        signature=up.signature,
                        envelope_digest=edigest,
                        weight=int(env.weight),
                        chunk_blobs=blob_names,
                        n_bytes=sum(len(b) for b in up.chunks.values()),
                        received_at=now,
                        receipt_signature=receipt.signature,
                        timings=dict(up.timings),
                    )
                )
            except sqlite3.IntegrityError as exc:
                raise DuplicateSubmission(
                    f"site {up.caller!r} already submitted for round {env.round}"
                ) from exc
            self._state = new_state
        self.metrics.bytes_received.inc(n_bytes)
        self.metrics.participants.set(new_state.n_accepted)
        self._audit(
            "update_accepted",
            {"round": int(env.round), "site": up.caller, "envelope": edigest, "bytes": n_bytes},
        )
        logger.info(
            "round %d: accepted update from %s (%d bytes, %d/%d)",
            env.round,
            up.caller,
            n_bytes,
            new_state.n_accepted,
            len(self.spec.roster),
        )
        return receipt

    # -- the round loop --------------------------------------------------------------
    def tick(self) -> rs.Action:
        """Advance the round lifecycle once: close, retry or aggregate when due."""
        with self._lock:
            state = self._state
            if state.phase is rs.Phase.AGGREGATING:
                if time.monotonic() < self._retry_at:
                    return rs.Action.WAIT
                action = rs.Action.CLOSE
            else:
                action = rs.decide(state, self.clock(), self.spec.roster.keys(), self.spec.policy)
            if action is rs.Action.RETRY:
                self._state = rs.retry(state, self.clock(), self.spec.policy)
                self.store.save_round(self._state)
                self.metrics.rounds_retried.inc()
                self._audit(
                    "round_retried",
                    {
                        "round": state.round,
                        "attempt": self._state.attempt,
                        "have": state.n_accepted,
                    },
                )
                logger.warning(
                    "round %d: only %d of K=%d at the deadline, retrying (attempt %d)",
                    state.round,
                    state.n_accepted,
                    self.spec.policy.min_participants,
                    self._state.attempt,
                )
                return action
            if action is rs.Action.CLOSE and state.phase is rs.Phase.OPEN:
                self._state = rs.start_aggregation(state)
                self.store.save_round(self._state)
                self._audit("round_closed", {"round": state.round, "sites": sorted(state.accepted)})
                logger.info("round %d closed with %d update(s)", state.round, state.n_accepted)
        if action is rs.Action.CLOSE:
            self._aggregate_and_apply()
        return action

    def _aggregate_and_apply(self) -> None:
        state = self.state
        t_round = state.round
        subs = self.store.submissions(t_round)
        stats: dict[str, float] = {}
        stored = self.store.keyholder_result(t_round)
        normalizers = self._normalizers(subs)
        outcome = "applied"
        if stored is None:
            t0 = time.perf_counter()
            agg = self._weighted_sum(subs)
            stats["aggregation_s"] = time.perf_counter() - t0
            self.metrics.aggregation_latency.observe(stats["aggregation_s"])
            job = DecryptJob(
                round=t_round,
                normalizers=dict(agg.normalizers),
                envelopes=tuple(wire.SignedEnvelope(s.envelope, s.signature) for s in subs),
                aggregate=agg.to_bytes(),
            )
            t0 = time.perf_counter()
            try:
                result = self.decryptor.decrypt(job)
            except KeyholderUnavailable as exc:
                logger.warning("round %d: key holder unavailable (%s); retry in 2s", t_round, exc)
                self._retry_at = time.monotonic() + 2.0
                return
            except KeyholderRefused as exc:
                logger.error("round %d: key holder refused: %s; model kept", t_round, exc)
                self._audit("decrypt_refused", {"round": t_round, "reason": str(exc)})
                result = None
                outcome = f"refused: {exc}"
            stats["decryption_s"] = time.perf_counter() - t0
            self.metrics.decryption_latency.observe(stats["decryption_s"])
            if result is not None:
                sums_digest = self.blobs.put(_pack_sums(result.sums))
                self.store.save_keyholder_result(
                    t_round, sums_digest, result.flooding_std, self.clock()
                )
                sums: dict[int, np.ndarray] | None = dict(result.sums)
            else:
                sums = None
        else:
            sums = _unpack_sums(self.blobs.get(stored[0]))
        base = model_from_bytes(self.blobs.get(state.model_digest), self.spec.layout.total)
        if sums is not None:
            new_model = crypto.apply_aggregate(base, self.spec.layout, sums, normalizers)
        else:
            new_model = base
        digest = self.blobs.put(model_to_bytes(new_model))
        now = self.clock()
        stats["upload_bytes"] = float(sum(s.n_bytes for s in subs))
        self.store.complete_round(t_round, digest, now, len(subs), outcome, stats)
        self.metrics.rounds_completed.inc()
        self.metrics.round_latency.observe(max(0.0, now - state.opened_at))
        self._audit("round_done", {"round": t_round, "model": digest, "outcome": outcome})
        logger.info("round %d done (%s), new model %s", t_round, outcome, digest[:12])
        with self._lock:
            done = rs.finish(self._state)
            self._state = done if t_round >= self.spec.policy.rounds else self._open_next(done)
            self.metrics.current_round.set(self._state.round)
            self.metrics.participants.set(0)

    @staticmethod
    def _normalizers(subs: list[StoredSubmission]) -> dict[int, int]:
        out: dict[int, int] = {}
        for s in subs:
            for cid in s.chunk_blobs:
                out[cid] = out.get(cid, 0) + s.weight
        return out

    def _weighted_sum(self, subs: list[StoredSubmission]) -> crypto.EncryptedAggregate:
        updates = [
            crypto.EncryptedUpdate(
                {cid: self.blobs.get(d) for cid, d in s.chunk_blobs.items()},
                self.ctx.fingerprint,
                self.spec.layout.fingerprint,
            )
            for s in subs
        ]
        return crypto.weighted_sum(self.ctx, updates, [s.weight for s in subs])

    def run_ticks(self, interval_s: float = 0.1) -> None:
        """Tick until :meth:`stop` is called (run it in a thread)."""
        wait = interval_s
        while not self._stop.wait(wait):
            try:
                self.tick()
                wait = interval_s
            except Exception:  # keep serving; the failure is logged and retried later
                logger.exception("round tick failed; retrying in %.0fs", 5.0)
                wait = 5.0

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.stop()
        self.store.close()
