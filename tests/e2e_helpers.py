"""Helpers for the multi-process tests: small federations on loopback and raw gRPC clients."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np

import crypto
from cipherfed.config import (
    CryptoConfig,
    FederationConfig,
    FederationSection,
    NetworkConfig,
    SiteConfig,
    TrainingConfig,
)
from cipherfed.localfed import LocalFederation, free_port
from proto import cipherfed_pb2 as pb
from proto import cipherfed_pb2_grpc as pb_grpc
from proto import streams, transport


def small_config(
    n_sites: int = 3,
    *,
    k: int = 2,
    rounds: int = 2,
    deadline_s: float = 60.0,
    max_update_bytes: int = 1 << 20,
) -> FederationConfig:
    return FederationConfig(
        federation=FederationSection(
            id="fed-e2e",
            min_participants=k,
            rounds=rounds,
            round_deadline_s=deadline_s,
            max_update_bytes=max_update_bytes,
        ),
        network=NetworkConfig(
            coordinator=f"127.0.0.1:{free_port()}",
            keyholder=f"127.0.0.1:{free_port()}",
            metrics_port=0,
        ),
        sites=tuple(SiteConfig(f"site-{i:02d}", f"actg175:{i}") for i in range(n_sites)),
        training=TrainingConfig(lr=1e-3, seed=0),
        crypto=CryptoConfig(preset="n4096"),
    )


def start_services(fed: LocalFederation) -> None:
    """Key holder and coordinator (fast test KDF), waiting until the coordinator serves."""
    fed.start_keyholder(["--scrypt-log2n", "10"])
    fed.start_coordinator()
    fed.wait_for(lambda: fed.coordinator_ready() is not None, 180, "the coordinator to serve")


def stub_for(kit: Path, address: str) -> tuple[grpc.Channel, pb_grpc.CoordinatorStub]:
    channel = transport.create_channel(
        address, transport.TlsIdentity.from_kit(kit), server_name="coordinator"
    )
    return channel, pb_grpc.CoordinatorStub(channel)


def signed_upload(
    ctx: crypto.PublicContext,
    layout: crypto.ChunkLayout,
    key: crypto.SigningKey,
    *,
    federation_id: str,
    round_no: int,
    site_id: str,
    seed: int = 0,
    params_fingerprint: str | None = None,
) -> tuple[pb.UploadHeader, dict[int, bytes]]:
    """A well-formed upload of a small random update (callers then spoil one thing)."""
    vec = np.random.default_rng(seed).uniform(-1e-3, 1e-3, layout.total)
    enc = crypto.encrypt_update(ctx, layout, vec)
    env = crypto.UpdateEnvelope(
        federation_id=federation_id,
        round=round_no,
        site_id=site_id,
        chunk_ids=tuple(enc.chunks),
        digests=enc.digests(),
        weight=5,
        layout_fingerprint=layout.fingerprint,
        params_fingerprint=params_fingerprint or ctx.fingerprint,
    )
    header = pb.UploadHeader(
        signed_envelope=pb.SignedEnvelope(
            envelope=env.canonical_bytes(), signature=crypto.sign_envelope(key, env)
        )
    )
    return header, dict(enc.chunks)


def send(
    stub: pb_grpc.CoordinatorStub, header: pb.UploadHeader, chunks: dict[int, bytes]
) -> pb.Receipt:
    return stub.UploadUpdate(streams.upload_messages(header, chunks), timeout=30)
