"""``cipherfed keyholder``: hold the CKKS secret key; decrypt only policy-approved aggregates.

On first start it generates the CKKS keys (preset from the federation file) and stores the
secret key encrypted at rest under ``--state``; it then serves the public context and the
decrypt service over mutual TLS until SIGTERM/SIGINT. The bound port is written to
``<state>/keyholder.port`` (useful with ``--address 127.0.0.1:0``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cipherfed.commands import address
from cipherfed.config import ConfigError, resolve_preset
from cipherfed.provisioning import Kit, ProvisioningError, load_kit, read_passphrase

if TYPE_CHECKING:  # heavy imports (TenSEAL, gRPC) only when the command runs
    import grpc
    from grpc_health.v1 import health

    from crypto.auditlog import HashChainLog
    from keyholder.store import DecryptionStore

logger = logging.getLogger(__name__)

HELP = "run the key holder (CKKS secret key, policy-checked noise-flooded decryption)"
PORT_FILE = "keyholder.port"
AUDIT_FILE = "audit.jsonl"
DB_FILE = "keyholder.sqlite"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kit", type=Path, required=True, help="the key holder's startup kit")
    parser.add_argument("--state", type=Path, required=True, help="state folder (keys, db, log)")
    parser.add_argument(
        "--address",
        type=address,
        default=None,
        help="listen address (default: [network].keyholder)",
    )
    parser.add_argument(
        "--passphrase-file",
        type=Path,
        default=None,
        help="file (0600) with the at-rest passphrase; default: $CIPHERFED_KEYHOLDER_PASSPHRASE "
        "or the kit's keyholder_passphrase",
    )
    parser.add_argument("--grace", type=float, default=5.0, help="seconds to drain on stop")
    parser.add_argument(
        "--scrypt-log2n", type=int, default=15, help=argparse.SUPPRESS
    )  # tests use a cheaper KDF


@dataclass
class RunningKeyHolder:
    """A started key-holder server and what must be closed after it stops."""

    server: grpc.Server
    port: int
    health: health.HealthServicer | None
    kit: Kit
    store: DecryptionStore
    audit: HashChainLog

    def stop(self, grace_s: float = 0.0) -> None:
        if self.health is not None:
            self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()
        self.closed()

    def closed(self) -> None:
        self.audit.append("keyholder.stopped", {"port": self.port})
        self.store.close()


def start(args: argparse.Namespace) -> RunningKeyHolder:
    """Build and start the server (used by :func:`run` and by tests in-process)."""
    kit = load_kit(args.kit, expect_role="keyholder")  # fail fast, before heavy imports
    import crypto
    from crypto import SigningKey, VerifyKey
    from crypto.auditlog import HashChainLog
    from keyholder.engine import KeyHolder
    from keyholder.keystore import atomic_write, ensure_private_dir, load_or_create_secret
    from keyholder.policy import PolicyConfig, Trust
    from keyholder.service import KeyHolderService, build_server
    from keyholder.store import DecryptionStore
    from proto.transport import TlsIdentity

    cfg = kit.config
    preset = resolve_preset(cfg)
    if preset not in crypto.PRESETS:
        raise ConfigError(f"[crypto].preset {preset!r} is not one of {sorted(crypto.PRESETS)}")
    params = crypto.PRESETS[preset]
    passphrase = read_passphrase(kit, args.passphrase_file)
    state: Path = args.state
    ensure_private_dir(state)
    secret, created = load_or_create_secret(
        state, params, passphrase, scrypt_log2_n=args.scrypt_log2n
    )
    signing_key = SigningKey.from_pem(kit.signing_key_bytes())  # load_kit matched it to the roster
    audit = HashChainLog(state / AUDIT_FILE, signing_key)
    if created:
        audit.append(
            "keys.generated",
            {"preset": params.name, "params_fingerprint": params.fingerprint},
        )
    store = DecryptionStore(state / DB_FILE, cfg.federation.id, params.fingerprint)
    policy = PolicyConfig(
        federation_id=cfg.federation.id,
        min_participants=cfg.federation.min_participants,
        params_fingerprint=params.fingerprint,
        weighting=cfg.federation.weighting,
        min_contributors_per_chunk=cfg.federation.min_contributors_per_chunk,
    )
    trust = Trust(
        coordinator=VerifyKey.from_bytes(kit.roster.coordinator.verify_key),
        sites={sid: VerifyKey.from_bytes(e.verify_key) for sid, e in kit.roster.sites.items()},
    )
    engine = KeyHolder(secret, policy, trust, store, audit, signing_key)
    service = KeyHolderService(
        engine,
        coordinator_cert_fingerprint=kit.roster.coordinator.cert_fingerprint,
        # An aggregate is no larger than one dense update; headers add little.
        max_request_bytes=2 * cfg.federation.max_update_bytes,
    )
    address = args.address or cfg.network.keyholder
    server, port, health_servicer = build_server(service, TlsIdentity.from_kit(kit.path), address)
    server.start()
    audit.append("keyholder.started", {"port": port, "preset": params.name})
    atomic_write(state / PORT_FILE, f"{port}\n".encode(), 0o644)  # readiness, written last
    logger.info("key holder of %s serving on port %d", cfg.federation.id, port)
    return RunningKeyHolder(server, port, health_servicer, kit, store, audit)


def run(args: argparse.Namespace) -> int:
    from keyholder.keystore import KeyStoreError
    from keyholder.store import StoreError
    from proto.transport import install_stop_signals, serve_until_signal

    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stop = install_stop_signals()  # before readiness is announced
    try:
        try:
            running = start(args)
        except (ConfigError, ProvisioningError, KeyStoreError, StoreError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"keyholder listening on port {running.port}", flush=True)
        serve_until_signal(
            running.server,
            grace_s=args.grace,
            health_servicer=running.health,
            on_stop=running.closed,
            stop=stop,
        )
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
