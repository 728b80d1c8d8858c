"""The site's gRPC client of the coordinator (mutual TLS), with retry and backoff.

Transient failures (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``) are retried with exponential
backoff and full jitter; every other status is the coordinator's answer and is raised as
:class:`CoordinatorRefused` with the status code and message.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import grpc

from proto import cipherfed_pb2 as pb
from proto import cipherfed_pb2_grpc as pb_grpc
from proto import streams, transport

logger = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
MAX_MODEL_BYTES = 1 << 31
MAX_CONTEXT_BYTES = 1 << 30


class CoordinatorRefused(Exception):
    """The coordinator answered with a non-transient error status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class GaveUp(Exception):
    """Retries exhausted (or the daemon is stopping) while the coordinator was unreachable."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: sleep U(0, min(cap, base * 2**attempt))."""

    base_s: float = 0.2
    cap_s: float = 10.0
    max_attempts: int | None = None  # None: retry forever (until stopped)

    def delay(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.cap_s, self.base_s * (2.0**attempt)))


class CoordinatorClient:
    def __init__(
        self,
        address: str,
        tls: transport.TlsIdentity,
        *,
        server_name: str | None = None,
        backoff: Backoff = Backoff(),
        rng: random.Random | None = None,
        sleep: Callable[[float], object] = time.sleep,
        should_stop: Callable[[], bool] = lambda: False,
        timeout_s: float = 60.0,
    ) -> None:
        self.address = address
        self._channel = transport.create_channel(address, tls, server_name=server_name)
        self._stub = pb_grpc.CoordinatorStub(self._channel)
        self.backoff = backoff
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._should_stop = should_stop
        self.timeout_s = timeout_s

    def close(self) -> None:
        self._channel.close()

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` with retries on transient errors; raise ``CoordinatorRefused`` otherwise."""
        attempt = 0
        while True:
            try:
                return fn()
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
                details = (exc.details() if isinstance(exc, grpc.Call) else str(exc)) or ""
                if code not in TRANSIENT:
                    raise CoordinatorRefused(code, details) from None
                if self._should_stop():
                    raise GaveUp(f"{what}: stopping while the coordinator is unreachable") from None
                if (
                    self.backoff.max_attempts is not None
                    and attempt + 1 >= self.backoff.max_attempts
                ):
                    raise GaveUp(
                        f"{what}: coordinator unreachable after {attempt + 1} tries"
                    ) from None
                delay = self.backoff.delay(attempt, self._rng)
                logger.info("%s: %s (%s); retrying in %.2fs", what, code.name, details, delay)
                self._sleep(delay)
                attempt += 1

    def enrol(self, federation_id: str, site_id: str, verify_key: bytes) -> pb.EnrolResponse:
        req = pb.EnrolRequest(federation_id=federation_id, site_id=site_id, verify_key=verify_key)
        return self.call("enrol", lambda: self._stub.Enrol(req, timeout=self.timeout_s))

    def get_round(self, federation_id: str, site_id: str) -> pb.RoundAnnouncement:
        req = pb.RoundQuery(federation_id=federation_id, site_id=site_id)
        return self.call("get round", lambda: self._stub.GetRound(req, timeout=self.timeout_s))

    def download_model(self, federation_id: str, round_no: int) -> bytes:
        req = pb.ModelRequest(federation_id=federation_id, round=round_no)

        def fetch() -> bytes:
            pieces = self._stub.DownloadModel(req, timeout=self.timeout_s)
            return streams.assemble_blob(pieces, MAX_MODEL_BYTES, "model")

        return self.call("download model", fetch)

    def public_context(self, federation_id: str, params_fingerprint: str) -> bytes:
        req = pb.ContextRequest(federation_id=federation_id, params_fingerprint=params_fingerprint)

        def fetch() -> bytes:
            pieces = self._stub.GetPublicContext(req, timeout=self.timeout_s)
            return streams.assemble_blob(pieces, MAX_CONTEXT_BYTES, "public context")

        return self.call("public context", fetch)

    def upload(
        self,
        signed: pb.SignedEnvelope,
        chunks: Mapping[int, bytes],
        timings: Mapping[str, float],
    ) -> pb.Receipt:
        def send() -> pb.Receipt:
            header = pb.UploadHeader(signed_envelope=signed, timings=dict(timings))
            return self._stub.UploadUpdate(
                streams.upload_messages(header, chunks), timeout=self.timeout_s
            )

        return self.call("upload", send)
