"""``cipherfed participant``: the site daemon (enrol, train, privacy step, encrypt, upload)."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from cipherfed.commands import address
from cipherfed.config import ConfigError, FederationConfig

if TYPE_CHECKING:
    import crypto
    from participant.daemon import PrivacyStep, TrainResult, WeightFn

logger = logging.getLogger(__name__)

#: The site's privacy ledger, in its state folder (read by ``cipherfed demo``'s report).
LEDGER_FILE = "privacy_ledger.sqlite"

HELP = "run a site's participant daemon (trains locally, sends encrypted updates)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kit", type=Path, required=True, help="the site's startup kit")
    parser.add_argument("--state", type=Path, required=True, help="state folder of this site")
    parser.add_argument(
        "--coordinator", type=address, help="coordinator host:port (default: federation file)"
    )
    parser.add_argument("--device", default=None, help="torch device (default: GPU if present)")
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between round polls")


def privacy_step(
    cfg: FederationConfig, state: Path, layout: crypto.ChunkLayout, site_id: str, seed: int
) -> PrivacyStep:
    import numpy as np

    from cipherfed import site_setup
    from participant.daemon import NoPrivacy
    from participant.privacy.ledger import PrivacyLedger
    from participant.site_privacy import LedgerPrivacy

    p = cfg.privacy
    if p.mechanism == "none" and p.dp_sgd is None:
        return NoPrivacy()
    budget = p.budget_epsilon if math.isfinite(p.budget_epsilon) else 1e300
    ledger = PrivacyLedger(state / LEDGER_FILE, p.delta, budget, site_id)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EC]))
    return LedgerPrivacy(ledger, layout, rng, site_setup.sharing_config(cfg))


def weight_fn(cfg: FederationConfig, n_samples: int) -> WeightFn:
    mode = cfg.federation.weighting
    if mode == "uniform":
        return lambda r: 1
    if mode == "samples":
        return lambda r: n_samples

    def iterations(r: TrainResult) -> int:
        return int(r.n_iters)

    return iterations


def run(args: argparse.Namespace) -> int:
    import crypto
    from cipherfed import site_setup
    from cipherfed.provisioning import ProvisioningError, load_kit
    from participant.client import Backoff, CoordinatorClient, CoordinatorRefused
    from participant.daemon import ParticipantDaemon, SiteIdentity
    from participant.state import DaemonState
    from participant.training import LocalTrainer
    from proto import transport

    try:
        kit = load_kit(args.kit, "site")
    except (ConfigError, ProvisioningError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = kit.config
    site_id = kit.name
    try:
        data = site_setup.site_data(cfg, site_id)
    except (OSError, ValueError) as exc:
        print(f"error: site {site_id}: cannot load its data: {exc}", file=sys.stderr)
        return 2
    try:
        args.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        state = DaemonState(args.state / "daemon.sqlite")
    except OSError as exc:
        print(f"error: cannot use the state folder {args.state}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        state.bind(cfg.federation.id, site_id)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        state.close()
        return 2
    layout = site_setup.chunk_layout(cfg)
    params = site_setup.ckks_params(cfg)
    train_cfg = site_setup.train_config(cfg)
    seed = site_setup.trainer_seed(cfg, data.index)
    trainer = LocalTrainer(
        site_setup.model_factory(cfg), data.dataset, train_cfg, device=args.device, seed=seed
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: stopping after the current step", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    identity = SiteIdentity(
        federation_id=cfg.federation.id,
        site_id=site_id,
        signing_key=crypto.SigningKey.from_pem(kit.signing_key_bytes()),
        params_fingerprint=params.fingerprint,
        coordinator_key=crypto.VerifyKey.from_bytes(kit.roster.coordinator.verify_key),
    )
    client = CoordinatorClient(
        args.coordinator or cfg.network.coordinator,
        transport.TlsIdentity.from_kit(kit.path),
        server_name="coordinator",
        backoff=Backoff(base_s=0.2, cap_s=5.0),
        should_stop=stop.is_set,
    )
    daemon = ParticipantDaemon(
        identity,
        client,
        state,
        trainer,
        layout,
        privacy=privacy_step(cfg, args.state, layout, site_id, seed),
        weight=weight_fn(cfg, len(data.dataset)),
        poll_s=args.poll,
        stop=stop,
    )
    try:
        sent = daemon.run()
    except (CoordinatorRefused, RuntimeError, crypto.InvalidUpdate) as exc:
        logger.error("site %s stops: %s", site_id, exc)
        print(f"error: site {site_id}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
        state.close()
    logger.info("site %s: %d update(s) delivered", site_id, sent)
    return 0
