"""``cipherfed coordinator``: run the coordinator service of a federation."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cipherfed.commands import address

if TYPE_CHECKING:
    from coordinator.keyholder_client import GrpcKeyholder
    from coordinator.service import Coordinator

logger = logging.getLogger(__name__)

#: The key holder's public context, cached in the state folder for a restart without it.
CONTEXT_FILE = "public_context.bin"

HELP = "run the coordinator: rounds, verification, encrypted aggregation, checkpoints"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kit", type=Path, required=True, help="the coordinator's startup kit")
    parser.add_argument("--state", type=Path, required=True, help="state folder (SQLite, blobs)")
    parser.add_argument(
        "--address", type=address, help="host:port to serve on (default: [network].coordinator)"
    )
    parser.add_argument(
        "--keyholder", type=address, help="key holder host:port (default: the federation file)"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="Prometheus port (0: a free one, -1: none; default: the federation file)",
    )
    parser.add_argument("--ready-file", type=Path, help="write the bound ports here (JSON)")
    parser.add_argument(
        "--keyholder-wait",
        type=float,
        default=120.0,
        help="seconds to wait for the key holder's public context at start-up",
    )
    parser.add_argument(
        "--exit-after-finish",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop this many seconds after the last round (default: keep serving)",
    )


def _fetch_context(kh: GrpcKeyholder, cache: Path, wait_s: float) -> bytes:
    """The key holder's public context, or while it is unavailable the one cached (by
    :func:`_cache_context`) in the state folder at an earlier start."""
    from coordinator.keyholder_link import KeyholderUnavailable

    deadline = time.monotonic() + wait_s
    delay = 0.2
    while True:
        try:
            return kh.public_context()
        except KeyholderUnavailable as exc:
            if cache.is_file():
                logger.warning("key holder unavailable (%s); using the cached context", exc)
                return cache.read_bytes()
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _cache_context(cache: Path, blob: bytes) -> None:
    tmp = cache.with_suffix(".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, cache)


def _write_ready(path: Path, info: dict[str, int]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    import crypto
    from cipherfed import site_setup
    from cipherfed.config import ConfigError
    from cipherfed.provisioning import ProvisioningError, load_kit
    from coordinator.keyholder_client import GrpcKeyholder
    from coordinator.keyholder_link import KeyholderRefused, KeyholderUnavailable
    from coordinator.metrics import CoordinatorMetrics
    from coordinator.rounds import RoundPolicy
    from coordinator.service import Coordinator, FederationSpec
    from coordinator.servicer import CoordinatorServicer
    from crypto.auditlog import HashChainLog
    from proto import cipherfed_pb2_grpc as pb_grpc
    from proto import transport

    if args.ready_file is not None and not args.ready_file.parent.is_dir():
        print(
            f"error: --ready-file {args.ready_file}: no folder {args.ready_file.parent}",
            file=sys.stderr,
        )
        return 2
    try:
        kit = load_kit(args.kit, "coordinator")
    except (ConfigError, ProvisioningError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = kit.config
    fed = cfg.federation
    identity = transport.TlsIdentity.from_kit(kit.path)
    signing_key = crypto.SigningKey.from_pem(kit.signing_key_bytes())
    params = site_setup.ckks_params(cfg)
    layout = site_setup.chunk_layout(cfg)
    kh = GrpcKeyholder(
        args.keyholder or cfg.network.keyholder,
        identity,
        federation_id=fed.id,
        params_fingerprint=params.fingerprint,
        layout=layout,
        signing_key=signing_key,
        keyholder_key=crypto.VerifyKey.from_bytes(kit.roster.keyholder.verify_key),
    )
    try:
        ctx_bytes = _fetch_context(kh, args.state / CONTEXT_FILE, args.keyholder_wait)
        ctx = crypto.PublicContext.from_bytes(ctx_bytes)
    except (KeyholderUnavailable, KeyholderRefused, crypto.InvalidUpdate) as exc:
        print(f"error: cannot get the public CKKS context: {exc}", file=sys.stderr)
        return 1
    if ctx.fingerprint != params.fingerprint:
        print(
            f"error: key holder serves CKKS parameters {ctx.params.name}, "
            f"the federation file names {params.name}",
            file=sys.stderr,
        )
        return 1
    spec = FederationSpec(
        federation_id=fed.id,
        policy=RoundPolicy(fed.min_participants, fed.round_deadline_s, fed.rounds),
        layout=layout,
        initial_model=site_setup.initial_model(cfg),
        roster={
            sid: crypto.VerifyKey.from_bytes(e.verify_key) for sid, e in kit.roster.sites.items()
        },
        max_update_bytes=fed.max_update_bytes,
        cert_fingerprints={sid: e.cert_fingerprint for sid, e in kit.roster.sites.items()},
    )
    metrics = CoordinatorMetrics()
    audit = HashChainLog(args.state / "audit.log", signing_key)
    try:
        core = Coordinator(
            spec, args.state, ctx, kh, signing_key, audit=audit.append, metrics=metrics
        )
    except (ValueError, OSError) as exc:  # of another federation, corrupt, not a folder
        print(f"error: {exc}", file=sys.stderr)
        kh.close()
        return 2
    _cache_context(args.state / CONTEXT_FILE, ctx_bytes)  # only now: the folder is ours
    server, port, health = transport.create_server(
        args.address or cfg.network.coordinator, identity
    )
    pb_grpc.add_CoordinatorServicer_to_server(CoordinatorServicer(core, ctx_bytes), server)
    server.start()
    metrics_port = cfg.network.metrics_port if args.metrics_port is None else args.metrics_port
    info = {"port": port, "pid": os.getpid()}
    http = None
    if metrics_port >= 0:
        http, info["metrics_port"] = metrics.serve(metrics_port)
    if args.ready_file:
        _write_ready(args.ready_file, info)
    logger.info("coordinator of %s serving on port %d", fed.id, port)
    ticker = threading.Thread(target=core.run_ticks, name="rounds", daemon=True)
    ticker.start()
    if args.exit_after_finish is not None:
        threading.Thread(
            target=_exit_when_finished, args=(core, args.exit_after_finish), daemon=True
        ).start()
    try:
        transport.serve_until_signal(server, health_servicer=health, on_stop=core.stop)
    finally:
        core.stop()
        ticker.join(timeout=30)
        core.close()
        kh.close()
        if http is not None:
            http.shutdown()
    return 0


def _exit_when_finished(core: Coordinator, linger_s: float) -> None:
    while not core.finished:
        time.sleep(0.2)
    time.sleep(linger_s)
    logger.info("all rounds done; stopping")
    import signal

    os.kill(os.getpid(), signal.SIGTERM)
