"""The participant daemon: enrol, wait for rounds, train, privacy step, encrypt, sign, upload.

One site, one process. Per round it downloads ``W(t-1)``, trains N_k local iterations,
applies the privacy step (which may refuse the round when the privacy budget would be
exceeded: then the site sends nothing), encrypts the sparse update with the federation's
public CKKS context, signs the envelope and uploads it. The exact signed update is stored
before it is sent (:mod:`participant.state`), so after a restart the daemon re-sends the
same bytes instead of training again, and it never sends two different updates for a round.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import numpy as np

import crypto
from crypto import ChunkLayout, PublicContext, SigningKey, UpdateEnvelope, VerifyKey
from participant.client import CoordinatorClient, CoordinatorRefused, GaveUp
from participant.state import DaemonState, PreparedUpdate, RoundStatus
from proto import cipherfed_pb2 as pb
from proto import wire

logger = logging.getLogger(__name__)


class TrainResult(Protocol):
    @property
    def delta(self) -> np.ndarray: ...
    @property
    def n_iters(self) -> int: ...
    @property
    def loss(self) -> float: ...
    @property
    def dp_events(self) -> Sequence[Any]: ...


class Trainer(Protocol):
    def run_round(self, global_flat: np.ndarray) -> TrainResult: ...


class RoundRefused(Exception):
    """The site will not take part in this round (e.g. its privacy budget is spent)."""


class PrivacyStep(Protocol):
    def check(self, round_no: int) -> None:
        """Raise :class:`RoundRefused` before training if the round cannot be afforded."""

    def apply(self, round_no: int, result: TrainResult) -> np.ndarray:
        """The vector to encrypt (sparse, scaled like ΔW); records the spent budget."""


class NoPrivacy:
    """Share the whole update, no DP (the plaintext-equivalence and demo default)."""

    def check(self, round_no: int) -> None:
        return None

    def apply(self, round_no: int, result: TrainResult) -> np.ndarray:
        return np.asarray(result.delta, dtype=np.float64)


@dataclass(frozen=True)
class SiteIdentity:
    federation_id: str
    site_id: str
    signing_key: SigningKey
    params_fingerprint: str  # the CKKS parameters the federation file names
    coordinator_key: VerifyKey | None = None  # from the kit's roster, to check receipts


WeightFn = Callable[[TrainResult], int]


def iterations_weight(result: TrainResult) -> int:
    return int(result.n_iters)


class ParticipantDaemon:
    def __init__(
        self,
        identity: SiteIdentity,
        client: CoordinatorClient,
        state: DaemonState,
        trainer: Trainer,
        layout: ChunkLayout,
        *,
        privacy: PrivacyStep | None = None,
        weight: WeightFn = iterations_weight,
        poll_s: float = 0.25,
        stop: threading.Event | None = None,
    ) -> None:
        self.id = identity
        self.client = client
        self.state = state
        self.trainer = trainer
        self.layout = layout
        self.privacy = privacy or NoPrivacy()
        self.weight = weight
        self.poll_s = poll_s
        self.stop_event = stop or threading.Event()
        self.ctx: PublicContext | None = None
        self.coordinator_key = identity.coordinator_key

    # -- start-up --------------------------------------------------------------------
    def enrol(self) -> None:
        vk = self.id.signing_key.verify_key().to_bytes()
        resp = self.client.enrol(self.id.federation_id, self.id.site_id, vk)
        if resp.params_fingerprint != self.id.params_fingerprint:
            raise RuntimeError(
                f"coordinator runs CKKS parameters {resp.params_fingerprint[:16]}..., "
                f"the federation file names {self.id.params_fingerprint[:16]}..."
            )
        if resp.layout_fingerprint != self.layout.fingerprint:
            raise RuntimeError("coordinator's model layout differs from this site's model")
        announced = VerifyKey.from_bytes(bytes(resp.coordinator_verify_key))
        if self.coordinator_key is None:
            self.coordinator_key = announced
        elif self.coordinator_key.to_bytes() != announced.to_bytes():
            raise RuntimeError("coordinator's receipt key differs from the one in the kit")
        blob = self.client.public_context(self.id.federation_id, self.id.params_fingerprint)
        ctx = PublicContext.from_bytes(blob)
        if ctx.fingerprint != self.id.params_fingerprint:
            raise RuntimeError("public context's parameters differ from the federation file")
        self.ctx = ctx
        logger.info(
            "%s enrolled (round %d of %d)", self.id.site_id, resp.current_round, resp.total_rounds
        )

    # -- main loop -------------------------------------------------------------------
    def run(self) -> int:
        """Take part until the federation finishes or :meth:`stop`; returns rounds sent."""
        try:
            self.enrol()
            sent = 0
            while not self.stop_event.is_set():
                ann = self.client.get_round(self.id.federation_id, self.id.site_id)
                if ann.state == pb.ROUND_STATE_FINISHED:
                    logger.info("%s: federation finished", self.id.site_id)
                    break
                if ann.state == pb.ROUND_STATE_OPEN and self.step(ann):
                    sent += 1
                    continue
                self.stop_event.wait(self.poll_s)
            return sent
        except GaveUp as exc:
            logger.warning("%s: %s", self.id.site_id, exc)
            return 0

    def stop(self) -> None:
        self.stop_event.set()

    def step(self, ann: pb.RoundAnnouncement) -> bool:
        """Handle an open round once; True when an update was delivered now."""
        t = int(ann.round)
        rec = self.state.record(t)
        if rec is not None and rec.status is not RoundStatus.PREPARED:
            return False
        prepared = self.state.prepared(t)
        if prepared is None:
            if ann.submitted:  # the coordinator has ours but our state was lost
                self.state.mark_skipped(t, "coordinator already holds an update of this site")
                return False
            prepared = self._prepare(t, ann)
            if prepared is None:
                return False
        return self._deliver(prepared)

    def _prepare(self, t: int, ann: pb.RoundAnnouncement) -> PreparedUpdate | None:
        assert self.ctx is not None, "enrol() first"
        try:
            self.privacy.check(t)
        except RoundRefused as exc:
            logger.warning(
                "%s: round %d refused by the privacy ledger: %s", self.id.site_id, t, exc
            )
            self.state.mark_skipped(t, f"privacy: {exc}")
            return None
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        blob = self.client.download_model(self.id.federation_id, t)
        timings["download_s"] = time.perf_counter() - t0
        if ann.model_sha256 and hashlib.sha256(blob).hexdigest() != ann.model_sha256:
            raise RuntimeError(f"round {t}: downloaded model does not match the announcement")
        if len(blob) != 8 * self.layout.total:
            raise RuntimeError(
                f"round {t}: model has {len(blob)} bytes, expected {8 * self.layout.total}"
            )
        global_flat = np.frombuffer(blob, dtype="<f8").astype(np.float64)

        t0 = time.perf_counter()
        result = self.trainer.run_round(global_flat)
        timings["train_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        try:
            vector = self.privacy.apply(t, result)
        except RoundRefused as exc:
            logger.warning(
                "%s: round %d refused by the privacy ledger: %s", self.id.site_id, t, exc
            )
            self.state.mark_skipped(t, f"privacy: {exc}")
            return None
        timings["privacy_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        update = crypto.encrypt_update(self.ctx, self.layout, self._in_range(t, vector))
        timings["encrypt_s"] = time.perf_counter() - t0
        if not update.chunks:
            self.state.mark_skipped(t, "the privacy step selected nothing to share")
            return None
        env = UpdateEnvelope(
            federation_id=self.id.federation_id,
            round=t,
            site_id=self.id.site_id,
            chunk_ids=tuple(sorted(update.chunks)),
            digests=update.digests(),
            weight=self.weight(result),
            layout_fingerprint=self.layout.fingerprint,
            params_fingerprint=self.ctx.fingerprint,
        )
        signature = crypto.sign_envelope(self.id.signing_key, env)
        prepared = PreparedUpdate(
            round=t,
            envelope=env.canonical_bytes(),
            signature=signature,
            chunks=dict(update.chunks),
            timings=timings,
        )
        self.state.save_prepared(prepared)
        logger.info(
            "%s: round %d update ready (N_k=%d, loss %.4f, %d chunk(s), %d bytes)",
            self.id.site_id,
            t,
            result.n_iters,
            result.loss,
            len(update.chunks),
            prepared.n_bytes,
        )
        return prepared

    def _in_range(self, t: int, vector: np.ndarray) -> np.ndarray:
        """Clip to the CKKS preset's value bound (post-processing: no privacy cost)."""
        assert self.ctx is not None
        bound = self.ctx.params.value_bound
        over = int(np.count_nonzero(np.abs(vector) > bound))
        if over:
            logger.warning(
                "%s: round %d: %d value(s) beyond the CKKS bound ±%g clipped (max |v| %.3g)",
                self.id.site_id,
                t,
                over,
                bound,
                float(np.abs(vector).max()),
            )
            clipped: np.ndarray = np.clip(vector, -bound, bound)
            return clipped
        return vector

    def _deliver(self, prep: PreparedUpdate) -> bool:
        signed = pb.SignedEnvelope(envelope=prep.envelope, signature=prep.signature)
        t0 = time.perf_counter()
        try:
            receipt = self.client.upload(signed, prep.chunks, prep.timings)
        except CoordinatorRefused as exc:
            if exc.code is grpc.StatusCode.ALREADY_EXISTS:
                self.state.mark_submitted(prep.round, b"", {}, reason="coordinator had it already")
                return False
            logger.error("%s: round %d update refused: %s", self.id.site_id, prep.round, exc)
            self.state.mark_skipped(prep.round, f"refused: {exc}")
            return False
        upload_s = time.perf_counter() - t0
        reason = ""
        if self.coordinator_key is not None:
            try:
                fields, sig = wire.receipt_from_proto(receipt)
                crypto.verify_message(
                    self.coordinator_key, wire.RECEIPT_DOMAIN, fields.canonical_bytes(), sig
                )
            except crypto.InvalidUpdate as exc:  # recorded, never silently accepted
                logger.error(
                    "%s: round %d receipt does not verify: %s", self.id.site_id, prep.round, exc
                )
                reason = f"receipt invalid: {exc}"
        self.state.mark_submitted(
            prep.round, receipt.SerializeToString(), {"upload_s": upload_s}, reason=reason
        )
        logger.info(
            "%s: round %d delivered (%d bytes, %.2fs)",
            self.id.site_id,
            prep.round,
            prep.n_bytes,
            upload_s,
        )
        return True
