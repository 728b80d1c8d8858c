"""Mutual-TLS gRPC servers and channels, message-size options, health, peer identity.

``create_server(address, identity) -> (server, port)`` binds (port 0 picks a free port) and
adds the standard ``grpc.health.v1`` service; the caller registers its servicers and calls
``server.start()``. ``create_channel(target, identity)`` opens a mutual-TLS channel.
Every connection requires a certificate from the federation CA on both sides; the peer's
identity is its certificate's common name (:func:`peer_identity`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import NoReturn, cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .streams import PIECE_SIZE, TransportError

logger = logging.getLogger(__name__)

# Stream pieces are <= 1 MiB; headers (envelopes of every participant) stay far below this.
# The limit is explicit so nothing depends on gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 16 * PIECE_SIZE

CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
)
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
)


@dataclass(frozen=True)
class TlsIdentity:
    """PEM bytes of the federation CA certificate, this party's certificate and key."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def from_kit(cls, kit: str | os.PathLike[str]) -> TlsIdentity:
        """Read ``ca.pem``, ``cert.pem`` and ``key.pem`` from a startup kit folder."""
        root = Path(kit)
        parts: list[bytes] = []
        for name in ("ca.pem", "cert.pem", "key.pem"):
            try:
                parts.append((root / name).read_bytes())
            except OSError as exc:
                raise FileNotFoundError(f"{root / name}: cannot read TLS file: {exc}") from exc
        return cls(*parts)

    @property
    def common_name(self) -> str:
        return certificate_common_name(self.cert_pem)


def certificate_common_name(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not names:
        raise ValueError("certificate has no common name")
    value = names[0].value
    return value if isinstance(value, str) else value.decode()


def certificate_fingerprint(cert_pem: bytes) -> str:
    """Hex SHA-256 of the certificate's DER encoding."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# ---------------------------------------------------------------------------- server


def create_server(
    address: str,
    identity: TlsIdentity,
    *,
    max_workers: int = 8,
    with_health: bool = True,
) -> tuple[grpc.Server, int, health.HealthServicer | None]:
    """A mutual-TLS server bound to ``address`` (``host:0`` picks a free port), not started.

    Returns ``(server, port, health_servicer)``; the health servicer reports SERVING for
    the empty service name and can be set per service by the caller.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=list(SERVER_OPTIONS),
    )
    credentials = grpc.ssl_server_credentials(
        [(identity.key_pem, identity.cert_pem)],
        root_certificates=identity.ca_pem,
        require_client_auth=True,
    )
    port = server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot bind a gRPC server to {address}")
    servicer: health.HealthServicer | None = None
    if with_health:
        servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    logger.info("gRPC server (mutual TLS) bound to %s -> port %d", address, port)
    return server, port, servicer


def install_stop_signals(
    signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
) -> threading.Event:
    """An event set by SIGTERM/SIGINT. Install it before announcing readiness, so a signal
    that arrives during start-up still leads to a graceful stop. Main thread only."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: stopping gracefully", signum)
        stop.set()

    for s in signals:
        signal.signal(s, handler)
    return stop


def serve_until_signal(
    server: grpc.Server,
    *,
    grace_s: float = 5.0,
    health_servicer: health.HealthServicer | None = None,
    on_stop: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Block until SIGTERM/SIGINT (or ``stop`` is set), then stop gracefully.

    Health goes NOT_SERVING, in-flight calls get ``grace_s`` seconds, then ``on_stop``
    runs. Without ``stop``, signal handlers are installed here (main thread only).
    """
    event = stop if stop is not None else install_stop_signals()
    while not event.wait(0.5):
        pass
    if health_servicer is not None:
        health_servicer.enter_graceful_shutdown()
    server.stop(grace_s).wait()
    if on_stop is not None:
        on_stop()
    logger.info("server stopped")


# ---------------------------------------------------------------------------- channel


def create_channel(
    target: str, identity: TlsIdentity, *, server_name: str | None = None
) -> grpc.Channel:
    """A mutual-TLS channel to ``target`` presenting this party's certificate.

    ``server_name`` overrides the name checked against the server certificate's SANs
    (provisioned server certificates carry their role name, ``localhost`` and the address).
    """
    credentials = grpc.ssl_channel_credentials(
        root_certificates=identity.ca_pem,
        private_key=identity.key_pem,
        certificate_chain=identity.cert_pem,
    )
    options: list[tuple[str, int | str]] = list(CHANNEL_OPTIONS)
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(target, credentials, options=options)


def wait_ready(channel: grpc.Channel, timeout_s: float) -> None:
    """Block until the channel connects (TLS handshake included) or raise ``TimeoutError``."""
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError as exc:
        raise TimeoutError(f"no connection within {timeout_s} s") from exc


def check_health(channel: grpc.Channel, service: str = "", timeout_s: float = 5.0) -> bool:
    """True when the server's health service reports SERVING for ``service``."""
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


# ---------------------------------------------------------------------------- peer identity


@dataclass(frozen=True)
class PeerIdentity:
    common_name: str
    cert_fingerprint: str  # hex SHA-256 of the peer certificate (DER); "" when unavailable


def peer_identity(context: grpc.ServicerContext) -> PeerIdentity:
    """The authenticated client of this call (from its TLS certificate).

    Raises :class:`TransportError` (``UNAUTHENTICATED``) when the call has no certificate
    identity (it cannot happen over the mutual-TLS servers built here, but is checked).
    """
    # grpc-stubs types the values as bytes; at run time they are lists of bytes.
    auth = cast(Mapping[str, Sequence[bytes]], context.auth_context())
    names = list(auth.get("x509_common_name") or [])
    if not names:
        raise TransportError(
            "no client certificate common name on this connection",
            grpc.StatusCode.UNAUTHENTICATED,
        )
    cn = names[0].decode("utf-8", errors="replace")
    pems = list(auth.get("x509_pem_cert") or [])
    fingerprint = certificate_fingerprint(pems[0]) if pems else ""
    return PeerIdentity(cn, fingerprint)


def abort(context: grpc.ServicerContext, error: TransportError) -> NoReturn:
    """Answer the call with ``error.code`` and its message (logged at WARNING)."""
    logger.warning("refused %s: %s", error.code.name, error)
    context.abort(error.code, str(error))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover
